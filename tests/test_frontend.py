"""Log-mel frontend and SpecAugment."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.config import FrontendConfig
from mtp_jax.model import frontend

CFG = FrontendConfig()


def tone(freq, seconds=1.0, sr=16000, seed=0):
  t = np.arange(int(seconds * sr)) / sr
  noise = np.random.default_rng(seed).normal(scale=1e-3, size=t.shape)
  return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def mel_center_bin(freq):
  fb = frontend.mel_filterbank(CFG.sample_rate, CFG.n_fft, CFG.num_mels)
  bin_idx = int(round(freq / (CFG.sample_rate / 2) * (CFG.n_fft // 2)))
  return int(np.argmax(fb[bin_idx]))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3500.0])
def test_tone_peaks_at_its_mel_bin(freq):
  x = tone(freq)[None]
  mel = frontend.log_mel_raw(jnp.asarray(x), CFG)
  assert mel.shape == (1, 98, 80)
  peak = np.argmax(np.asarray(mel[0]), axis=-1)
  assert np.all(np.abs(peak - mel_center_bin(freq)) <= 1)


def test_frame_count_and_padding_invariance():
  x = tone(440.0, 0.7)
  n = x.shape[0]
  assert frontend.num_frames(n, CFG) == (n - 400) // 160 + 1
  a, la = frontend.log_mel(jnp.asarray(x[None]), jnp.array([n]), CFG)
  padded = np.pad(x, (0, 5000))[None]
  b, lb = frontend.log_mel(jnp.asarray(padded), jnp.array([n]), CFG)
  assert int(la[0]) == int(lb[0]) == a.shape[1]
  np.testing.assert_allclose(b[0, :a.shape[1]], a[0], atol=1e-4)
  assert float(jnp.abs(b[0, a.shape[1]:]).max()) == 0.0
  # Valid frames are normalized: zero mean, unit variance per bin.
  np.testing.assert_allclose(np.asarray(a[0]).mean(0), 0.0, atol=1e-3)
  assert np.all(np.asarray(a[0]).std(0) <= 1.0 + 1e-3)  # unit variance, damped by eps


def test_spec_augment_masks_within_limits():
  feats = jnp.ones((3, 200, 80))
  lens = jnp.array([200, 120, 50])
  out = frontend.spec_augment(jax.random.PRNGKey(0), feats, lens, CFG)
  masked_bins = np.asarray(jnp.all(out == 0, axis=1))  # [B, M] bins masked on every frame
  assert masked_bins.sum(1).max() <= CFG.freq_masks * CFG.freq_mask_width
  masked_frames = np.asarray(jnp.all(out == 0, axis=2))  # [B, F]
  for i, n in enumerate([200, 120, 50]):
    limit = CFG.time_masks * int(n * CFG.time_mask_ratio)
    assert masked_frames[i].sum() <= limit + masked_bins[i].all() * 200
  other = frontend.spec_augment(jax.random.PRNGKey(1), feats, lens, CFG)
  assert not np.array_equal(np.asarray(out), np.asarray(other))
