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

from mtp_jax.decode import common, engine, registry


def accept_count(probs: jax.Array, tau) -> jax.Array:
  """[B, K] argmax probabilities -> [B] accepted heads (>= 1)."""
  ok = probs >= tau
  tail = jnp.cumprod(ok.astype(jnp.int32), axis=1)[:, 1:]  # head k>=2 needs p_1..p_k >= tau
  return (1 + jnp.sum(tail, axis=1)).astype(jnp.int32)


class Threshold(engine.BlockStrategy):
  """Carry: (tokens [B, K], count [B]) the block emitted last, fed by the next call."""

  def __init__(self, model, *, max_new_tokens: int, threshold: float):
    super().__init__(model, max_new_tokens=max_new_tokens)
    self.tau = threshold
    self.feed_width = self.emit_width = self.num_heads

  def _block(self, logits):
    """Every head's logits at one position [B, K, V] -> (Block, carry)."""
    tok = common.argmax(logits)
    cnt = accept_count(jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1), self.tau)
    source = jnp.broadcast_to(jnp.arange(self.num_heads)[None], tok.shape)
    return engine.Block(tok, cnt, source), (tok, cnt)

  def first(self, f, out0):
    return self._block(out0["logits"][:, 0])

  def propose(self, f, cache, text_index, carry, live):
    tok, cnt = carry
    out, cache = f.step(tok, text_index, cache, num_heads=0)
    block, carry = self._block(common.heads_at(f, out["hidden"], cnt - 1))
    return block, cnt, cache, carry


def make_threshold(model, *, max_new_tokens: int, threshold: float = 0.8) -> Threshold:
  """`fn(params, audio, audio_len) -> dict` (see `engine`).

  Args:
    model: a `SpeechLLaMA` with K heads.
    max_new_tokens: static cap on emitted tokens (EOS excluded).
    threshold: tau, the probability every head up to k must reach.
  """
  return Threshold(model, max_new_tokens=max_new_tokens, threshold=threshold)


registry.register(registry.StrategySpec(
    name="threshold", build=make_threshold,
    options=(registry.Option("threshold", 0.8, "tau: accept head k's token while heads "
                             "1..k are all at least this sure (--strategy=threshold)",
                             parse=registry.non_negative("threshold")),),
    help="accept the heads' tokens while all are confident (changes the output)"))
