"""Transcribe audio files or arrays with a trained model.

  from mtp_jax.decode.transcribe import Transcriber
  tr = Transcriber("runs/wt/k4", strategy="verify")
  tr(["a.wav", "b.flac"])                    # -> ["text of a", "text of b"]
  tr([np_array], sample_rate=8000)           # arrays at any rate are resampled

  python decode.py --workdir runs/wt/k4 --audio a.wav b.flac [--strategy verify]

Any format soundfile reads, at any sample rate (resampled with soxr, channels averaged).
Audio longer than `max_seconds` (default: the encoder's limit, 30 s for Whisper, and the
training `data.max_duration`, whichever is shorter) is split at the quietest 20 ms in
the last `search_seconds` before each limit, decoded chunk by chunk and joined with
spaces (`long_audio="error"` refuses it instead, naming the file).
"""
from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np

from mtp_jax.data import audio as audio_lib


class LongAudioError(ValueError):
  """Audio longer than the model takes, with `long_audio="error"`."""


def split_at_silence(wav: np.ndarray, max_samples: int, sample_rate: int,
                     search_seconds: float = 5.0) -> list[np.ndarray]:
  """Cuts `wav` into chunks of <= max_samples at the lowest-energy 20 ms frames."""
  frame = max(1, int(0.02 * sample_rate))
  chunks, pos = [], 0
  while len(wav) - pos > max_samples:
    lo = pos + max(frame, max_samples - int(search_seconds * sample_rate))
    hi = pos + max_samples
    seg = wav[lo:hi]
    n = len(seg) // frame
    energy = np.square(seg[:n * frame].reshape(n, frame)).sum(-1)
    cut = lo + int(np.argmin(energy)) * frame + frame // 2
    chunks.append(wav[pos:cut])
    pos = cut
  chunks.append(wav[pos:])
  return chunks


class Transcriber:
  """A trained model loaded once; call it on paths and/or arrays."""

  def __init__(self, workdir: str | os.PathLike, *, step: int | None = None,
               strategy: str = "greedy", batch_size: int = 8, max_seconds: float | None = None,
               long_audio: str = "split", max_new_tokens: int | None = None,
               use_kernels: bool | None = None, **decode_kw):
    """Loads the run; `use_kernels` (not None) overrides its `config.kernels.enabled`."""
    from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
    from mtp_jax.config import KernelsConfig, ModelConfig  # pylint: disable=g-import-not-at-top
    from mtp_jax.model import encoders  # pylint: disable=g-import-not-at-top
    from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
    if long_audio not in ("split", "error"):
      raise ValueError(f"long_audio={long_audio!r}: expected 'split' or 'error'")
    self.config, self.params, self.tokenizer = restore_for_inference(workdir, step=step)
    kernels = KernelsConfig.from_config(self.config.get("kernels", {}), enabled=use_kernels)
    self.model = SpeechLLaMA(ModelConfig.from_config(self.config.model), kernels=kernels)
    mc = self.model.cfg
    self.rate = int(mc.frontend.sample_rate)
    limit = min(float(self.config.data.max_duration), encoders.max_audio_seconds(mc))
    self.max_samples = int((max_seconds or limit) * self.rate)
    self.strategy, self.batch_size, self.long_audio = strategy, int(batch_size), long_audio
    self.max_new_tokens = int(max_new_tokens or mc.decoder.max_text_len - 2)
    self.decode_kw = decode_kw

  def _load(self, item, sample_rate: int | None, index: int) -> tuple[str, np.ndarray]:
    if isinstance(item, (str, os.PathLike)):
      return os.fspath(item), audio_lib.load_audio(os.fspath(item), target_rate=self.rate)
    wav = np.asarray(item, np.float32)
    if wav.ndim == 2:
      wav = wav.mean(axis=1)
    if wav.ndim != 1 or not len(wav):
      raise ValueError(f"input {index}: expected a non-empty 1-D waveform, got shape {wav.shape}")
    if sample_rate is None:
      raise ValueError(f"input {index}: an array needs sample_rate=")
    if sample_rate != self.rate:
      import soxr  # pylint: disable=g-import-not-at-top
      wav = soxr.resample(wav, sample_rate, self.rate).astype(np.float32)
    return f"<array {index}>", wav

  def __call__(self, inputs: Sequence, sample_rate: int | None = None) -> list[str]:
    from mtp_jax.decode.api import decode  # pylint: disable=g-import-not-at-top
    pieces = []  # (input index, chunk)
    for i, item in enumerate(inputs):
      name, wav = self._load(item, sample_rate, i)
      if len(wav) > self.max_samples and self.long_audio == "error":
        raise LongAudioError(f"{name}: {len(wav) / self.rate:.1f} s is longer than the "
                             f"model's {self.max_samples / self.rate:.1f} s (long_audio='split' "
                             "splits it at silences)")
      pieces += [(i, c) for c in split_at_silence(wav, self.max_samples, self.rate)]
    order = sorted(range(len(pieces)), key=lambda j: len(pieces[j][1]))
    texts: dict[int, str] = {}
    second = self.rate
    for start in range(0, len(order), self.batch_size):
      idx = order[start:start + self.batch_size]
      s = -(-max(len(pieces[j][1]) for j in idx) // second) * second
      audio = np.zeros((self.batch_size, s), np.float32)
      alen = np.zeros((self.batch_size,), np.int32)
      for r, j in enumerate(idx):
        audio[r, :len(pieces[j][1])] = pieces[j][1]
        alen[r] = len(pieces[j][1])
      res = jax.tree.map(np.asarray, decode(self.model, self.params, audio, alen,
                                            strategy=self.strategy,
                                            max_new_tokens=self.max_new_tokens,
                                            **self.decode_kw))
      for r, j in enumerate(idx):
        texts[j] = self.tokenizer.decode(res.tokens[r, :res.lengths[r]].tolist())
    out = [[] for _ in inputs]
    for j, (i, _) in enumerate(pieces):  # chunks stay in time order within an input
      if texts[j]:
        out[i].append(texts[j])
    return [" ".join(parts) for parts in out]


def transcribe(workdir: str | os.PathLike, inputs: Sequence, *, sample_rate: int | None = None,
               **kwargs) -> list[str]:
  """One-shot `Transcriber(workdir, **kwargs)(inputs, sample_rate)`."""
  return Transcriber(workdir, **kwargs)(inputs, sample_rate)
