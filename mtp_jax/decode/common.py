"""Small pieces shared by the decoding strategies: token ids, bound model calls, gathers.

The loop itself (state, emission, stopping, counting) is `mtp_jax.decode.engine`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

PAD, BOS, EOS = 0, 1, 2


class ModelFns(NamedTuple):
  """The model entry points the loops use, closed over (model, params)."""
  prefill: Callable      # (audio, audio_len, text_in0, max_text_len) -> (out, cache)
  step: Callable         # (tokens [B,T], text_index [B], cache, num_heads=None, tree=None)
                         # -> (out, cache), out as decode_step's: "logits" [B,T,n,V],
                         # "hidden" [B,T,d]
  unembedding: Callable  # () -> [d, V]
  heads: Callable        # (hidden [B,T,d]) -> [B,T,K,V] logits of every head


def model_fns(model, params) -> ModelFns:
  """Binds the model methods the decoding loops need to `params`."""
  def prefill(audio, audio_len, text_in0, max_text_len):
    return model.apply(params, audio, audio_len, text_in0, max_text_len, method=model.prefill)

  def step(tokens, text_index, cache, num_heads=None, tree=None):
    return model.apply(params, tokens, text_index, cache, num_heads=num_heads, tree=tree,
                       method=model.decode_step)

  def unembedding():
    return model.apply(params, method=model.unembedding_matrix)

  def heads(hidden):
    return model.apply(params, hidden, method=model.heads)

  return ModelFns(prefill, step, unembedding, heads)


def heads_at(f: ModelFns, hidden: jax.Array, index: jax.Array) -> jax.Array:
  """Every head's logits at one position per row: hidden [B, T, d], index [B] -> [B, K, V].

  The decoding loops run `f.step` with head 1 only and call this where drafts are
  needed, so heads 2..K cost one position per call instead of every fed position."""
  return f.heads(take_position(hidden, index)[:, None])[:, 0]


def take_position(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, T, ...], index [B] -> x[b, index[b]] as [B, ...]."""
  return jnp.take_along_axis(x, index.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]


def max_text_len(max_new_tokens: int, width: int) -> int:
  """Text slots to preallocate: BOS + every emitted token + one block of width `width`."""
  return 1 + max_new_tokens + width + 1


def bos(batch: int) -> jax.Array:
  return jnp.full((batch, 1), BOS, jnp.int32)
