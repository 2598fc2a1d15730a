"""The decoder's KV cache: one typed pytree that owns its layout, writes, row moves and masks.

Layout (the decoding loops carry it through `lax.while_loop`):
  k, v: L per-layer arrays [B * Hkv, S, D] (a tuple; row b's heads are rows
    b * Hkv .. b * Hkv + Hkv - 1), S = P + max_text_len. Slots [0, P) hold the audio
    prefix (row b's valid audio tokens where `prefix_valid` says so), slots [P, S) the
    text, written at per-row offsets: row b's text token i sits at slot P + i. Every
    layer is its own buffer with (row, head) as one leading axis, so attention reads
    it as it lies (`layers.dot_product_attention(heads_first=True)`): no per-step
    transpose, slice, reshape or restack of the cache. On XLA:CPU those copies were
    over half of a long-form decoding step.
  prefix_valid: [B, P] bool, or [L, B, P] after a prefill with audio-token reduction
    (FastAdaSP & co., `mtp_jax/model/reduction_ops.py`): layer l then holds fewer valid
    audio slots, compacted to the front of [0, P).
  prefix_len: [B] int32 valid audio tokens before any reduction: the text's rotary
    positions start there, so reduction never shifts them.

Every attention mask of the model comes from here: `causal_mask` for a full pass over
`[audio][text]` (training, prefill) and `KVCache.decode_mask` for T new tokens over
the cache, either a causal block (greedy, verification) or a tree of drafts.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


def write_rows(buf: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
  """buf [B, N, ...], new [B, T, ...], start [B] -> buf with buf[b, start[b]:+T] = new[b].

  The one per-row write of the code base (token buffers; `write_slots` for the cache)."""
  def one(b, n, s):
    return jax.lax.dynamic_update_slice(b, n.astype(b.dtype), (s,) + (0,) * (b.ndim - 1))
  return jax.vmap(one)(buf, new, start)


def write_slots(buf: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
  """One layer's cache buf [B * Hkv, S, D], new keys or values [B, T, Hkv, D], start [B]
  -> buf with slots start[b] .. start[b] + T - 1 of row b's heads set to new[b].

  One dynamic-update-slice per row (B is static), which XLA applies to the
  loop-carried buffer in place (a vmapped update becomes a scatter, which XLA:CPU
  copied around every step)."""
  h = new.shape[2]
  new = jnp.swapaxes(new, 1, 2).astype(buf.dtype)                    # [B, Hkv, T, D]
  for r in range(new.shape[0]):
    buf = jax.lax.dynamic_update_slice(buf, new[r], (r * h, start[r], 0))
  return buf


def causal_mask(key_valid: jax.Array) -> jax.Array:
  """[B, N] valid keys -> [B, N, N] causal mask that hides invalid (padded) keys."""
  n = key_valid.shape[1]
  return jnp.tril(jnp.ones((n, n), bool))[None] & key_valid[:, None, :]


@flax.struct.dataclass
class KVCache:
  """Keys/values of every decoder layer plus the audio prefix's validity (see module doc)."""
  k: tuple
  v: tuple
  prefix_valid: jax.Array
  prefix_len: jax.Array

  @classmethod
  def zeros(cls, *, num_layers: int, batch: int, prefix_len: int, max_text_len: int,
            num_kv_heads: int, head_dim: int, dtype) -> "KVCache":
    """An empty cache of S = prefix_len + max_text_len slots."""
    shape = (batch * num_kv_heads, prefix_len + max_text_len, head_dim)
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))  # noqa: E731
    return cls(k=zeros(), v=zeros(),
               prefix_valid=jnp.zeros((batch, prefix_len), bool),
               prefix_len=jnp.zeros((batch,), jnp.int32))

  @property
  def num_audio(self) -> int:
    """P, the audio slots."""
    return self.prefix_valid.shape[-1]

  @property
  def num_kv_heads(self) -> int:
    """Hkv, the buffer rows of one batch row."""
    return self.k[0].shape[0] // self.prefix_len.shape[0]

  @property
  def num_slots(self) -> int:
    """S, all slots."""
    return self.k[0].shape[1]

  @property
  def layers(self) -> dict:
    """{"k", "v"}: L arrays [B * Hkv, S, D] each, what `DecoderStack` reads and returns."""
    return {"k": self.k, "v": self.v}

  def with_layers(self, layers: dict) -> "KVCache":
    return self.replace(k=tuple(layers["k"]), v=tuple(layers["v"]))

  def text_slot(self, text_index: jax.Array) -> jax.Array:
    """[B] committed text tokens -> [B] slot where the next text token is written."""
    return self.num_audio + text_index

  def text_positions(self, text_index: jax.Array, offsets: jax.Array) -> jax.Array:
    """Rotary positions [B, T] of new tokens at text_index + offsets ([T], e.g. tree depths)."""
    return self.prefix_len[:, None] + text_index[:, None] + offsets[None]

  def decode_mask(self, text_index: jax.Array, t: int, ancestors=None) -> jax.Array:
    """Mask of T new tokens written at slots P + text_index + [0, T) over the whole cache.

    A new token sees the valid audio slots, the committed text (slots < P + text_index)
    and, inside its own block, itself and what precedes it: causally (default), or its
    ancestors in a tree of drafts.

    Args:
      text_index: [B] committed text tokens per row.
      t: T, tokens in the block (static).
      ancestors: None (causal block) or [T, T] bool, ancestors[q, n]: node n is q or an
        ancestor of q.
    Returns:
      [B, T, S] bool, or [L, B, T, S] when `prefix_valid` is per layer.
    """
    p, s = self.num_audio, self.num_slots
    j = jnp.arange(s)
    rel = j[None] - self.text_slot(text_index)[:, None]               # [B, S]
    committed = (j[None] >= p) & (rel < 0)                            # [B, S]
    q = jnp.arange(t)[None, :, None]
    if ancestors is None:
      block = (rel[:, None, :] >= 0) & (rel[:, None, :] <= q)         # [B, T, S]
    else:
      in_block = (rel >= 0) & (rel < t)
      block = jnp.take(ancestors, jnp.clip(rel, 0, t - 1), axis=1)  # [T, B, S]
      block = jnp.transpose(block, (1, 0, 2)) & in_block[:, None, :]
    widths = ((0, 0),) * (self.prefix_valid.ndim - 1) + ((0, s - p),)
    audio = jnp.pad(self.prefix_valid, widths)[..., None, :]          # [(L,) B, 1, S]
    return audio | (committed[:, None, :] | block)

  # ------------------------------------------------------------------ row moves
  def gather_rows(self, index: jax.Array) -> "KVCache":
    """Rows `index` [R] of every field (beam search: a new beam takes its parent's cache)."""
    pv = self.prefix_valid
    h = self.num_kv_heads
    rows = (index[:, None] * h + jnp.arange(h)[None]).reshape(-1)
    return self.replace(k=tuple(a[rows] for a in self.k), v=tuple(a[rows] for a in self.v),
                        prefix_valid=pv[:, index] if pv.ndim == 3 else pv[index],
                        prefix_len=self.prefix_len[index])

  def repeat_rows(self, w: int) -> "KVCache":
    """Every row repeated `w` times in place ([B] -> [B * w], row b at b*w .. b*w+w-1)."""
    pv = self.prefix_valid
    h = self.num_kv_heads

    def rep(layers):
      return tuple(jnp.repeat(a.reshape((-1, h) + a.shape[1:]), w, axis=0).reshape(
          (-1,) + a.shape[1:]) for a in layers)
    return self.replace(k=rep(self.k), v=rep(self.v),
                        prefix_valid=jnp.repeat(pv, w, axis=pv.ndim - 2),
                        prefix_len=jnp.repeat(self.prefix_len, w, axis=0))

  def compact(self, text_index: jax.Array, path: jax.Array, size: int) -> "KVCache":
    """Moves text slots text_index + path[b, i] to text_index + i in every layer.

    After a tree call the accepted path's keys/values sit at scattered node slots;
    this puts them at consecutive slots, so the cache keeps `decode_step`'s layout.

    Args:
      text_index: [B] first slot of the tree block (as text index).
      path: [B, D] node index of the accepted path at each depth (root first).
      size: T, nodes in the block (the window [slot, slot + T) holds them).
    """
    start = self.text_slot(text_index)

    def row(c, s0, idx):  # c [H, S, D]
      win = jax.lax.dynamic_slice_in_dim(c, s0, size, axis=1)
      return jax.lax.dynamic_update_slice_in_dim(c, jnp.take(win, idx, axis=1), s0, axis=1)

    h = self.num_kv_heads

    def move(a):  # [B * H, S, D] -> per row [H, S, D]
      return jax.vmap(row)(a.reshape((-1, h) + a.shape[1:]), start, path).reshape(a.shape)
    return self.replace(k=tuple(move(a) for a in self.k), v=tuple(move(a) for a in self.v))
