"""Reading and validating audio: any soundfile format -> mono float32 at 16 kHz.

Two levels of checks, both raising `BadInputError(manifest, line, reason)`:

* `check_header` (cheap, reads only the header): missing file, unreadable or
  corrupt header, zero length, manifest duration far from the real one,
  too long / too short.
* `load_audio` (decodes): corrupt payload, NaN/inf samples, zero length.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import soundfile
import soxr

from mtp_jax.data.errors import BadInputError

SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class AudioInfo:
  """What the audio header says.

  Attributes:
    frames: number of frames (samples per channel) at `sample_rate`.
    sample_rate: the file's sample rate in Hz.
    channels: number of channels.
  """
  frames: int
  sample_rate: int
  channels: int

  @property
  def duration(self) -> float:
    """Duration in seconds."""
    return self.frames / self.sample_rate

  def num_samples(self, target_rate: int = SAMPLE_RATE) -> int:
    """Upper bound of the sample count after resampling to `target_rate`."""
    if self.sample_rate == target_rate:
      return self.frames
    return math.ceil(self.frames * target_rate / self.sample_rate)


def read_info(path: str, manifest: str = "", line: int = 0) -> AudioInfo:
  """Reads the audio header.

  Raises:
    BadInputError: the file is missing or its header is not readable audio.
  """
  if not os.path.isfile(path):
    raise BadInputError(manifest, line, f"audio file not found: {path}")
  try:
    info = soundfile.info(path)
  except Exception as e:  # libsndfile reports many kinds of corruption.
    raise BadInputError(manifest, line,
                        f"corrupt or unsupported audio file {path}: {e}") from e
  return AudioInfo(frames=int(info.frames), sample_rate=int(info.samplerate),
                   channels=int(info.channels))


def check_header(path: str, manifest_duration: float, *, manifest: str = "",
                 line: int = 0, max_duration: float = math.inf,
                 min_duration: float = 0.0, tolerance_s: float = 0.5,
                 tolerance_frac: float = 0.1) -> AudioInfo:
  """Validates an utterance from its header, without decoding it.

  Args:
    path: the audio file.
    manifest_duration: the duration the manifest states, in seconds.
    manifest: manifest path, for messages.
    line: 1-based manifest line, for messages.
    max_duration: longest allowed duration in seconds (the largest bucket).
    min_duration: shortest allowed duration in seconds.
    tolerance_s: allowed |manifest - real| duration difference in seconds ...
    tolerance_frac: ... or this fraction of the real duration, whichever is larger.

  Returns:
    The header information.

  Raises:
    BadInputError: missing, corrupt, zero-length, wrong duration, too long or
      too short (the message names manifest, line and the file).
  """
  info = read_info(path, manifest, line)
  if info.frames <= 0:
    raise BadInputError(manifest, line, f"zero-length audio: {path}")
  real = info.duration
  if abs(manifest_duration - real) > max(tolerance_s, tolerance_frac * real):
    raise BadInputError(
        manifest, line,
        f"manifest duration {manifest_duration:.3f} s is far from the real "
        f"duration {real:.3f} s of {path}")
  if real > max_duration:
    raise BadInputError(
        manifest, line, f"audio is {real:.2f} s, longer than the largest "
        f"bucket ({max_duration:.2f} s): {path}")
  if real < min_duration:
    raise BadInputError(manifest, line, f"audio is {real:.3f} s, shorter than "
                        f"min_duration {min_duration:.3f} s: {path}")
  return info


def resample(audio: np.ndarray, rate: int,
             target_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Resamples a mono waveform with soxr (high quality).

  Args:
    audio: float32 [T] waveform at `rate` Hz.
    rate: its sample rate.
    target_rate: the wanted rate.

  Returns:
    float32 [round(T * target_rate / rate)].
  """
  if rate == target_rate:
    return audio
  return soxr.resample(audio, rate, target_rate, quality="HQ").astype(np.float32)


def load_audio(path: str, *, manifest: str = "", line: int = 0,
               target_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Decodes an audio file to a mono float32 waveform at `target_rate`.

  Channels are averaged; the result is resampled with soxr when needed and
  clipped to [-1, 1] (resampling can overshoot full-scale input slightly).

  Args:
    path: a wav/flac/ogg/... file soundfile can read.
    manifest: manifest path, for messages.
    line: 1-based manifest line, for messages.
    target_rate: output sample rate in Hz.

  Returns:
    float32 [T] in [-1, 1].

  Raises:
    BadInputError: missing or corrupt file, zero length, NaN/inf samples.
  """
  if not os.path.isfile(path):
    raise BadInputError(manifest, line, f"audio file not found: {path}")
  try:
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
  except Exception as e:
    raise BadInputError(manifest, line,
                        f"cannot decode audio file {path}: {e}") from e
  if data.shape[0] == 0:
    raise BadInputError(manifest, line, f"zero-length audio: {path}")
  if not np.isfinite(data).all():
    raise BadInputError(manifest, line, f"audio has NaN/inf samples: {path}")
  mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
  mono = resample(np.ascontiguousarray(mono), rate, target_rate)
  return np.clip(mono, -1.0, 1.0, out=mono)
