"""Shared pieces of the decoding loops: model calls, token emission, statistics.

Every strategy is one pure function `(params, audio, audio_len) -> dict of arrays`
built around `jax.lax.while_loop` over the preallocated KV cache. Conventions:

* Token ids: PAD=0, BOS=1, EOS=2. Outputs hold the transcript without BOS/EOS,
  padded with PAD.
* A "decoder call" is one decoder pass: the prefill (audio + BOS) counts as the
  first call, each `decode_step` as one more. A row stops counting once it has
  emitted EOS or `max_new_tokens` tokens; `total_calls` counts loop iterations
  for the whole batch (what wall-clock time follows).
* Batch-padding rows (audio_len 0) are finished from the start (0 calls).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

PAD, BOS, EOS = 0, 1, 2


class ModelFns(NamedTuple):
  """The model entry points the loops use, closed over (model, params)."""
  prefill: Callable      # (audio, audio_len, text_in0, max_text_len) -> (out, cache)
  step: Callable         # (tokens [B,T], text_index [B], cache, num_heads=None) -> (out,
                         # cache), out as decode_step's: "logits" [B,T,n,V], "hidden" [B,T,d]
  unembedding: Callable  # () -> [d, V]
  heads: Callable        # (hidden [B,T,d]) -> [B,T,K,V] logits of every head


def model_fns(model, params) -> ModelFns:
  """Binds the model methods the decoding loops need to `params`."""
  def prefill(audio, audio_len, text_in0, max_text_len):
    return model.apply(params, audio, audio_len, text_in0, max_text_len, method=model.prefill)

  def step(tokens, text_index, cache, num_heads=None):
    return model.apply(params, tokens, text_index, cache, num_heads=num_heads,
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


def write_rows(buf: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
  """buf [B, N], new [B, T], start [B] -> buf with buf[b, start[b]:start[b]+T] = new[b]."""
  return jax.vmap(lambda b, n, s: jax.lax.dynamic_update_slice(b, n, (s,)))(buf, new, start)


def prefix_count(match: jax.Array) -> jax.Array:
  """[B, T] bool -> [B] int32 length of the leading run of True."""
  return jnp.sum(jnp.cumprod(match.astype(jnp.int32), axis=1), axis=1).astype(jnp.int32)


class Emitted(NamedTuple):
  out: jax.Array     # [B, Nbuf] token buffer
  n_out: jax.Array   # [B] tokens emitted so far (EOS excluded)
  done: jax.Array    # [B] finished rows
  kept: jax.Array    # [B] tokens of this block that were kept (EOS excluded)


def emit(out, n_out, done, block, count, max_new_tokens: int) -> Emitted:
  """Appends the first `count[b]` tokens of `block[b]` to each live row.

  The block is cut at its first EOS (which ends the row) and at `max_new_tokens`.

  Args:
    out: [B, Nbuf] int32 buffer, Nbuf >= max_new_tokens + T.
    n_out: [B] int32 tokens already emitted.
    done: [B] bool rows already finished (they take nothing).
    block: [B, T] int32 candidate tokens.
    count: [B] int32 tokens of `block` accepted by the strategy (>= 1).
    max_new_tokens: static length limit.
  """
  t = block.shape[1]
  pos = jnp.arange(t)[None]
  is_eos = (block == EOS) & (pos < count[:, None])
  first_eos = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1), t).astype(jnp.int32)
  kept = jnp.minimum(jnp.minimum(count, first_eos), max_new_tokens - n_out)
  kept = jnp.where(done, 0, jnp.maximum(kept, 0)).astype(jnp.int32)
  out = jnp.where(done[:, None], out, write_rows(out, block, n_out))
  n_new = n_out + kept
  done = done | (first_eos < count) | (n_new >= max_new_tokens)
  return Emitted(out, n_new, done, kept)


def finalize_tokens(out: jax.Array, n_out: jax.Array, max_new_tokens: int) -> jax.Array:
  """[B, Nbuf] buffer -> [B, max_new_tokens] tokens, PAD past each row's length."""
  out = out[:, :max_new_tokens]
  return jnp.where(jnp.arange(max_new_tokens)[None] < n_out[:, None], out, PAD)


def max_text_len(max_new_tokens: int, width: int) -> int:
  """Text slots to preallocate: BOS + every emitted token + one block of width `width`."""
  return 1 + max_new_tokens + width + 1


def bos(batch: int) -> jax.Array:
  return jnp.full((batch, 1), BOS, jnp.int32)


def result(out, n_out, calls, total_calls, accepted, max_new_tokens: int,
           **extra: Any) -> dict:
  """The dict every strategy returns (see `api.DecodeResult`)."""
  return dict(tokens=finalize_tokens(out, n_out, max_new_tokens), lengths=n_out,
              calls=calls, total_calls=total_calls, accepted=accepted, **extra)
