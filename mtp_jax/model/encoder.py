"""Speech encoder: conv subsampling (x4) then Conformer blocks, honouring padding masks."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtp_jax.config import EncoderConfig
from mtp_jax.model.layers import ACT, apply_rope, constrain, dense, dot_product_attention, layer_norm


def _dense(n_in: int, n_out: int, bias: bool = False) -> int:
  return n_in * n_out + (n_out if bias else 0)


def block_params(e: EncoderConfig) -> int:
  """Exact parameter count of one ConformerBlock of width `e.d_model`."""
  d, f = e.d_model, e.d_model * e.ff_mult
  ffn = 2 * d + _dense(d, f, True) + _dense(f, d, True)  # LayerNorm + 2 dense
  mhsa = 2 * d + 4 * _dense(d, d, True)
  conv = 2 * d + _dense(d, 2 * d, True) + (e.conv_kernel * d + d) + 2 * d + _dense(d, d, True)
  return 2 * ffn + mhsa + conv + 2 * d


def num_params(cfg) -> int:
  """Exact parameter count of a ConformerEncoder for ModelConfig `cfg`."""
  e, fe = cfg.encoder, cfg.frontend
  c = e.subsampling_channels
  n = (9 * 1 * c + c) + (9 * c * c + c)  # two 3x3 convs
  n += _dense((fe.num_mels // 4) * c, e.d_model, True)
  return n + e.num_layers * block_params(e)


def flops_per_second(cfg) -> float:
  """Matmul FLOPs of the encoder for one second of audio (attention over a 1-s window)."""
  e, fe = cfg.encoder, cfg.frontend
  frames = 1000.0 / fe.hop_ms
  c, m = e.subsampling_channels, fe.num_mels
  conv = 2 * (frames / 2) * (m / 2) * 9 * c + 2 * (frames / 4) * (m / 4) * 9 * c * c
  t = frames / 4
  d = e.d_model
  layers = lambda n: dataclasses.replace(cfg, encoder=dataclasses.replace(e, num_layers=n))
  block = num_params(layers(1)) - num_params(layers(0))
  attn = 2 * 2 * t * t * d
  sub_out = 2 * t * (m // 4) * c * d
  return conv + sub_out + e.num_layers * (2 * t * block + attn)


def subsampled_length(length, factor: int = 4):
  """Length after `log2(factor)` stride-2 convs with padding 1 (ceil division each time)."""
  for _ in range(factor.bit_length() - 1):
    length = (length + 1) // 2
  return length


def output_length(num_frames):
  """Encoder frames for `num_frames` feature frames (x4 subsampling)."""
  return subsampled_length(num_frames, 4)


class ConvSubsampling(nn.Module):
  """Two stride-2 3x3 conv layers over (time, mel), then a projection to d_model."""
  cfg: EncoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, feats, feat_len):
    """feats [B, F, M] -> ([B, ceil(F/4), d], lengths [B])."""
    x = feats[..., None].astype(self.dtype)
    length = feat_len
    for i in range(2):
      x = nn.Conv(self.cfg.subsampling_channels, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                  dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv{i}",
                  kernel_init=nn.with_logical_partitioning(
                      nn.initializers.lecun_normal(), ("conv_kernel", None, "conv_in", "conv_out")),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)))(x)
      x = nn.relu(x)
      length = (length + 1) // 2
      valid = jnp.arange(x.shape[1])[None, :] < length[:, None]
      x = jnp.where(valid[:, :, None, None], x, 0.0)  # padded frames stay exactly zero
    b, t, m, c = x.shape
    x = x.reshape(b, t, m * c)
    x = dense(self.cfg.d_model, ("conv_in", "embed"), dtype=self.dtype,
              param_dtype=self.param_dtype, use_bias=True, name="out")(x)
    return x, length


class FeedForward(nn.Module):
  cfg: EncoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=True)
    y = layer_norm(self.dtype, self.param_dtype)(x)
    y = dense(self.cfg.d_model * self.cfg.ff_mult, ("embed", "mlp"), name="wi", **kw)(y)
    y = nn.silu(y)
    y = nn.Dropout(self.cfg.dropout)(y, deterministic=not train)
    y = dense(self.cfg.d_model, ("mlp", "embed"), name="wo", **kw)(y)
    return nn.Dropout(self.cfg.dropout)(y, deterministic=not train)


class SelfAttention(nn.Module):
  """Bidirectional multi-head self-attention with rotary positions and a key padding mask."""
  cfg: EncoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, valid, train: bool):
    c = self.cfg
    h, d = c.num_heads, c.d_model // c.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=True)
    y = layer_norm(self.dtype, self.param_dtype)(x)
    q = dense((h, d), ("embed", "heads", "head_dim"), name="q", **kw)(y)
    k = dense((h, d), ("embed", "heads", "head_dim"), name="k", **kw)(y)
    v = dense((h, d), ("embed", "heads", "head_dim"), name="v", **kw)(y)
    pos = jnp.broadcast_to(jnp.arange(x.shape[1])[None, :], x.shape[:2])
    q, k = apply_rope(q, pos, 10000.0), apply_rope(k, pos, 10000.0)
    mask = jnp.broadcast_to(valid[:, None, :], (x.shape[0], x.shape[1], x.shape[1]))
    o = dot_product_attention(q, k, v, mask)
    o = dense(c.d_model, ("heads", "head_dim", "embed"), axis=(-2, -1), name="o", **kw)(o)
    return nn.Dropout(c.dropout)(o, deterministic=not train)


class ConvModule(nn.Module):
  """Pointwise conv + GLU, depthwise conv over time, LayerNorm, Swish, pointwise conv.

  LayerNorm instead of BatchNorm keeps every row independent of the rest of the batch.
  """
  cfg: EncoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, valid, train: bool):
    c = self.cfg
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=True)
    y = layer_norm(self.dtype, self.param_dtype)(x)
    y = dense(2 * c.d_model, ("embed", "mlp"), name="pw_in", **kw)(y)
    y = nn.glu(y, axis=-1)
    y = jnp.where(valid[..., None], y, 0.0)
    y = nn.Conv(c.d_model, (c.conv_kernel,), feature_group_count=c.d_model,
                padding=((c.conv_kernel // 2, c.conv_kernel // 2),), name="depthwise",
                dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), ("conv_kernel", None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))(y)
    y = layer_norm(self.dtype, self.param_dtype, name="conv_norm")(y)
    y = nn.silu(y)
    y = dense(c.d_model, ("mlp", "embed"), name="pw_out", **kw)(y)
    return nn.Dropout(c.dropout)(y, deterministic=not train)


class ConformerBlock(nn.Module):
  """Half-step FFN, MHSA, conv module, half-step FFN, final LayerNorm."""
  cfg: EncoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, valid, train: bool):
    kw = dict(cfg=self.cfg, dtype=self.dtype, param_dtype=self.param_dtype)
    x = x + 0.5 * FeedForward(name="ff1", **kw)(x, train)
    x = x + SelfAttention(name="mhsa", **kw)(x, valid, train)
    x = x + ConvModule(name="conv", **kw)(x, valid, train)
    x = x + 0.5 * FeedForward(name="ff2", **kw)(x, train)
    x = layer_norm(self.dtype, self.param_dtype, name="out_norm")(x)
    x = jnp.where(valid[..., None], x, 0.0)
    return constrain(x, ACT)


class ConformerEncoder(nn.Module):
  """feats [B, F, M] -> (encoded [B, ceil(F/4), d], lengths [B])."""
  cfg: EncoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, feats, feat_len, train: bool = False):
    kw = dict(cfg=self.cfg, dtype=self.dtype, param_dtype=self.param_dtype)
    x, length = ConvSubsampling(name="subsampling", **kw)(feats, feat_len)
    valid = jnp.arange(x.shape[1])[None, :] < length[:, None]
    x = jnp.where(valid[..., None], x, 0.0)
    x = nn.Dropout(self.cfg.dropout)(x, deterministic=not train)
    for i in range(self.cfg.num_layers):
      x = ConformerBlock(name=f"block{i}", **kw)(x, valid, train)
    return x, length
