"""Blockwise-parallel decoding (Stern et al., 2018) with the K heads as drafters.

Each decoder call feeds K tokens per row at the row's text index:

    [c, d_2, ..., d_K]

where c is the last accepted token (head 1's correction from the previous call, not
yet in the cache) and d_2..d_K are the drafts heads 2..K produced at c's prediction
position. In that one call head 1 at fed position i predicts the token after fed
token i, which verifies draft d_{i+2}; the longest agreeing prefix (a drafts) is
accepted, followed by head 1's correction at position a. The heads at position a
(the last accepted position) then give the next call's drafts. The cache keeps the
c, d_2..d_{a+1} slots; rejected slots are simply not counted (`text_index += a+1`).

Every emitted token is head 1's argmax given the exact prefix, so the output equals
greedy decoding token for token (up to float ties). Optional typical acceptance
(Medusa): a draft is also accepted when p_1(draft) > min(eps, alpha * exp(-H(p_1))),
which may change the output.

Head-1 acceptance goes through one function, `reference_accept` or the fused Pallas
kernel (`kernel_accept`, `pallas_kernels.dispatch.fused_verify`).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mtp_jax.decode import common
from mtp_jax.decode.greedy import make_greedy

# (f: ModelFns, out: decode_step output, drafts [B,T-1], typical)
#   -> (argmax [B,T], accepted [B], correction [B])
AcceptFn = Callable


def reference_accept(f: common.ModelFns, out, drafts, typical=None):
  """Head-1 verification from the step's logits.

  Args:
    f: bound model functions (unused; same signature as `kernel_accept`).
    out: decode_step output: "logits" [B, T, K, V], "hidden" [B, T, d].
    drafts: [B, T-1] drafts; drafts[:, i] is checked against head 1 at position i.
    typical: None (exact greedy acceptance) or (eps, alpha) for typical acceptance.
  Returns:
    argmax [B, T] int32, accepted [B] int32 (0..T-1), correction [B] int32.
  """
  del f
  logits = out["logits"][:, :, 0]
  argmax = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  match = drafts == argmax[:, :-1]
  if typical is not None:
    eps, alpha = typical
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    p_draft = jnp.exp(jnp.take_along_axis(logp, drafts[..., None], axis=-1)[..., 0])
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    match = match | (p_draft > jnp.minimum(eps, alpha * jnp.exp(-entropy)))
  accepted = common.prefix_count(match)
  correction = common.take_position(argmax, accepted)
  return argmax, accepted, correction


def kernel_accept(f: common.ModelFns, out, drafts, typical=None):
  """Head-1 verification with the fused Pallas kernel (greedy acceptance only).

  On CPU the kernel runs in the Pallas interpreter (slow; for tests)."""
  if typical is not None:
    raise ValueError("mtp_jax/decode/verify.py: typical acceptance is not supported by the "
                     "fused verification kernel; use use_kernels=False")
  from pallas_kernels import dispatch  # pylint: disable=g-import-not-at-top
  hidden = out["hidden"]
  w = f.unembedding().astype(hidden.dtype)
  res = dispatch.fused_verify(hidden, w, drafts, use_kernel=True,
                              interpret=jax.default_backend() not in ("gpu", "tpu"))
  return res.argmax, res.accepted, res.correction


def make_verify(model, *, max_new_tokens: int, typical=None, use_kernels: bool = False):
  """Returns `fn(params, audio, audio_len) -> dict` (see `common.result`).

  Args:
    model: a `SpeechLLaMA` with K = `cfg.mtp.num_heads` heads (K=1: plain greedy).
    max_new_tokens: static cap on emitted tokens (EOS excluded).
    typical: None, or (eps, alpha) for Medusa-style typical acceptance.
    use_kernels: verify with `pallas_kernels.dispatch.fused_verify`.
  """
  k = model.cfg.mtp.num_heads
  if k == 1:
    return make_greedy(model, max_new_tokens=max_new_tokens)
  n = max_new_tokens
  accept = kernel_accept if use_kernels else reference_accept

  def drafts_of(logits):
    """Every head's logits at one position [B, K, V] -> heads 2..K's argmax [B, K-1]."""
    return jnp.argmax(logits[:, 1:], axis=-1).astype(jnp.int32)

  def fn(params, audio, audio_len):
    f = common.model_fns(model, params)
    b = audio.shape[0]
    out0, cache = f.prefill(audio, audio_len, common.bos(b), common.max_text_len(n, k))
    corr = jnp.argmax(out0["logits"][:, 0, 0], axis=-1).astype(jnp.int32)
    drafts = drafts_of(out0["logits"][:, 0])  # the prefill already ran every head
    done0 = audio_len <= 0
    e = common.emit(jnp.zeros((b, n + k + 1), jnp.int32), jnp.zeros((b,), jnp.int32), done0,
                    corr[:, None], jnp.ones((b,), jnp.int32), n)
    accepted = jnp.zeros((b, k), jnp.int32).at[:, 0].set(e.kept)
    state = dict(cache=cache, ti=jnp.ones((b,), jnp.int32), corr=corr, drafts=drafts,
                 out=e.out, n_out=e.n_out, done=e.done,
                 calls=jnp.where(done0, 0, 1).astype(jnp.int32), total=jnp.int32(1),
                 accepted=accepted)

    def cond(s):
      return jnp.any(~s["done"]) & (s["total"] <= n)

    def body(s):
      fed = jnp.concatenate([s["corr"][:, None], s["drafts"]], axis=1)  # [B, K]
      # Head 1 at every fed position (none with the kernel, which reads the hidden
      # states); heads 2..K only at the last accepted position (heads_at).
      out, cache = f.step(fed, s["ti"], s["cache"], num_heads=0 if use_kernels else 1)
      _, a, corr = accept(f, out, s["drafts"], typical)
      pos = jnp.arange(k)[None]
      block = jnp.where(pos < a[:, None], jnp.pad(s["drafts"], ((0, 0), (0, 1))),
                        corr[:, None])                                   # [d_2..d_{a+1}, corr]
      e = common.emit(s["out"], s["n_out"], s["done"], block, a + 1, n)
      # Head k >= 2 is credited when its draft was kept; head 1 when its correction was.
      heads_ok = jnp.arange(1, k)[None] <= jnp.minimum(a, e.kept)[:, None]
      got = jnp.concatenate([(e.kept > a)[:, None], heads_ok], axis=1).astype(jnp.int32)
      live = ~s["done"]
      return dict(cache=cache, ti=s["ti"] + jnp.where(live, a + 1, 0), corr=corr,
                  drafts=drafts_of(common.heads_at(f, out["hidden"], a)),
                  out=e.out, n_out=e.n_out, done=e.done,
                  calls=s["calls"] + live.astype(jnp.int32), total=s["total"] + 1,
                  accepted=s["accepted"] + got * live[:, None])

    s = jax.lax.while_loop(cond, body, state)
    return common.result(s["out"], s["n_out"], s["calls"], s["total"], s["accepted"], n)

  return fn
