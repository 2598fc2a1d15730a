"""One synthetic utterance: its drawn parameters and how it is rendered.

`render` turns an `Utterance` into int16 samples: espeak-ng speech at 22050 Hz,
edge silence trimmed, resampled with soxr, peak-normalised to -3 dBFS, padded
with the planned silences, optional white/pink noise at the planned SNR.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import soxr

from mtp_jax.synth import espeak

NOISE_COLORS = ("white", "pink")
_PEAK = 10 ** (-3 / 20)   # clean speech is normalised to -3 dBFS peak
_CLIP = 0.999


@dataclasses.dataclass(frozen=True)
class Utterance:
  """Everything needed to render one utterance, drawn up front from the seed.

  Attributes:
    split: split name, e.g. "train".
    audio_filepath: FLAC path relative to the output folder.
    text: the sentence spoken (and the transcript).
    accent: espeak voice, e.g. "en-us".
    variant: espeak voice variant, e.g. "f3".
    rate: words per minute.
    pitch: espeak base pitch 0..99.
    intonation: espeak pitch range 0..99.
    lead_silence: seconds of silence kept before the speech.
    trail_silence: seconds of silence kept after the speech.
    snr_db: speech-to-noise ratio in dB, or None for clean audio.
    noise_color: "white" or "pink" (used when snr_db is set).
    noise_seed: seed of the noise generator.
    espeak_seed: seed of espeak's own noise generator (breathy variants).
  """
  split: str
  audio_filepath: str
  text: str
  accent: str
  variant: str
  rate: int
  pitch: int
  intonation: int
  lead_silence: float
  trail_silence: float
  snr_db: float | None
  noise_color: str
  noise_seed: int
  espeak_seed: int

  @property
  def speaker(self) -> str:
    return f"{self.accent}+{self.variant}_r{self.rate}_p{self.pitch}"




def trim_silence(wave: np.ndarray, sample_rate: int, threshold_db: float = -45.0,
                 margin_s: float = 0.01) -> np.ndarray:
  """Cuts leading/trailing silence: frames (10 ms) quieter than threshold_db below
  the loudest frame; keeps `margin_s` around the speech. Inner pauses stay."""
  frame = max(1, sample_rate // 100)
  n = len(wave) // frame
  if n == 0:
    return wave
  rms = np.sqrt(np.mean(np.square(wave[:n * frame].reshape(n, frame)), axis=1))
  loud = np.nonzero(rms > rms.max() * 10 ** (threshold_db / 20))[0]
  if loud.size == 0:
    return wave[:0]
  margin = int(margin_s * sample_rate)
  return wave[max(0, loud[0] * frame - margin):min(len(wave), (loud[-1] + 1) * frame + margin)]


def colored_noise(num_samples: int, color: str, seed: int) -> np.ndarray:
  """Unit-power Gaussian noise: "white" (flat) or "pink" (power ~ 1/f)."""
  rng = np.random.default_rng(seed)
  noise = rng.standard_normal(num_samples)
  if color == "pink" and num_samples > 2:
    spec = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(num_samples)
    scale = np.zeros_like(freqs)
    scale[1:] = 1 / np.sqrt(freqs[1:])
    noise = np.fft.irfft(spec * scale, num_samples)
  elif color not in NOISE_COLORS:
    raise ValueError(f"noise color {color!r} unknown; valid: {', '.join(NOISE_COLORS)}")
  power = np.mean(np.square(noise))
  return (noise / np.sqrt(power) if power > 0 else noise).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, color: str, seed: int,
              signal_power: float | None = None) -> np.ndarray:
  """Adds noise so that signal_power / noise_power = 10**(snr_db / 10).

  Args:
    wave: float waveform.
    snr_db: the ratio in dB.
    color: "white" or "pink".
    seed: noise seed.
    signal_power: reference power (default: mean square of `wave`); the corpus
      uses the power of the speech without the added silences.
  """
  power = float(np.mean(np.square(wave))) if signal_power is None else signal_power
  noise = colored_noise(len(wave), color, seed)
  return (wave + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def render(utt: Utterance, sample_rate: int = 16000) -> np.ndarray:
  """Synthesizes one planned utterance as int16 samples at `sample_rate`."""
  wave = espeak.synthesize(utt.text, accent=utt.accent, variant=utt.variant,
                           rate=utt.rate, pitch=utt.pitch, range=utt.intonation,
                           seed=utt.espeak_seed)
  speech = trim_silence(wave, espeak.NATIVE_SAMPLE_RATE)
  if speech.size == 0 or not np.any(speech):
    raise ValueError(f"espeak produced no audio for {utt.text!r} ({utt.speaker})")
  if sample_rate != espeak.NATIVE_SAMPLE_RATE:
    speech = soxr.resample(speech, espeak.NATIVE_SAMPLE_RATE, sample_rate, quality="HQ")
  speech = (speech * (_PEAK / np.max(np.abs(speech)))).astype(np.float32)
  x = np.concatenate([np.zeros(round(utt.lead_silence * sample_rate), np.float32),
                      speech,
                      np.zeros(round(utt.trail_silence * sample_rate), np.float32)])
  if utt.snr_db is not None:
    x = add_noise(x, utt.snr_db, utt.noise_color, utt.noise_seed,
                  signal_power=float(np.mean(np.square(speech))))
  peak = float(np.max(np.abs(x)))
  if peak > _CLIP:
    x *= _CLIP / peak
  return np.round(x * 32767).astype(np.int16)
