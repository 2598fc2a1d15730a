"""Log-mel frontend in JAX: framing, FFT, mel filterbank, padding-aware normalization, SpecAugment.

Features are computed on device inside the jitted step, so the data pipeline only
delivers waveforms and the host CPU never becomes the bottleneck.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.config import FrontendConfig


def _hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
  return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, num_mels: int) -> np.ndarray:
  """HTK-style triangular mel filterbank, [n_fft // 2 + 1, num_mels], float32."""
  n_bins = n_fft // 2 + 1
  fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_bins)
  mel_pts = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), num_mels + 2)
  hz = _mel_to_hz(mel_pts)
  lower, center, upper = hz[:-2], hz[1:-1], hz[2:]
  f = fft_freqs[:, None]
  up = (f - lower) / np.maximum(center - lower, 1e-9)
  down = (upper - f) / np.maximum(upper - center, 1e-9)
  fb = np.maximum(0.0, np.minimum(up, down))
  return fb.astype(np.float32)


def num_frames(num_samples, cfg: FrontendConfig):
  """Frames produced for `num_samples` samples (no centre padding). Works on ints and arrays."""
  n = (num_samples - cfg.win_length) // cfg.hop_length + 1
  if isinstance(n, (int, np.integer)):
    return max(int(n), 0)
  return jnp.maximum(n, 0)


def log_mel_raw(audio: jax.Array, cfg: FrontendConfig) -> jax.Array:
  """Unnormalized log-mel energies, [B, S] -> [B, F, num_mels] float32."""
  b, s = audio.shape
  n_frames = num_frames(s, cfg)
  if n_frames <= 0:
    raise ValueError(f"audio of {s} samples is shorter than one window ({cfg.win_length})")
  idx = jnp.arange(n_frames)[:, None] * cfg.hop_length + jnp.arange(cfg.win_length)[None, :]
  frames = audio.astype(jnp.float32)[:, idx]  # [B, F, W]
  frames = frames - jnp.mean(frames, axis=-1, keepdims=True)  # remove DC per frame
  window = jnp.asarray(np.hanning(cfg.win_length + 1)[:-1], jnp.float32)
  spec = jnp.fft.rfft(frames * window, n=cfg.n_fft, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  fb = jnp.asarray(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.num_mels))
  return jnp.log(jnp.dot(power, fb, precision=jax.lax.Precision.HIGHEST) + 1e-6)


def log_mel(audio: jax.Array, audio_len: jax.Array, cfg: FrontendConfig):
  """Log-mel features, normalized per utterance and mel bin over valid frames.

  Args:
    audio: [B, S] float waveform at cfg.sample_rate, zero-padded.
    audio_len: [B] valid samples.
    cfg: frontend config.
  Returns:
    feats: [B, F, num_mels] float32, zero on padded frames.
    feat_len: [B] int32 valid frames.
  """
  mel = log_mel_raw(audio, cfg)
  n_frames = mel.shape[1]
  feat_len = num_frames(audio_len.astype(jnp.int32), cfg).astype(jnp.int32)
  valid = (jnp.arange(n_frames)[None, :] < feat_len[:, None])[..., None]  # [B, F, 1]
  count = jnp.maximum(feat_len, 1).astype(jnp.float32)[:, None, None]
  mean = jnp.sum(jnp.where(valid, mel, 0.0), axis=1, keepdims=True) / count
  var = jnp.sum(jnp.where(valid, (mel - mean) ** 2, 0.0), axis=1, keepdims=True) / count
  feats = (mel - mean) * jax.lax.rsqrt(var + 1e-5)
  return jnp.where(valid, feats, 0.0), feat_len


def spec_augment(rng: jax.Array, feats: jax.Array, feat_len: jax.Array, cfg: FrontendConfig):
  """SpecAugment: frequency and time masks (zeros, the normalized mean), per utterance.

  Args:
    rng: PRNG key.
    feats: [B, F, M] normalized features.
    feat_len: [B] valid frames; time masks scale with each row's length.
  Returns:
    [B, F, M] masked features.
  """
  b, f, m = feats.shape
  keep = jnp.ones((b, f, m), bool)
  kf, kt = jax.random.split(rng)
  if cfg.freq_masks > 0 and cfg.freq_mask_width > 0:
    k1, k2 = jax.random.split(kf)
    width = jax.random.randint(k1, (b, cfg.freq_masks), 0, cfg.freq_mask_width + 1)
    start = jax.random.uniform(k2, (b, cfg.freq_masks)) * jnp.maximum(m - width, 0)
    start = start.astype(jnp.int32)
    bins = jnp.arange(m)[None, None, :]
    hit = (bins >= start[..., None]) & (bins < (start + width)[..., None])  # [B, n, M]
    keep &= ~jnp.any(hit, axis=1)[:, None, :]
  if cfg.time_masks > 0 and cfg.time_mask_ratio > 0:
    k1, k2 = jax.random.split(kt)
    max_w = jnp.floor(feat_len.astype(jnp.float32) * cfg.time_mask_ratio)[:, None]
    width = (jax.random.uniform(k1, (b, cfg.time_masks)) * (max_w + 1)).astype(jnp.int32)
    start = (jax.random.uniform(k2, (b, cfg.time_masks)) *
             jnp.maximum(feat_len[:, None] - width, 0)).astype(jnp.int32)
    t = jnp.arange(f)[None, None, :]
    hit = (t >= start[..., None]) & (t < (start + width)[..., None])  # [B, n, F]
    keep &= ~jnp.any(hit, axis=1)[:, :, None]
  return jnp.where(keep, feats, 0.0)
