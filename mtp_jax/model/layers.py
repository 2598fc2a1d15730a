"""Shared building blocks: annotated dense layers, norms, rotary positions, attention.

Every parameter is created through `nn.with_logical_partitioning` so that the
sharding rules in `mtp_jax/sharding.py` apply to it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype
Array = jax.Array

NEG_INF = -1e30  # large finite negative: softmax of an all-masked row stays finite
# Logical axes of a [batch, length, d_model] activation (`constrain`).
ACT = ("activation_batch", "activation_length", "activation_embed")


def dtype_of(name: str) -> Dtype:
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]


def constrain(x: Array, axes: Sequence[str | None]) -> Array:
  """Constrains an activation's sharding by logical axis names."""
  return nn.with_logical_constraint(x, tuple(axes))


class _FlatSafePartitioned(nn.LogicallyPartitioned):
  """Logical partitioning that tolerates DenseGeneral's flattened init.

  `nn.DenseGeneral` calls its kernel/bias init on a flattened 2-D shape and reshapes
  the boxed value afterwards; unboxing the flat value under a mesh would apply an
  N-name constraint to a 2-D array. The constraint is applied only when ranks agree.
  """

  def unbox(self, apply_constraint=True):
    return super().unbox(apply_constraint and self.value.ndim == len(self.names))


def _partitioned(init: Callable, names: tuple) -> Callable:
  def wrapped(*args, **kwargs):
    return _FlatSafePartitioned(init(*args, **kwargs), names)
  return wrapped


def dense(features, axes: Sequence[str | None], *, dtype, param_dtype, use_bias: bool = False,
          name: str | None = None, axis: int | Sequence[int] = -1,
          kernel_init: Callable = nn.initializers.lecun_normal()) -> nn.DenseGeneral:
  """A DenseGeneral whose kernel (and bias) carry logical axis names.

  Args:
    features: output features (int or tuple).
    axes: logical names for every kernel dimension (inputs then outputs).
  """
  n_out = 1 if isinstance(features, int) else len(features)
  bias_axes = tuple(axes[-n_out:])
  return nn.DenseGeneral(
      features=features, axis=axis, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=_partitioned(kernel_init, tuple(axes)),
      bias_init=_partitioned(nn.initializers.zeros_init(), bias_axes),
      name=name)


class RMSNorm(nn.Module):
  """Root-mean-square layer norm (LLaMA)."""
  eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                       (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


# torch's LayerNorm eps, which every Whisper checkpoint was trained with (flax's default
# is 1e-6: with it imported Whisper weights drift ~1% from the reference).
TORCH_LN_EPS = 1e-5


def layer_norm(dtype, param_dtype, name=None, epsilon: float = 1e-6) -> nn.LayerNorm:
  """LayerNorm with scale and bias (flax's eps unless given: Whisper's modules pass
  `TORCH_LN_EPS`)."""
  return nn.LayerNorm(
      epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)))


def apply_rope(x: Array, positions: Array, theta: float) -> Array:
  """Rotary position embedding (half-split convention).

  Args:
    x: [B, T, H, D] queries or keys.
    positions: [B, T] integer or float positions.
    theta: base wavelength.
  Returns:
    [B, T, H, D] rotated, in x's dtype.
  """
  d = x.shape[-1]
  half = d // 2
  freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))
  ang = positions.astype(jnp.float32)[..., None] * freq  # [B, T, half]
  sin = jnp.sin(ang)[:, :, None, :]
  cos = jnp.cos(ang)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = xf[..., :half], xf[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array,
                          return_probs: bool = False, heads_first: bool = False):
  """Grouped-query attention with a boolean mask.

  Args:
    q: [B, T, H, D] queries.
    k: [B, S, Hkv, D] keys, or [B * Hkv, S, D] with `heads_first` (the KV cache's
      layout); H must be a multiple of Hkv.
    v: values, laid out as k.
    mask: [B, T, S] True where query t may attend key s.
    return_probs: also return the attention probabilities [B, Hkv, G, T, S].
    heads_first: k and v are [B * Hkv, S, D].
  Returns:
    [B, T, H, D] outputs (and probabilities when asked).
  """
  b, t, h, d = q.shape
  if heads_first:
    if return_probs:
      raise ValueError("return_probs needs keys laid out [B, S, Hkv, D]")
    return _attend_heads_first(q, k, v, mask)
  hkv = k.shape[2]
  g = h // hkv
  qg = q.reshape(b, t, hkv, g, d)
  logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
  probs = _masked_softmax(logits, mask, d)
  out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v)
  out = out.reshape(b, t, h, d)
  return (out, probs) if return_probs else out


def _masked_softmax(logits: Array, mask: Array, head_dim: int) -> Array:
  """Softmax of raw scores [B, Hkv, G, T, S] scaled by 1/sqrt(head_dim), over the keys
  `mask` [B, T, S] allows; a query with no valid key gets all-zero probabilities."""
  m = mask[:, None, None, :, :]
  logits = jnp.where(m, logits / jnp.sqrt(jnp.float32(head_dim)), NEG_INF)
  return jnp.where(m, jax.nn.softmax(logits, axis=-1), 0.0)


def _attend_heads_first(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """`dot_product_attention` over keys/values [B * Hkv, S, D] (the KV cache's layout).

  Both matmuls take the cache as it lies, one batch axis: the scores are computed
  keys-major ([S, G*T] per (row, head): the keys are the left operand, contracted over
  D), and the values are contracted over S; only the few queries are transposed. With
  queries-major scores XLA:CPU transposed every layer's keys on every decoding step."""
  b, t, h, d = q.shape
  hkv = k.shape[0] // b
  g = h // hkv
  qh = q.reshape(b, t, hkv, g, d).transpose(0, 2, 3, 1, 4).reshape(b * hkv, g * t, d)
  logits = jax.lax.dot_general(k, qh, (((2,), (2,)), ((0,), (0,))),
                               preferred_element_type=jnp.float32)          # [BH, S, G*T]
  # The scores (few: S x G*T per row and head) to queries-major, so the softmax
  # reduces over the last axis.
  probs = _masked_softmax(jnp.swapaxes(logits, 1, 2).reshape(b, hkv, g, t, -1), mask, d)
  out = jax.lax.dot_general(probs.reshape(b * hkv, g * t, -1).astype(v.dtype), v,
                            (((2,), (1,)), ((0,), (0,))))
  return out.reshape(b, hkv, g, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
