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


# ------------------------------------------------------------------ Whisper's frontend
def _slaney_hz_to_mel(f):
  f = np.asarray(f, np.float64)
  lin = f / (200.0 / 3)
  log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
  return np.where(f >= 1000.0, log, lin)


def _slaney_mel_to_hz(m):
  m = np.asarray(m, np.float64)
  lin = m * (200.0 / 3)
  log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
  return np.where(m >= 15.0, log, lin)


@functools.lru_cache(maxsize=8)
def slaney_mel_filterbank(sample_rate: int, n_fft: int, num_mels: int) -> np.ndarray:
  """Slaney-scale, Slaney-normalized mel filterbank (librosa's default, Whisper's),
  [n_fft // 2 + 1, num_mels] float32."""
  fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
  mel_f = _slaney_mel_to_hz(np.linspace(_slaney_hz_to_mel(0.0),
                                        _slaney_hz_to_mel(sample_rate / 2.0), num_mels + 2))
  fdiff = np.diff(mel_f)
  ramps = mel_f[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / fdiff[:-1, None]
  upper = ramps[2:] / fdiff[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))
  weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
  return weights.T.astype(np.float32)


def whisper_num_frames(num_samples, cfg: FrontendConfig):
  """Whisper's frame count: one per hop (a centred STFT with its last frame dropped)."""
  n = num_samples // cfg.hop_length
  return int(n) if isinstance(n, (int, np.integer)) else n


def whisper_log_mel(audio: jax.Array, audio_len: jax.Array, cfg: FrontendConfig):
  """Whisper's log-mel: centred STFT (n_fft 400, hop 160, periodic Hann), power,
  Slaney mel, log10 clamped at 1e-10, floored at the row's max - 8, (x + 4) / 4.

  Whisper pads every input with zeros to 30 s before its STFT, so a frame near the end
  of speech sees zeros after it: the STFT here reflects at the start and pads zeros at
  the end, and each row's max is over its own valid frames, so a row's features do not
  depend on how much padding its batch carries. Frames at and after `audio_len // hop` are set to 0.

  Args:
    audio: [B, S] float waveform at cfg.sample_rate (16 kHz), zero-padded.
    audio_len: [B] valid samples.
    cfg: frontend config (n_fft = win length = 400, hop 160 for Whisper).
  Returns:
    feats [B, S // hop, num_mels] float32, feat_len [B] int32.
  """
  b, s = audio.shape
  n_fft, hop = cfg.n_fft, cfg.hop_length
  half = n_fft // 2
  if s <= half:
    raise ValueError(f"audio of {s} samples is too short for Whisper's frontend (> {half})")
  x = audio.astype(jnp.float32)
  x = jnp.concatenate([x[:, 1:half + 1][:, ::-1], x, jnp.zeros((b, half), x.dtype)], axis=1)
  n_frames = s // hop
  idx = jnp.arange(n_frames)[:, None] * hop + jnp.arange(n_fft)[None, :]
  window = jnp.asarray(np.hanning(n_fft + 1)[:-1], jnp.float32)
  spec = jnp.fft.rfft(x[:, idx] * window, n=n_fft, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  fb = jnp.asarray(slaney_mel_filterbank(cfg.sample_rate, n_fft, cfg.num_mels))
  mel = jnp.dot(power, fb, precision=jax.lax.Precision.HIGHEST)
  log_spec = jnp.log10(jnp.maximum(mel, 1e-10))
  feat_len = (audio_len.astype(jnp.int32) // hop).astype(jnp.int32)
  valid = jnp.arange(n_frames)[None, :, None] < feat_len[:, None, None]
  row_max = jnp.max(jnp.where(valid, log_spec, -10.0), axis=(1, 2), keepdims=True)
  log_spec = jnp.maximum(log_spec, row_max - 8.0)
  feats = (log_spec + 4.0) / 4.0
  return jnp.where(valid, feats, 0.0), feat_len
