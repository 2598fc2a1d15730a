"""The jitted train step: MTP loss, gradient accumulation, non-finite skipping."""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtp_jax import sharding as sharding_lib
from mtp_jax.mwer import loss as mwer_lib
from mtp_jax.train import lora as lora_lib
from mtp_jax.train import loss as loss_lib
from mtp_jax.train import optimizer as opt_lib
from mtp_jax.train.state import TrainState

BATCH_KEYS = ("audio", "audio_len", "text", "text_len")
# A frozen encoder's cached outputs replace the waveform (`data.feature_cache`).
FRAME_BATCH_KEYS = ("frames", "frames_len", "audio_len", "text", "text_len")
# Text alone: decoder language-model pretraining (`data.text_corpus`).
TEXT_BATCH_KEYS = ("text", "text_len")
KINDS = {"audio": BATCH_KEYS, "frames": FRAME_BATCH_KEYS, "text": TEXT_BATCH_KEYS}
BATCH_DTYPES = {"audio": jnp.float32, "audio_len": jnp.int32, "text": jnp.int32,
                "text_len": jnp.int32, "frames": jnp.float16, "frames_len": jnp.int32}


def batch_keys(kind: str) -> tuple[str, ...]:
  """The device keys of a batch kind: "audio", "frames" (feature cache) or "text"."""
  if kind not in KINDS:
    raise ValueError(f"batch kind {kind!r}: expected one of {sorted(KINDS)}")
  return KINDS[kind]


