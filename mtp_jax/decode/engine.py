"""The one decoding loop: a typed loop state, a strategy interface, a `lax.while_loop` driver.

    prefill(audio + BOS) -> strategy.init -> while any row is live: strategy.body
                                          -> strategy.finish -> dict (see `api.DecodeResult`)

A strategy subclasses `Strategy` (and registers itself in `registry`). Most emit a
block of 1..T tokens per decoder call and subclass `BlockStrategy`, which owns the
emission, stopping, counting and per-head credit; they only say which tokens to feed
and which to keep (`first`, `propose`). Beam search, whose rows are hypotheses,
implements `init` / `body` / `finish` itself over the same `LoopState`.

Conventions:
* Token ids: PAD=0, BOS=1, EOS=2. Outputs hold the transcript without BOS/EOS,
  padded with PAD.
* A "decoder call" is one decoder pass: the prefill (audio + BOS) counts as the
  first call, each `decode_step` as one more. A row stops counting once it has
  emitted EOS or `max_new_tokens` tokens; `total_calls` counts loop iterations for
  the whole batch (what wall-clock time follows).
* Batch-padding rows (audio_len 0) are finished from the start (0 calls).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from mtp_jax.decode import common
from mtp_jax.model.kv_cache import KVCache, write_rows


@flax.struct.dataclass
class LoopState:
  """What the loop carries. R rows: the batch B (beam search: B * beam hypotheses).

  Attributes:
    cache: the decoder's KV cache (R rows).
    text_index: [R] int32 text tokens committed to the cache (BOS included).
    out: [R, Nbuf] int32 emitted tokens (Nbuf >= max_new_tokens + a block).
    n_out: [R] int32 tokens emitted so far (EOS excluded).
    done: [R] bool finished rows.
    calls: [B] int32 decoder calls per input row (prefill included).
    total: [] int32 loop iterations + 1 (the prefill).
    accepted: [R, K] int32 emitted tokens credited to each head.
    carry: the strategy's own pytree (the next call's input tokens, drafts, scores...).
  """
  cache: KVCache
  text_index: jax.Array
  out: jax.Array
  n_out: jax.Array
  done: jax.Array
  calls: jax.Array
  total: jax.Array
  accepted: jax.Array
  carry: Any


class Strategy:
  """One decoding strategy: `strategy(params, audio, audio_len) -> dict`.

  Subclasses set `feed_width` (text slots one call may write: the cache is sized
  for `max_new_tokens` plus one such call) and implement `init`, `body`, `finish`.
  """
  feed_width: int = 1
  # Multi-token calls: the most (row, position, head) triples computed in one
  # vocabulary matmul (`common.ONE_PASS_MAX_ROWS`); an instance may override it.
  one_pass_max_rows: int = common.ONE_PASS_MAX_ROWS

  def __init__(self, model, *, max_new_tokens: int):
    self.model = model
    self.max_new_tokens = int(max_new_tokens)
    self.num_heads = model.cfg.mtp.num_heads

  @property
  def max_iterations(self) -> int:
    """Loop bound: `total` (prefill + iterations) never exceeds this + 1."""
    return self.max_new_tokens

  def init(self, f: common.ModelFns, out0: dict, cache: KVCache, audio_len) -> LoopState:
    raise NotImplementedError

  def body(self, f: common.ModelFns, s: LoopState) -> LoopState:
    raise NotImplementedError

  def finish(self, s: LoopState) -> dict:
    raise NotImplementedError

  def __call__(self, params, audio, audio_len) -> dict:
    """Decodes a batch: audio [B, S] float, audio_len [B] int (0 = padding row)."""
    f = common.model_fns(self.model, params)
    b = audio.shape[0]
    out0, cache = f.prefill(audio, audio_len, common.bos(b),
                            common.max_text_len(self.max_new_tokens, self.feed_width))
    s = self.init(f, out0, cache, audio_len)
    s = jax.lax.while_loop(
        lambda s: jnp.any(~s.done) & (s.total <= self.max_iterations),
        lambda s: self.body(f, s), s)
    return self.finish(s)


class Block(NamedTuple):
  """Tokens one call offers for emission.

  tokens: [B, T] int32 candidates; count: [B] int32 how many the strategy keeps
  (1..T; emission may cut further at EOS or the length cap); source: [B, T] int32
  the head (0-based) that produced each token, for per-head acceptance credit.
  """
  tokens: jax.Array
  count: jax.Array
  source: jax.Array

  @classmethod
  def single(cls, tok: jax.Array) -> "Block":
    """One token per row from head 1."""
    z = jnp.zeros_like(tok)[:, None]
    return cls(tok[:, None], jnp.ones_like(tok), z)


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
  is_eos = (block == common.EOS) & (pos < count[:, None])
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
  return jnp.where(jnp.arange(max_new_tokens)[None] < n_out[:, None], out, common.PAD)


class BlockStrategy(Strategy):
  """A strategy that emits one `Block` per decoder call (greedy, threshold, verify, tree).

  Subclasses implement:
    first(f, out0) -> (Block, carry): the block after the prefill (out0: its outputs,
      "logits" [B, 1, K, V], "hidden" [B, 1, d]) and the carry of the first call.
    propose(f, cache, text_index, carry, live) -> (Block, committed [B], cache, carry):
      one decoder call (live [B]: rows not finished before it); `committed` = tokens fed
      in this call that are now final in the cache (the row's text_index advances by it).
  `emit_width` is the largest block (tokens emitted per call).
  """
  emit_width: int = 1

  def first(self, f, out0):
    raise NotImplementedError

  def propose(self, f, cache, text_index, carry, live):
    raise NotImplementedError

  def _take(self, s: LoopState, block: Block) -> LoopState:
    """Emits `block` into the live rows and credits the heads that produced kept tokens."""
    e = emit(s.out, s.n_out, s.done, block.tokens, block.count, self.max_new_tokens)
    t = block.tokens.shape[1]
    kept = jnp.arange(t)[None] < e.kept[:, None]                          # [B, T]
    credit = jnp.sum(jax.nn.one_hot(block.source, self.num_heads, dtype=jnp.int32)
                     * kept[..., None], axis=1)                          # [B, K]
    return s.replace(out=e.out, n_out=e.n_out, done=e.done, accepted=s.accepted + credit)

  def init(self, f, out0, cache, audio_len):
    b = audio_len.shape[0]
    block, carry = self.first(f, out0)
    done = audio_len <= 0
    s = LoopState(cache=cache, text_index=jnp.ones((b,), jnp.int32),
                  out=jnp.zeros((b, self.max_new_tokens + self.emit_width + 1), jnp.int32),
                  n_out=jnp.zeros((b,), jnp.int32), done=done,
                  calls=jnp.where(done, 0, 1).astype(jnp.int32), total=jnp.int32(1),
                  accepted=jnp.zeros((b, self.num_heads), jnp.int32), carry=carry)
    return self._take(s, block)

  def body(self, f, s):
    live = ~s.done
    block, committed, cache, carry = self.propose(f, s.cache, s.text_index, s.carry, live)
    s = s.replace(cache=cache, carry=carry,
                  text_index=s.text_index + jnp.where(live, committed, 0),
                  calls=s.calls + live.astype(jnp.int32), total=s.total + 1)
    return self._take(s, block)

  def finish(self, s):
    return dict(tokens=finalize_tokens(s.out, s.n_out, self.max_new_tokens), lengths=s.n_out,
                calls=s.calls, total_calls=s.total, accepted=s.accepted)
