"""Greedy decoding: one token per decoder call from head 1 (the baseline)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtp_jax.decode import common


def make_greedy(model, *, max_new_tokens: int):
  """Returns `fn(params, audio, audio_len) -> dict` (see `common.result`).

  Args:
    model: a `SpeechLLaMA`.
    max_new_tokens: static cap on emitted tokens (EOS excluded).
  """
  n = max_new_tokens
  k = model.cfg.mtp.num_heads

  def fn(params, audio, audio_len):
    f = common.model_fns(model, params)
    b = audio.shape[0]
    out0, cache = f.prefill(audio, audio_len, common.bos(b), common.max_text_len(n, 1))
    tok = jnp.argmax(out0["logits"][:, 0, 0], axis=-1).astype(jnp.int32)
    done0 = audio_len <= 0
    calls = jnp.where(done0, 0, 1).astype(jnp.int32)
    e = common.emit(jnp.zeros((b, n + 2), jnp.int32), jnp.zeros((b,), jnp.int32), done0,
                    tok[:, None], jnp.ones((b,), jnp.int32), n)
    state = dict(cache=cache, ti=jnp.ones((b,), jnp.int32), tok=tok, out=e.out, n_out=e.n_out,
                 done=e.done, calls=calls, total=jnp.int32(1), kept=e.kept)

    def cond(s):
      return jnp.any(~s["done"]) & (s["total"] <= n)

    def body(s):
      out, cache = f.step(s["tok"][:, None], s["ti"], s["cache"], num_heads=1)
      tok = jnp.argmax(out["logits"][:, 0, 0], axis=-1).astype(jnp.int32)
      e = common.emit(s["out"], s["n_out"], s["done"], tok[:, None], jnp.ones((b,), jnp.int32), n)
      return dict(cache=cache, ti=s["ti"] + (~s["done"]).astype(jnp.int32), tok=tok,
                  out=e.out, n_out=e.n_out, done=e.done,
                  calls=s["calls"] + (~s["done"]).astype(jnp.int32), total=s["total"] + 1,
                  kept=s["kept"] + e.kept)

    s = jax.lax.while_loop(cond, body, state)
    accepted = jnp.zeros((b, k), jnp.int32).at[:, 0].set(s["kept"])
    return common.result(s["out"], s["n_out"], s["calls"], s["total"], accepted, n)

  return fn