def batch_kind(batch: dict) -> str:
  """"frames", "audio" or "text" (no audio at all) for a host or device batch."""
  return "frames" if "frames" in batch else "audio" if "audio" in batch else "text"


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, tcfg,
                    labels: Any | None = None, word_tables: Any | None = None,
                    ctc_units: Any | None = None) -> Callable:
  """Builds `step(state, batch) -> (state, metrics)` (not yet jitted).

  Args:
    model: a train-mode SpeechLLaMA (dropout and SpecAugment need rngs).
    tx: the optimizer (see `optimizer.make_optimizer`).
    tcfg: `config.train`.
    labels: "train"/"freeze" per param leaf (heads_only); None trains all.
    word_tables: `mwer.word_errors.WordTables` of the tokenizer; needed (only) for
      `tcfg.objective == "mwer"`, which adds a gradient-free prefix beam search of
      an N-best per utterance (eval-mode model) before the loss (see mtp_jax/mwer/loss.py).
    ctc_units: [U] ascending token ids (0 first) that are all the tokenizer can produce
      (`LMTokenizer.unit_ids`); `tcfg.objective == "ctc"` then normalizes the tied CTC
      head over them alone: the same loss where the other ids' logits are far below
      (`state.mask_ctc_bias` puts them there), at U/V of the classifier's cost.
  The step consumes a global batch of `BATCH_KEYS` (or `FRAME_BATCH_KEYS`, or
  `TEXT_BATCH_KEYS`: the decoder alone as a language model, no CTC term); with
  `tcfg.grad_accum` = A > 1 it scans over A micro-batches of strided rows (b, b+A, ...)
  and averages their gradients. If the loss or the gradient norm is not finite the
  update is skipped (params and optimizer state kept) and the skip counters advance.
  """
  k = model.cfg.mtp.num_heads
  sequential = model.cfg.mtp.head_type == "sequential"
  weights = loss_lib.head_weights(k, tcfg.head_weight_decay, tuple(tcfg.head_weights))
  accum = int(tcfg.grad_accum)
  sched = opt_lib.schedule(tcfg)
  # The auxiliary CTC term belongs to CE training; MWER fine-tuning leaves it out.
  ctc_weight = float(tcfg.get("ctc_weight", 0.0)) if tcfg.get("objective", "ce") == "ce" else 0.0
  if ctc_weight < 0:
    raise ValueError(f"train.ctc_weight={ctc_weight}: must be >= 0")
  if ctc_weight > 0 and not model.cfg.ctc_head:
    raise ValueError(f"train.ctc_weight={ctc_weight} needs model.encoder.ctc_head=True or "
                     "model.projector.ctc_head=True "
                     "(a CTC classifier)")

  lora = lora_lib.of(tcfg)
  objective = tcfg.get("objective", "ce")
  if objective == "ctc" and not model.cfg.ctc_head:
    raise ValueError("train.objective=ctc needs model.encoder.ctc_head=True or "
                     "model.projector.ctc_head=True (the CTC classifier it trains)")

  units = None
  if ctc_units is not None and objective == "ctc":
    units = np.asarray(ctc_units, np.int32)
    if units[0] != 0 or np.any(np.diff(units) <= 0):
      raise ValueError("ctc_units: ascending token ids with the blank 0 first")

  def ctc_only_loss_fn(params, batch, rng):
    """The CTC head alone (train.objective=ctc): no decoder call."""
    if labels is not None:
      params = jax.tree.map(lambda p, l: p if l == "train" else jax.lax.stop_gradient(p),
                            params, labels)
    if batch_kind(batch) == "text":
      raise ValueError("train.objective=ctc: a text-only batch has no audio to align")
    apply = functools.partial(lora_lib.apply, model, lora, deterministic=False)
    rngs = {"dropout": jax.random.fold_in(rng, 0), "specaug": jax.random.fold_in(rng, 1)}
    text = batch["text"]
    if units is not None:  # ids -> positions among the units (PAD 0 stays 0, the blank)
      text = jnp.searchsorted(units, text).astype(jnp.int32)
    if batch_kind(batch) == "frames":
      logits, flen = apply(params, batch["frames"], batch["frames_len"], units,
                           method="ctc_cached", rngs=rngs)
    else:
      logits, flen = apply(params, batch["audio"], batch["audio_len"], units, method="ctc",
                           rngs=rngs)
    loss, aux = loss_lib.ctc_loss(logits, flen, text, batch["text_len"], batch["audio_len"])
    tokens = jnp.sum(jnp.where(batch["audio_len"] > 0, batch["text_len"], 0)).astype(jnp.float32)
    zeros = jnp.zeros((k,), jnp.float32)
    return loss, dict(aux, loss_k=zeros, acc_k=zeros, tokens_k=zeros.at[0].set(tokens))

  def loss_fn(params, batch, rng):
    if labels is not None:  # no backward pass through frozen parameters
      params = jax.tree.map(lambda p, l: p if l == "train" else jax.lax.stop_gradient(p),
                            params, labels)
    apply = functools.partial(lora_lib.apply, model, lora, deterministic=False)
    kind = batch_kind(batch)
    # Padding rows: no audio samples (a text-only batch: no tokens).
    row_len = batch["text_len"] if kind == "text" else batch["audio_len"]
    text_in, targets, mask, prev = loss_lib.make_targets(
        batch["text"], batch["text_len"], row_len, k)
    rngs = {"dropout": jax.random.fold_in(rng, 0), "specaug": jax.random.fold_in(rng, 1)}
    prev = prev if (sequential and k > 1) else None
    if kind == "frames":  # cached encoder outputs (frozen encoder)
      out = apply(params, batch["frames"], batch["frames_len"], text_in, prev,
                  method="forward_frames", rngs=rngs)
    elif kind == "text":
      out = apply(params, text_in, prev, method="forward_lm", rngs=rngs)
    else:
      out = apply(params, batch["audio"], batch["audio_len"], text_in, prev, rngs=rngs)
    loss, aux = loss_lib.mtp_loss(out["logits"], targets, mask, weights, tcfg.label_smoothing)
    if ctc_weight > 0 and kind != "text":
      ctc, ctc_aux = loss_lib.ctc_loss(out["ctc_logits"], out["ctc_len"], batch["text"],
                                       batch["text_len"], batch["audio_len"])
      loss = loss + ctc_weight * ctc
      aux = dict(aux, **ctc_aux)
    return loss, aux

  if objective == "ce":
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  elif objective == "ctc":
    grad_fn = jax.value_and_grad(ctc_only_loss_fn, has_aux=True)
  elif objective == "mwer":
    if word_tables is None:
      raise ValueError("train.objective=mwer needs word_tables (mwer.word_errors."
                       "tables_from_tokenizer) in make_train_step")
    search, mwer_loss = mwer_lib.make_mwer_objective(model, tcfg.mwer, weights,
                                                     tcfg.label_smoothing, word_tables)
    mwer_grad = jax.value_and_grad(mwer_loss, has_aux=True)

    def grad_fn(params, batch, rng):
      return mwer_grad(params, batch, search(jax.lax.stop_gradient(params), batch), rng)
  else:
    raise ValueError(f"train.objective={objective!r}: expected 'ce', 'mwer' or 'ctc'")

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    if accum == 1:
      (loss, aux), grads = grad_fn(state.params, batch, rng)
    else:
      b = batch["text"].shape[0]
      if b % accum:
        raise ValueError(f"train.grad_accum={accum} must divide the batch size {b}")
      micro = jax.tree.map(
          lambda x: x.reshape(b // accum, accum, *x.shape[1:]).swapaxes(0, 1), batch)

      def body(carry, xs):
        mb, i = xs
        (l, a), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (l, a, g)), None

      zero = jax.tree.map(jnp.zeros_like,
                          jax.eval_shape(grad_fn, state.params,
                                         jax.tree.map(lambda x: x[0], micro), rng))
      zero = (zero[0][0], zero[0][1], zero[1])
      (loss, aux, grads), _ = jax.lax.scan(body, zero, (micro, jnp.arange(accum)))
      loss, aux, grads = jax.tree.map(lambda x: x / accum, (loss, aux, grads))
    if labels is not None:
      grads = jax.tree.map(lambda g, l: g if l == "train" else jnp.zeros_like(g),
                           grads, labels)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    applied = state.step - state.nonfinite_total
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite_total=state.nonfinite_total + (~ok).astype(jnp.int32),
        nonfinite_run=jnp.where(ok, 0, state.nonfinite_run + 1).astype(jnp.int32))
    metrics = {"loss": loss, "loss_k": aux["loss_k"], "acc_k": aux["acc_k"],
               "tokens": aux["tokens_k"][0], "grad_norm": grad_norm,
               "lr": sched(applied), "finite": ok,
               "nonfinite_total": new_state.nonfinite_total,
               "nonfinite_run": new_state.nonfinite_run}
    if "ctc_loss" in aux:
      metrics.update(ctc_loss=aux["ctc_loss"], ctc_rows=aux["ctc_rows"])
    if objective == "ctc":  # no decoder call: no per-head loss or accuracy
      del metrics["loss_k"], metrics["acc_k"]
    if objective == "mwer":
      metrics.update({f"mwer/{key}": aux[key] for key in mwer_lib.METRICS})
    return new_state, metrics

  return step


