"""Whisper's audio encoder in flax.linen (OpenAI Whisper, any size).

Two-conv GELU stem (the second with stride 2: 100 -> 50 frames/s), sinusoidal positions,
pre-LayerNorm Transformer blocks (bidirectional attention, GELU MLP) and a final
LayerNorm. Weights come from Hugging Face or CTranslate2 checkpoints
(`mtp_jax.interop.whisper`). Unlike OpenAI's encoder, which always sees a 30-s window,
this one runs on the utterance's real length with a key padding mask (positions are
sliced), so a row's output does not depend on its batch's padding; `pad_to_window`
restores the 30-s behaviour.

Parameter names (shapes for d = d_model, H heads, M mels):
  conv1/{kernel [3, M, d], bias}, conv2/{kernel [3, d, d], bias}, pos_embed [P, d],
  block{i}/attn_norm, block{i}/{q,k,v} [d, H, d/H] (+bias, none on k),
  block{i}/o [H, d/H, d], block{i}/mlp_norm, block{i}/fc1 [d, 4d], fc2 [4d, d],
  final_norm.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.config import EncoderConfig
from mtp_jax.model.layers import ACT, TORCH_LN_EPS, constrain, dense, layer_norm


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
  """Whisper's fixed positional table [length, channels] (sin half, then cos half)."""
  inc = np.log(max_timescale) / (channels // 2 - 1)
  inv = np.exp(-inc * np.arange(channels // 2))
  t = np.arange(length)[:, None] * inv[None, :]
  return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def output_length(num_frames):
  """Encoder frames for `num_frames` mel frames: the stride-2 conv halves, rounding up."""
  return (num_frames + 1) // 2


def num_params(cfg) -> int:
  """Exact parameter count of a WhisperEncoder for ModelConfig `cfg`."""
  e, m = cfg.encoder, cfg.frontend.num_mels
  d, f = e.d_model, e.d_model * e.ff_mult
  stem = (3 * m * d + d) + (3 * d * d + d) + e.max_positions * d
  block = 2 * 2 * d + (4 * d * d + 3 * d) + (d * f + f) + (f * d + d)
  return stem + e.num_layers * block + 2 * d


def flops_per_second(cfg) -> float:
  """Matmul FLOPs of the encoder for one second of audio at its real length
  (attention over a 1-s window; `pad_to_window` costs the 30-s window instead)."""
  e, fe = cfg.encoder, cfg.frontend
  frames = fe.sample_rate / fe.hop_length
  t = output_length(frames)
  d, f = e.d_model, e.d_model * e.ff_mult
  stem = 2 * frames * 3 * fe.num_mels * d + 2 * t * 3 * d * d
  per_layer = 2 * t * (4 * d * d + 2 * d * f) + 2 * 2 * t * t * d
  total = stem + e.num_layers * per_layer
  if e.pad_to_window:
    window_s = 2 * e.max_positions * fe.hop_length / fe.sample_rate
    tw = e.max_positions
    total = (stem * window_s + e.num_layers * (2 * tw * (4 * d * d + 2 * d * f)
                                               + 2 * 2 * tw * tw * d)) / max(window_s, 1.0)
  return total


def _gelu(x):
  return nn.gelu(x, approximate=False)


class WhisperBlock(nn.Module):
  cfg: EncoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, valid, train: bool):
    c = self.cfg
    h, hd = c.num_heads, c.d_model // c.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = layer_norm(self.dtype, self.param_dtype, name="attn_norm", epsilon=TORCH_LN_EPS)(x)
    q = dense((h, hd), ("embed", "heads", "head_dim"), name="q", use_bias=True, **kw)(y)
    k = dense((h, hd), ("embed", "heads", "head_dim"), name="k", use_bias=False, **kw)(y)
    v = dense((h, hd), ("embed", "heads", "head_dim"), name="v", use_bias=True, **kw)(y)
    mask = valid[:, None, None, :]  # [B, 1, 1, T]: every query sees the valid keys
    o = jax.nn.dot_product_attention(q, k, v, mask=mask)
    o = dense(c.d_model, ("heads", "head_dim", "embed"), axis=(-2, -1), name="o",
              use_bias=True, **kw)(o)
    x = x + nn.Dropout(c.dropout)(o, deterministic=not train)
    y = layer_norm(self.dtype, self.param_dtype, name="mlp_norm", epsilon=TORCH_LN_EPS)(x)
    y = dense(c.d_model * c.ff_mult, ("embed", "mlp"), name="fc1", use_bias=True, **kw)(y)
    y = dense(c.d_model, ("mlp", "embed"), name="fc2", use_bias=True, **kw)(_gelu(y))
    x = x + nn.Dropout(c.dropout)(y, deterministic=not train)
    return constrain(x, ACT)


class WhisperEncoder(nn.Module):
  """feats [B, F, M] (Whisper log-mel, zero past each row's length) ->
  (frames [B, ceil(F/2), d] zero where invalid, lengths [B])."""
  cfg: EncoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, feats, feat_len, train: bool = False):
    c = self.cfg
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def conv(name, stride, axes):
      return nn.Conv(c.d_model, (3,), strides=(stride,), padding=((1, 1),), name=name,
                     kernel_init=nn.with_logical_partitioning(
                         nn.initializers.lecun_normal(), ("conv_kernel",) + axes),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                            axes[-1:]), **kw)

    f = feats.shape[1]
    frame_ok = jnp.arange(f)[None, :, None] < feat_len[:, None, None]
    x = jnp.where(frame_ok, _gelu(conv("conv1", 1, ("mel", "embed"))(feats.astype(self.dtype))),
                  0.0)  # past a row's end conv2 must see zeros, as on the unpadded row
    x = _gelu(conv("conv2", 2, ("conv_in", "embed"))(x))
    t = x.shape[1]
    if t > c.max_positions:
      raise ValueError(
          f"audio of {f} Whisper frames gives {t} encoder frames, more than "
          f"model.encoder.max_positions={c.max_positions} (30 s for Whisper); split it")
    length = output_length(feat_len).astype(jnp.int32)
    pos = self.param("pos_embed", nn.with_logical_partitioning(
        lambda *_: jnp.asarray(sinusoids(c.max_positions, c.d_model)), (None, "embed")),
        (c.max_positions, c.d_model), self.param_dtype)
    x = x + pos[:t].astype(x.dtype)[None]
    valid = jnp.arange(t)[None, :] < length[:, None]
    x = constrain(x, ACT)
    for i in range(c.num_layers):
      x = WhisperBlock(c, self.dtype, self.param_dtype, name=f"block{i}")(x, valid, train)
    x = layer_norm(self.dtype, self.param_dtype, name="final_norm", epsilon=TORCH_LN_EPS)(x)
    return jnp.where(valid[..., None], x, 0.0), length
