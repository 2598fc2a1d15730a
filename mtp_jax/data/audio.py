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


class AudioStream:
  """An audio file read block by block: mono float32 at `target_rate`, in bounded memory.

  For recordings of any length (`decode.py --audio`): the file is decoded
  `block_seconds` at a time with `soundfile.SoundFile.blocks`, channels averaged,
  resampled with a streaming soxr resampler and clipped to [-1, 1], so a 2-hour file
  never sits in memory whole.

    stream = AudioStream("talk.flac", target_rate=16000)
    stream.duration                # seconds, from the header
    for block in stream.blocks():  # float32 [n] pieces, in time order
      ...
    stream.warnings                # e.g. a truncated file (see `blocks`)

  Attributes:
    path: the file.
    info: its header (`AudioInfo`).
    target_rate: output sample rate in Hz.
    warnings: messages about audio that was read only in part (filled by `blocks`).
  """

  def __init__(self, path: str, *, target_rate: int = SAMPLE_RATE, block_seconds: float = 10.0,
               manifest: str = "", line: int = 0):
    """Reads the header.

    Raises:
      BadInputError: missing file, unreadable or corrupt header, zero length.
    """
    self.path, self.target_rate = str(path), int(target_rate)
    self.manifest, self.line = manifest, line
    self.info = read_info(self.path, manifest, line)
    if self.info.frames <= 0:
      raise BadInputError(manifest, line, f"zero-length audio: {self.path}")
    self.block_frames = max(1, int(block_seconds * self.info.sample_rate))
    self.warnings: list[str] = []
    self.frames_read = 0

  @property
  def duration(self) -> float:
    """Duration in seconds as the header states it (the progress denominator)."""
    return self.info.duration

  def blocks(self):
    """Yields float32 [n] mono blocks at `target_rate`, in time order.

    A read that fails after some audio was decoded (a truncated or partly corrupt
    file: libsndfile loses sync) ends the stream there with a line in `warnings`
    naming the file and how much of it was read; the audio before it is kept.

    Raises:
      BadInputError: nothing decodable (corrupt payload, no frames) or NaN/inf
        samples (the message names the file and the time).
    """
    rate = self.info.sample_rate
    resampler = None
    if rate != self.target_rate:
      resampler = soxr.ResampleStream(rate, self.target_rate, 1, dtype="float32",
                                      quality="HQ")
    self.frames_read = 0
    try:
      f = soundfile.SoundFile(self.path)
    except Exception as e:  # pylint: disable=broad-except
      raise BadInputError(self.manifest, self.line,
                          f"cannot decode audio file {self.path}: {e}") from e
    block, salvaging, salvage_end = self.block_frames, False, 0
    with f:
      while True:
        try:  # f.read, not f.blocks: some formats (e.g. XI) are not seekable
          data = f.read(block, dtype="float32", always_2d=True)
        except Exception as e:  # pylint: disable=broad-except
          # A failed read returns nothing of its block: go back and read up to the
          # damage in small steps (when the file can seek), then stop there.
          if not salvaging and f.seekable():
            try:
              f.seek(self.frames_read)
              block, salvaging = max(1, rate // 50), True
              salvage_end = self.frames_read + self.block_frames
              continue
            except Exception:  # pylint: disable=broad-except
              pass
          if not self.frames_read:
            raise BadInputError(self.manifest, self.line,
                                f"cannot decode audio file {self.path}: {e}") from e
          self.warnings.append(
              f"{self.path}: unreadable after {self.frames_read / rate:.2f} s of "
              f"{self.duration:.2f} s (truncated or corrupt: {e}); transcribed the audio "
              "before it")
          break
        if not len(data):
          break
        if not np.isfinite(data).all():
          t = (self.frames_read + int(np.argmin(np.isfinite(data).all(axis=1)))) / rate
          raise BadInputError(self.manifest, self.line,
                              f"audio has NaN/inf samples (first at {t:.2f} s): {self.path}")
        self.frames_read += len(data)
        if salvaging and self.frames_read >= salvage_end:  # read past it after all
          block = self.block_frames
        mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        mono = np.ascontiguousarray(mono)
        if resampler is not None:
          mono = resampler.resample_chunk(mono)
        if len(mono):
          yield np.clip(mono, -1.0, 1.0)
    if not self.frames_read:
      raise BadInputError(self.manifest, self.line, f"zero-length audio: {self.path}")
    if resampler is not None:
      tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
      if len(tail):
        yield np.clip(tail, -1.0, 1.0)
