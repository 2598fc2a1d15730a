"""Threshold decoding: accept heads' tokens while they are all confident.

At the last fed position the K heads propose tokens g_1..g_K with probabilities
p_1..p_K (each head's argmax probability; sequential heads condition on the
previous head's argmax). g_1 is always accepted; g_k (k >= 2) is accepted while
p_1, ..., p_k are all >= tau. The accepted block (1..K tokens) is fed in the next
call, which commits it to the cache and proposes again at its last position.
With tau > 1 only head 1 is ever accepted: greedy decoding, same call count.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtp_jax.decode import common


def accept_count(probs: jax.Array, tau) -> jax.Array:
  """[B, K] argmax probabilities -> [B] accepted heads (>= 1)."""
  ok = probs >= tau
  tail = jnp.cumprod(ok.astype(jnp.int32), axis=1)[:, 1:]  # head k>=2 needs p_1..p_k >= tau
  return (1 + jnp.sum(tail, axis=1)).astype(jnp.int32)


def make_threshold(model, *, max_new_tokens: int, threshold: float):
  """Returns `fn(params, audio, audio_len) -> dict` (see `common.result`).

  Args:
    model: a `SpeechLLaMA` with K heads.
    max_new_tokens: static cap on emitted tokens (EOS excluded).
    threshold: tau, the probability every head up to k must reach.
  """
  k = model.cfg.mtp.num_heads
  n = max_new_tokens

  def propose(logits):
    """Every head's logits at one position [B, K, V] -> (tokens [B, K], accepted [B])."""
    probs = jax.nn.softmax(logits, axis=-1)
    tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return tok, accept_count(jnp.max(probs, axis=-1), threshold)

  def credit(kept, live):
    return ((jnp.arange(k)[None] < kept[:, None]) & live[:, None]).astype(jnp.int32)

  def fn(params, audio, audio_len):
    f = common.model_fns(model, params)
    b = audio.shape[0]
    out0, cache = f.prefill(audio, audio_len, common.bos(b), common.max_text_len(n, k))
    tok, cnt = propose(out0["logits"][:, 0])
    done0 = audio_len <= 0
    e = common.emit(jnp.zeros((b, n + k + 1), jnp.int32), jnp.zeros((b,), jnp.int32), done0,
                    tok, cnt, n)
    state = dict(cache=cache, ti=jnp.ones((b,), jnp.int32), tok=tok, cnt=cnt, out=e.out,
                 n_out=e.n_out, done=e.done, calls=jnp.where(done0, 0, 1).astype(jnp.int32),
                 total=jnp.int32(1), accepted=credit(e.kept, ~done0))

    def cond(s):
      return jnp.any(~s["done"]) & (s["total"] <= n)

    def body(s):
      out, cache = f.step(s["tok"], s["ti"], s["cache"], num_heads=0)
      tok, cnt = propose(common.heads_at(f, out["hidden"], s["cnt"] - 1))
      live = ~s["done"]
      e = common.emit(s["out"], s["n_out"], s["done"], tok, cnt, n)
      return dict(cache=cache, ti=s["ti"] + jnp.where(live, s["cnt"], 0), tok=tok, cnt=cnt,
                  out=e.out, n_out=e.n_out, done=e.done,
                  calls=s["calls"] + live.astype(jnp.int32), total=s["total"] + 1,
                  accepted=s["accepted"] + credit(e.kept, live))

    s = jax.lax.while_loop(cond, body, state)
    return common.result(s["out"], s["n_out"], s["calls"], s["total"], s["accepted"], n)

  return fn
