"""Minimum word error rate (MWER) training objective over a beam-search N-best.

For an utterance x with reference y* and N-best {y_1..y_N} (valid, distinct):

    L_MWER = sum_i P^(y_i | x) (W(y_i, y*) - W_bar),
    P^(y_i | x) = exp(log P(y_i | x)) / sum_j exp(log P(y_j | x))   (over the N-best),
    W_bar = mean_i W(y_i, y*)                                        (over the N-best),

with log P(y | x) the teacher-forced head-1 log-probability of y followed by EOS,
and W the word errors (Levenshtein distance on words). Subtracting W_bar (a
constant) does not change the gradient's expectation but lowers its variance. The
training loss is the mean of L_MWER over the utterances that have an N-best, plus
lambda_ce times the usual multi-token cross-entropy on the reference.

`make_mwer_objective` builds the search (eval-mode, gradient-free; see
`mtp_jax/mwer/search.py`) and the differentiable loss for the train step; the
audio is encoded once (train mode) and its tokens are tiled N times to score the
N-best with `SpeechLLaMA.forward_text`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from mtp_jax.mwer import search as search_lib
from mtp_jax.mwer import word_errors as we
from mtp_jax.train import loss as loss_lib

# Scalars the MWER loss adds to its aux (logged as train/mwer/<name>).
METRICS = ("ce", "mwer", "expected_errors", "mean_errors", "nbest_valid", "search_calls")


def distinct_mask(tokens: jax.Array, lengths: jax.Array, valid: jax.Array) -> jax.Array:
  """Keeps the first of several equal hypotheses.

  Args:
    tokens: [B, N, T] int32 hypotheses (anything past `lengths` ignored).
    lengths: [B, N] int32.
    valid: [B, N] bool.
  Returns:
    [B, N] bool: valid and not equal to an earlier valid hypothesis of its row.
  """
  t = tokens.shape[-1]
  live = jnp.arange(t)[None, None] < lengths[..., None]
  toks = jnp.where(live, tokens, -1)
  same = jnp.all(toks[:, :, None] == toks[:, None, :], axis=-1) & (
      lengths[:, :, None] == lengths[:, None, :])                        # [B, N, N]
  n = tokens.shape[1]
  earlier = jnp.arange(n)[None, :] < jnp.arange(n)[:, None]            # [i, j]: j < i
  dup = jnp.any(same & earlier[None] & valid[:, None, :], axis=-1)
  return valid & ~dup


def nbest_posterior(seq_logprob: jax.Array, valid: jax.Array) -> jax.Array:
  """P^ = softmax of the sequence log-probs renormalized over the valid entries.

  Args:
    seq_logprob: [B, N] float32 log P(y_i | x) (any value where invalid).
    valid: [B, N] bool.
  Returns:
    [B, N] float32, 0 where invalid; rows without a valid entry are all 0. The
    gradient is finite in every case (invalid entries never reach an exp or a log).
  """
  lp = jnp.where(valid, seq_logprob, 0.0)
  top = jnp.max(jnp.where(valid, lp, -jnp.inf), axis=-1, keepdims=True)
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  e = jnp.where(valid, jnp.exp(jnp.where(valid, lp - top, 0.0)), 0.0)
  z = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(z > 0, z, 1.0)


def mwer_objective(seq_logprob: jax.Array, errors: jax.Array, valid: jax.Array):
  """The MWER loss of a batch of N-best lists.

  Args:
    seq_logprob: [B, N] float32 sequence log-probs (differentiable).
    errors: [B, N] word errors W(y_i, y*) (constants).
    valid: [B, N] bool, valid distinct hypotheses (batch-padding rows: all False).
  Returns:
    (loss scalar = mean over rows with >= 1 valid hypothesis of
     sum_i P^_i (W_i - W_bar), aux dict of [B] arrays: "posterior" [B, N],
     "expected_errors" sum_i P^_i W_i, "mean_errors" W_bar, "num_valid", "has_nbest").
  """
  errors = jax.lax.stop_gradient(errors.astype(jnp.float32))
  p = nbest_posterior(seq_logprob, valid)
  v = valid.astype(jnp.float32)
  count = jnp.sum(v, axis=-1)
  w_bar = jnp.sum(errors * v, axis=-1) / jnp.maximum(count, 1.0)
  per_row = jnp.sum(p * jnp.where(valid, errors - w_bar[:, None], 0.0), axis=-1)
  has = count > 0
  loss = jnp.sum(jnp.where(has, per_row, 0.0)) / jnp.maximum(jnp.sum(has), 1)
  return loss, {"posterior": p, "expected_errors": jnp.sum(p * jnp.where(valid, errors, 0.0), -1),
                "mean_errors": w_bar, "num_valid": count, "has_nbest": has}


def sequence_logprobs(model, params, emb, valid, alen, tokens, lengths, rngs=None):
  """Teacher-forced head-1 log P(y + EOS | x) of every hypothesis, audio encoded once.

  Args:
    model: SpeechLLaMA (the train-mode model when training).
    params: its params.
    emb, valid, alen: `SpeechLLaMA.encode` outputs [B, P, d], [B, P], [B].
    tokens: [B, N, T] int32 hypotheses without BOS/EOS; lengths: [B, N] (<= T).
    rngs: dropout rngs for a train-mode model.
  Returns:
    [B, N] float32.
  """
  b, n, t = tokens.shape
  rep = lambda x: jnp.repeat(x, n, axis=0)  # noqa: E731  rows b*N + i <- row b
  flat = jnp.pad(tokens.reshape(b * n, t), ((0, 0), (0, 1)))          # room for EOS
  flat_len = lengths.reshape(b * n)
  text_in, targets, mask, _ = loss_lib.make_targets(
      flat, flat_len, jnp.ones((b * n,), jnp.int32), 1)
  out = model.apply(params, rep(emb), rep(valid), rep(alen), text_in,
                    method=model.forward_text, rngs=rngs)
  lp = jax.nn.log_softmax(out["logits"][:, :, 0].astype(jnp.float32), axis=-1)
  tok_lp = jnp.take_along_axis(lp, targets[..., :1], axis=-1)[..., 0]   # [B*N, T+1]
  return jnp.sum(jnp.where(mask[..., 0], tok_lp, 0.0), axis=-1).reshape(b, n)


def make_mwer_objective(model, mcfg, weights: Sequence[float], label_smoothing: float,
                        tables: we.WordTables) -> tuple[Callable, Callable]:
  """Builds the N-best search and the MWER loss of the train step.

  Args:
    model: the train-mode SpeechLLaMA (the search uses its eval-mode clone).
    mcfg: `config.train.mwer` (nbest, beam, block_size, lambda_ce, max_new_tokens).
    weights: K head weights of the cross-entropy term.
    label_smoothing: of the cross-entropy term.
    tables: word tables of the tokenizer (`word_errors.tables_from_tokenizer`).
  Returns:
    search(params, batch) -> N-best dict (see `search.make_nbest_search`), and
    loss(params, batch, nbest, rng) -> (loss, aux) with aux "loss_k", "acc_k",
    "tokens_k" (the reference cross-entropy, as `train.loss.mtp_loss`) plus the
    scalars "ce", "mwer", "expected_errors", "mean_errors", "nbest_valid",
    "search_calls" (decoder calls per utterance).
  """
  k = model.cfg.mtp.num_heads
  sequential = model.cfg.mtp.head_type == "sequential"
  nbest, beam = int(mcfg.nbest), int(mcfg.beam)
  lam = float(mcfg.lambda_ce)
  if nbest < 2:
    raise ValueError(f"train.mwer.nbest={nbest}: MWER needs at least 2 hypotheses")
  if not nbest <= beam:
    raise ValueError(f"train.mwer.nbest={nbest} must be <= train.mwer.beam={beam}")
  if not 0 <= int(mcfg.block_size) <= k:
    raise ValueError(f"train.mwer.block_size={mcfg.block_size} must be in [0, {k}] "
                     "(model.mtp.num_heads; 0 = all heads)")

  def max_new(batch) -> int:
    return int(mcfg.max_new_tokens) or int(batch["text"].shape[1])

  def search(params, batch):
    cached = "frames" in batch  # a frozen encoder's feature cache (`data.feature_cache`)
    fn = search_lib.make_nbest_search(model, beam=beam, nbest=nbest,
                                      max_new_tokens=max_new(batch),
                                      block_size=int(mcfg.block_size), cached=cached)
    if cached:
      return fn(params, batch["frames"], batch["frames_len"])
    return fn(params, batch["audio"], batch["audio_len"])

  def loss(params, batch, nb, rng):
    rngs = lambda i: {"dropout": jax.random.fold_in(rng, i),  # noqa: E731
                      "specaug": jax.random.fold_in(rng, 100 + i)}
    if "frames" in batch:
      emb, valid, alen = model.apply(params, batch["frames"], batch["frames_len"],
                                     method=model.encode_cached, rngs=rngs(0))
    else:
      emb, valid, alen = model.apply(params, batch["audio"], batch["audio_len"],
                                     method=model.encode, rngs=rngs(0))
    text_in, targets, mask, prev = loss_lib.make_targets(
        batch["text"], batch["text_len"], batch["audio_len"], k)
    out = model.apply(params, emb, valid, alen, text_in,
                      prev if (sequential and k > 1) else None,
                      method=model.forward_text, rngs=rngs(1))
    ce, aux = loss_lib.mtp_loss(out["logits"], targets, mask, weights, label_smoothing)
    tokens, lengths = nb["tokens"], nb["lengths"]
    b, n, t = tokens.shape
    ok = distinct_mask(tokens, lengths, nb["valid"])
    seq_lp = sequence_logprobs(model, params, emb, valid, alen, tokens, lengths, rngs(2))
    ref = jnp.repeat(batch["text"].astype(jnp.int32), n, axis=0)
    ref_len = jnp.repeat(batch["text_len"].astype(jnp.int32), n, axis=0)
    errors = we.word_errors(tokens.reshape(b * n, t), lengths.reshape(b * n), ref, ref_len,
                            tables).reshape(b, n)
    mw, maux = mwer_objective(seq_lp, errors, ok)
    rows = jnp.maximum(jnp.sum(maux["has_nbest"]), 1)
    mean = lambda x: jnp.sum(jnp.where(maux["has_nbest"], x, 0.0)) / rows  # noqa: E731
    aux = dict(aux, ce=ce, mwer=mw, expected_errors=mean(maux["expected_errors"]),
               mean_errors=mean(maux["mean_errors"]), nbest_valid=mean(maux["num_valid"]),
               search_calls=mean(nb["calls"].astype(jnp.float32)))
    return mw + lam * ce, aux

  return search, loss
