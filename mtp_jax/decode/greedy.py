"""Greedy decoding: one token per decoder call from head 1 (the baseline)."""
from __future__ import annotations

import jax.numpy as jnp

from mtp_jax.decode import common, engine, registry


class Greedy(engine.BlockStrategy):
  """Feeds the last token, keeps head 1's argmax. Carry: the next token to feed [B]."""

  def first(self, f, out0):
    tok = common.argmax(out0["logits"][:, 0, 0])
    return engine.Block.single(tok), tok

  def propose(self, f, cache, text_index, tok, live):
    out, cache = f.step(tok[:, None], text_index, cache, num_heads=1)
    tok = common.argmax(out["logits"][:, 0, 0])
    return engine.Block.single(tok), jnp.ones_like(tok), cache, tok


def make_greedy(model, *, max_new_tokens: int) -> Greedy:
  """`fn(params, audio, audio_len) -> dict` (see `engine`); max_new_tokens: static cap."""
  return Greedy(model, max_new_tokens=max_new_tokens)


registry.register(registry.StrategySpec(
    name="greedy", build=make_greedy, exact=True,
    help="one token per call from head 1 (the baseline)"))