def batch_shardings(mesh, rules, kind: str = "audio") -> dict:
  """NamedShardings of the device batch (batch dim over the data axes)."""
  ndim = {"audio": 2, "text": 2, "frames": 3}
  return {k: sharding_lib.batch_sharding(mesh, rules, ndim.get(k, 1))
          for k in batch_keys(kind)}


def abstract_batch(b: int, s: int, l: int, mesh, rules, frames_dim: int = 0,
                   kind: str | None = None) -> dict:
  """ShapeDtypeStructs (with shardings) of a global batch [B, S] / [B, L]; with
  `frames_dim` > 0 a cached-frames batch, S then counting encoder frames; kind
  "text" has no audio (S ignored)."""
  kind = kind or ("frames" if frames_dim > 0 else "audio")
  sh = batch_shardings(mesh, rules, kind)
  shapes = {"audio": (b, s), "audio_len": (b,), "text": (b, l), "text_len": (b,),
            "frames": (b, s, frames_dim), "frames_len": (b,)}
  return {k: jax.ShapeDtypeStruct(shapes[k], BATCH_DTYPES[k], sharding=sh[k])
          for k in batch_keys(kind)}


def batch_shape(batch: dict, process_count: int = 1) -> tuple[int, int, int]:
  """The global (B, S, L) key of a host batch (S: samples, or frames when cached;
  0 for text only)."""
  kind = batch_kind(batch)
  s = 0 if kind == "text" else batch[kind].shape[1]
  return (batch["text"].shape[0] * process_count, s, batch["text"].shape[1])


def jit_train_step(step: Callable, state_sh: TrainState, mesh, rules, kind: str = "audio"):
  """`jax.jit` of the step with explicit shardings; the state is donated."""
  rep = sharding_lib.replicated(mesh)
  return jax.jit(step, in_shardings=(state_sh, batch_shardings(mesh, rules, kind)),
                 out_shardings=(state_sh, rep), donate_argnums=(0,))


def trace_context(mesh, rules):
  """The context the step is traced in: the mesh plus the logical-axis rules, so
  activation constraints inside the model take effect."""
  return sharding_lib.activate(mesh, rules)


def compile_for_shapes(jitted, abstract_state, shapes, mesh, rules,
                       log: Callable[[str], None] = logging.info, frames_dim: int = 0,
                       kind: str | None = None) -> dict:
  """AOT-compiles the step once per global batch shape (B, S, L); logs memory.

  Returns:
    {(B, S, L): compiled executable}.
  """
  out = {}
  with trace_context(mesh, rules):
    for shape in sorted(set(shapes)):
      compiled = jitted.lower(abstract_state,
                              abstract_batch(*shape, mesh, rules, frames_dim, kind)).compile()
      mem = compiled.memory_analysis()
      if mem is not None:
        gib = lambda n: n / 2**30
        log(f"compiled step for batch {shape}: args {gib(mem.argument_size_in_bytes):.3f} "
            f"GiB, out {gib(mem.output_size_in_bytes):.3f} GiB, temp "
            f"{gib(mem.temp_size_in_bytes):.3f} GiB, code "
            f"{gib(mem.generated_code_size_in_bytes):.4f} GiB (per device)")
      else:
        log(f"compiled step for batch {shape} (no memory analysis on this backend)")
      out[shape] = compiled
  return out


def device_batch(batch: dict, mesh, rules) -> dict:
  """Global device arrays from this process's rows (`make_array_from_process_local_data`)."""
  sh = batch_shardings(mesh, rules, batch_kind(batch))
  return {k: jax.make_array_from_process_local_data(sh[k], np.asarray(batch[k], BATCH_DTYPES[k]))
          for k in sh}
