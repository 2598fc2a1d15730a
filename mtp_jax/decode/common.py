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
  step: Callable         # (tokens [B,T], text_index [B], cache, num_heads=None, tree=None,
                         # draft_vocab=0) -> (out, cache), out as decode_step's:
                         # "logits" [B,T,n,V], "hidden" [B,T,d] (+ "draft_logits")
  unembedding: Callable  # () -> [d, V]
  heads: Callable        # (hidden [B,T,d]) -> [B,T,K,V] logits of every head
  draft_logits: Callable  # (hidden [B,T,d], vocab) -> [B,T,K-1,vocab] heads 2..K over
                          # the token ids < vocab (latent heads)


def model_fns(model, params) -> ModelFns:
  """Binds the model methods the decoding loops need to `params`."""
  def prefill(audio, audio_len, text_in0, max_text_len):
    return model.apply(params, audio, audio_len, text_in0, max_text_len, method=model.prefill)

  def step(tokens, text_index, cache, num_heads=None, tree=None, draft_vocab=0):
    return model.apply(params, tokens, text_index, cache, num_heads=num_heads, tree=tree,
                       draft_vocab=draft_vocab, method=model.decode_step)

  def unembedding():
    return model.apply(params, method=model.unembedding_matrix)

  def heads(hidden):
    return model.apply(params, hidden, method=model.heads)

  def draft_logits(hidden, vocab):
    return model.apply(params, hidden, vocab, method=model.draft_logits)

  return ModelFns(prefill, step, unembedding, heads, draft_logits)


# Where a multi-token call gets the next drafts: every head at every fed position in the
# call's one vocabulary matmul ("one pass"), or head 1 at every fed position and heads
# 2..K at the accepted one in a second matmul (`heads_at`). A few rows times the [d, V]
# unembedding cost about what one row does on XLA:CPU (the matrix is read once either
# way), so the one pass wins while the call has at most this many (row, position, head)
# triples; past it the matmul grows with the rows and two passes compute fewer
# (bench/results/unembed_layout_cpu.json).
ONE_PASS_MAX_ROWS = 16


def one_pass(batch: int, width: int, heads: int, max_rows: int = ONE_PASS_MAX_ROWS) -> bool:
  """Whether a call feeding `width` tokens to `batch` rows computes all `heads` heads
  at every position (see ONE_PASS_MAX_ROWS)."""
  return batch * width * heads <= max_rows


def draft_vocab_of(model, n) -> int:
  """A strategy's `draft_vocab` option checked against the model: the shortlist size,
  or 0 for the whole vocabulary (n = 0 or n >= V)."""
  n = int(n)
  if not 0 < n < model.cfg.decoder.vocab_size:
    return 0
  if model.cfg.mtp.head_type != "latent":
    raise ValueError(f"draft_vocab={n}: drafting from a shortlist needs "
                     f"model.mtp.head_type='latent', not {model.cfg.mtp.head_type!r}")
  return n


def heads_at(f: ModelFns, hidden: jax.Array, index: jax.Array) -> jax.Array:
  """Every head's logits at one position per row: hidden [B, T, d], index [B] -> [B, K, V].

  The decoding loops run `f.step` with head 1 only and call this where drafts are
  needed, so heads 2..K cost one position per call instead of every fed position."""
  return f.heads(take_position(hidden, index)[:, None])[:, 0]


def take_position(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, T, ...], index [B] -> x[b, index[b]] as [B, ...]."""
  return jnp.take_along_axis(x, index.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]


# Above this many logits `argmax` keeps XLA's one-pass (value, index) reduction.
TWO_PASS_ARGMAX_MAX = 1 << 20


def argmax(logits: jax.Array) -> jax.Array:
  """`jnp.argmax(logits, -1)` as int32; small inputs as a max then the first index
  reaching it.

  The same result as `jnp.argmax` (the first maximum; the first NaN if any). XLA:CPU
  runs the (value, index) pair reduction of `jnp.argmax` unvectorized: over [16, 51864]
  logits two plain reductions are 1.1 ms faster; over [64, 51864] (13 MB, past the
  cache, read twice) they are 10 ms slower, so inputs above TWO_PASS_ARGMAX_MAX
  elements keep `jnp.argmax` (bench/results/unembed_layout_cpu.json)."""
  if logits.size > TWO_PASS_ARGMAX_MAX:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return first_max_index(logits)


def first_max_index(logits: jax.Array) -> jax.Array:
  """The first index of the maximum over the last axis (of the first NaN if any), int32,
  as two plain reductions (see `argmax`)."""
  m = jnp.max(logits, axis=-1, keepdims=True)
  hit = (logits == m) | jnp.isnan(logits)
  iota = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  return jnp.min(jnp.where(hit, iota, logits.shape[-1]), axis=-1)


def max_text_len(max_new_tokens: int, width: int) -> int:
  """Text slots to preallocate: BOS + every emitted token + one block of width `width`."""
  return 1 + max_new_tokens + width + 1


def bos(batch: int) -> jax.Array:
  return jnp.full((batch, 1), BOS, jnp.int32)
