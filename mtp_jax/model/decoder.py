"""LLaMA-style decoder stack (RMSNorm, RoPE, SwiGLU, grouped-query attention) with a KV cache.

The stack reads and returns the cache's keys/values as {"k", "v"}: L arrays
[B * Hkv, S, D] (the layout, masks and row moves are `mtp_jax.model.kv_cache.KVCache`'s). After a
prefill with audio-token reduction each layer holds a different number of valid audio
slots; decode then passes a per-layer attention mask [L, B, T, S].
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtp_jax.config import DecoderConfig, ModelConfig
from mtp_jax.model.kv_cache import causal_mask, write_slots
from mtp_jax.model.layers import ACT, RMSNorm, apply_rope, constrain, dense, dot_product_attention, dtype_of


class Attention(nn.Module):
  """Causal GQA self-attention; with a cache it writes new keys/values, then attends over it."""
  cfg: DecoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, positions, mask, cache=None, write_index=None, attend_cache=True,
               return_aux=False):
    """Self-attention; with `return_aux` (no cache) also returns a dict of the layer's
    pre-rotary keys "k_raw", rotated keys "k", values "v" ([B, T, Hkv, D]) and
    attention probabilities "probs" [B, Hkv, G, T, T] (for token reduction)."""
    c = self.cfg
    h, hkv, d = c.num_heads, c.num_kv_heads, c.head_dim
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q = dense((h, d), ("embed", "heads", "head_dim"), name="q", **kw)(x)
    k = dense((hkv, d), ("embed", "kv_heads", "head_dim"), name="k", **kw)(x)
    v = dense((hkv, d), ("embed", "kv_heads", "head_dim"), name="v", **kw)(x)
    k_raw = k
    q = apply_rope(q, positions, c.rope_theta)
    k = apply_rope(k, positions, c.rope_theta)
    q = constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
    new_cache, heads_first = None, False
    if cache is not None:
      new_cache = {"k": write_slots(cache["k"], k, write_index),
                   "v": write_slots(cache["v"], v, write_index)}
      if attend_cache:
        k, v = new_cache["k"].astype(self.dtype), new_cache["v"].astype(self.dtype)
        heads_first = True
    if return_aux:
      o, probs = dot_product_attention(q, k, v, mask, return_probs=True)
      o = dense(c.d_model, ("heads", "head_dim", "embed"), axis=(-2, -1), name="o", **kw)(o)
      return o, new_cache, {"k_raw": k_raw, "k": k, "v": v, "probs": probs}
    o = dot_product_attention(q, k, v, mask, heads_first=heads_first)
    o = dense(c.d_model, ("heads", "head_dim", "embed"), axis=(-2, -1), name="o", **kw)(o)
    return o, new_cache


class SwiGLU(nn.Module):
  cfg: DecoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    gate = dense(self.cfg.ff_dim, ("embed", "mlp"), name="wi_gate", **kw)(x)
    up = dense(self.cfg.ff_dim, ("embed", "mlp"), name="wi_up", **kw)(x)
    y = nn.silu(gate) * up
    y = constrain(y, ("activation_batch", "activation_length", "activation_mlp"))
    return dense(self.cfg.d_model, ("mlp", "embed"), name="wo", **kw)(y)


class DecoderLayer(nn.Module):
  """Pre-norm block: x + Attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x))."""
  cfg: DecoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  deterministic: bool = True
  attend_cache: bool = True

  @nn.compact
  def __call__(self, x, positions, mask, cache=None, write_index=None, reduce=None):
    """One block; `reduce(x, aux) -> x'` (prefill token reduction, no cache) runs
    between attention and the MLP and then the layer returns (x, aux)."""
    c = self.cfg
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if reduce is not None:
      y = RMSNorm(c.norm_eps, name="attn_norm", **kw)(x)
      y, _, aux = Attention(c, name="attn", **kw)(y, positions, mask, return_aux=True)
      x = reduce(x + nn.Dropout(c.dropout)(y, deterministic=self.deterministic), aux)
      y = RMSNorm(c.norm_eps, name="mlp_norm", **kw)(x)
      y = SwiGLU(c, name="mlp", **kw)(y)
      x = x + nn.Dropout(c.dropout)(y, deterministic=self.deterministic)
      return constrain(x, ACT), aux
    y = RMSNorm(c.norm_eps, name="attn_norm", **kw)(x)
    y, new_cache = Attention(c, name="attn", **kw)(y, positions, mask, cache, write_index,
                                                   self.attend_cache)
    x = x + nn.Dropout(c.dropout)(y, deterministic=self.deterministic)
    y = RMSNorm(c.norm_eps, name="mlp_norm", **kw)(x)
    y = SwiGLU(c, name="mlp", **kw)(y)
    x = x + nn.Dropout(c.dropout)(y, deterministic=self.deterministic)
    return constrain(x, ACT), new_cache


def _remat_policy(name: str):
  return {
      "full": None,
      "dots": jax.checkpoint_policies.checkpoint_dots,
      "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  }[name]


class DecoderStack(nn.Module):
  """All decoder layers, optionally as one `nn.scan` (params stacked on a 'layers' axis)."""
  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, positions, mask, cache=None, write_index=None, attend_cache=True,
               reduction=None, num_audio: int = 0):
    """Runs the stack (`num_audio`, the audio tokens leading x, is unused: they are a
    causal prefix like the text).

    Args:
      x: [B, T, d] input embeddings.
      positions: [B, T] rotary positions.
      mask: [B, T, T] (no cache, or attend_cache=False) or [B, T, S] attention mask,
        or [L, B, T, S] (one per layer: a cache whose layers hold different numbers of
        valid audio slots after prefill token reduction).
      cache: None or {"k", "v"}: L arrays [B * Hkv, S, D] each (`KVCache.layers`).
      write_index: [B] slot where the T new keys/values are written.
      attend_cache: attend over the whole cache (decode) or only the new tokens
        (prefill, where the mask is [B, T, T]).
      reduction: None, or (reducer, audio_valid [B, P], audio_len [B]) for a prefill
        with audio-token reduction (see `reduced_prefill`); then the return value is
        that of `reduced_prefill`.
    Returns:
      (hidden [B, T, d] before the final norm, new cache or None)
    """
    del num_audio
    mc, c = self.cfg, self.cfg.decoder
    dtype, pdtype = dtype_of(mc.dtype), dtype_of(mc.param_dtype)
    layer_cls = DecoderLayer
    if mc.remat_policy != "none":
      layer_cls = nn.remat(DecoderLayer, policy=_remat_policy(mc.remat_policy),
                           static_argnums=())
    kw = dict(cfg=c, dtype=dtype, param_dtype=pdtype, deterministic=self.deterministic,
              attend_cache=attend_cache)
    per_layer_mask = mask.ndim == 4
    if reduction is not None:
      if mc.scan_layers:
        stacked = nn.unbox(self.variables["params"]["layers"])
        def run_layer(i, *args, **kwargs):
          p = jax.tree_util.tree_map(lambda a: a[i], stacked)
          return DecoderLayer(**kw).apply({"params": p}, *args, **kwargs)
      else:
        def run_layer(i, *args, **kwargs):
          return DecoderLayer(name=f"layer{i}", **kw)(*args, **kwargs)
      return reduced_prefill(run_layer, c.num_layers, x, positions, cache, *reduction)
    if mc.scan_layers:
      scanned = nn.scan(
          layer_cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, 0 if per_layer_mask else nn.broadcast, 0, nn.broadcast),
          length=c.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      stacked = None if cache is None else {n: jnp.stack(cache[n]) for n in ("k", "v")}
      x, new_cache = scanned(name="layers", **kw)(x, positions, mask, stacked, write_index)
      if new_cache is not None:  # back to one buffer per layer (KVCache's layout)
        new_cache = {n: tuple(new_cache[n]) for n in ("k", "v")}
      return x, new_cache
    new_k, new_v = [], []
    for i in range(c.num_layers):
      layer_cache = None if cache is None else {"k": cache["k"][i], "v": cache["v"][i]}
      layer_mask = mask[i] if per_layer_mask else mask
      x, nc = layer_cls(name=f"layer{i}", **kw)(x, positions, layer_mask, layer_cache,
                                                 write_index)
      if nc is not None:
        new_k.append(nc["k"])
        new_v.append(nc["v"])
    new_cache = None if cache is None else {"k": tuple(new_k), "v": tuple(new_v)}
    return x, new_cache


def reduced_prefill(run_layer, num_layers: int, x, positions, cache, reducer, audio_valid,
                    audio_len):
  """Prefill through the stack with audio-token reduction (mtp_jax/model/reduction_ops.py).

  The sequence is `[P audio tokens][T0 text tokens]`; layer l removes
  `reducer.merges[l]` audio tokens after its attention, so layer l runs attention on
  P_l + T0 tokens and its MLP on P_{l+1} + T0 (static shapes per layer).

  Args:
    run_layer: (layer index, *DecoderLayer args, **kwargs) -> DecoderLayer output.
    num_layers: L.
    x: [B, P + T0, d] embeddings; positions: [B, P + T0] rotary positions.
    cache: {"k", "v"}: L zero arrays [B * Hkv, S, D] each, S >= P + T0.
    reducer: a `reduction_ops.Reducer` (static plan).
    audio_valid: [B, P] valid audio tokens; audio_len: [B] their count.
  Returns:
    (hidden [B, T0, d] of the text tokens before the final norm,
     cache {"k", "v"} with layer l's valid audio keys compacted to slots [0, valid_l)
     and its text keys at [P, P + T0),
     prefix_valid [L, B, P] valid audio slots per layer).
  """
  b, n_all, _ = x.shape
  p = reducer.num_audio
  t0 = n_all - p
  positions = positions.astype(jnp.float32)
  valid = audio_valid
  ks, vs, pv = [], [], []
  for i in range(num_layers):
    p_l = valid.shape[1]
    mask = causal_mask(jnp.concatenate([valid, jnp.ones((b, t0), bool)], axis=1))
    state = {}

    def reduce(h, aux, i=i, p_l=p_l, valid=valid, positions=positions, state=state):
      xa, va, pa = reducer(i, h[:, :p_l], aux["k_raw"][:, :p_l], aux["probs"], valid,
                           positions[:, :p_l], audio_len)
      state["valid"] = va
      state["positions"] = jnp.concatenate([pa, positions[:, p_l:]], axis=1)
      return jnp.concatenate([xa, h[:, p_l:]], axis=1)

    x, aux = run_layer(i, x, positions, mask, reduce=reduce)
    pad = ((0, 0), (0, p - p_l), (0, 0), (0, 0))
    for name, out in (("k", ks), ("v", vs)):
      kv = aux[name]
      audio_part = jnp.pad(kv[:, :p_l], pad)
      out.append(write_slots(cache[name][i], jnp.concatenate([audio_part, kv[:, p_l:]], axis=1),
                             jnp.zeros((b,), jnp.int32)))
    pv.append(jnp.pad(valid, ((0, 0), (0, p - p_l))))
    valid, positions = state["valid"], state["positions"]
  return x[:, -t0:], {"k": tuple(ks), "v": tuple(vs)}, jnp.stack(pv)
