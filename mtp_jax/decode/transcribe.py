"""Transcribe audio files or arrays of any length with a trained model, into timed segments.

  from mtp_jax.decode.transcribe import Transcriber
  tr = Transcriber("runs/wt/k4", strategy="verify")
  tr(["a.wav", "b.flac"])                    # -> ["text of a", "text of b"]
  tr([np_array], sample_rate=8000)           # arrays at any rate are resampled
  for t in tr.transcribe_many(["talk.flac", "broken.wav"]):
    t.error or t.segments                    # [Segment(start, end, text), ...]

  python decode.py --workdir runs/wt/k4 --audio talk.flac --format srt,vtt --output_dir out

Any format soundfile reads, at any sample rate and bit depth (resampled with soxr,
channels averaged). Files are read `block_seconds` at a time (`audio.AudioStream`)
and cut into chunks as they stream in, so memory stays bounded for recordings of any
length. Chunks are at most `max_seconds` long (default: the encoder's limit, 30 s for
Whisper, and the training `data.max_duration`, whichever is shorter) and are cut by
one of two boundary strategies (`mtp_jax.decode.chunking`): "silence" (the default:
cut in the quietest stretch of the last `search_seconds` before each limit) or
"overlap" (fixed windows overlapping by `overlap_seconds`, the twice-decoded words
merged). Consecutive chunks decode together, `batch_size` at a time (a recording's
chunks share a batch where they fit; short files share one too). Each chunk is
guarded against runaway decoding (`mtp_jax.decode.guards`: a token cap per second of
audio and a repeated n-gram cutoff); chunks quieter than `silence_dbfs` are not
decoded. `long_audio="error"` refuses audio longer than one chunk instead, naming the
file.

`transcribe_many` never raises for a bad input: each `Transcript` has segments or an
`error` naming the file (missing, corrupt, empty, NaN samples, too long with
`long_audio="error"`), and warnings (a truncated file: the audio before the damage is
transcribed). `__call__` returns texts and raises the first error.

The chunking, merging and guards do not depend on the model: `LongFormTranscriber`
runs them around any `Recognizer` (bench/longform.py plugs faster-whisper's model in
to measure the boundary strategies with a trained recognizer).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from mtp_jax.data import audio as audio_lib
from mtp_jax.data.errors import BadInputError
from mtp_jax.decode import chunking
from mtp_jax.decode.chunking import split_at_silence  # noqa: F401  (re-exported)
from mtp_jax.decode.guards import Guards
from mtp_jax.decode.segments import Segment, Transcript


class LongAudioError(ValueError):
  """Audio longer than the model takes, with `long_audio="error"`."""


class TranscribeError(ValueError):
  """The run cannot transcribe as asked (e.g. strategy 'ctc' on a model without a CTC
  head, a bad option); raised before any audio is read."""


@dataclasses.dataclass(frozen=True)
class ChunkText:
  """A recognizer's output for one chunk.

  Attributes:
    text: the transcript.
    tokens: tokens emitted.
    calls: decoder calls made for this chunk (0 when not counted).
    capped: decoding stopped at the token cap (no end of text).
  """
  text: str
  tokens: int = 0
  calls: int = 0
  capped: bool = False


class Recognizer(Protocol):
  """What `LongFormTranscriber` needs from a speech recognizer.

  Attributes:
    sample_rate: the rate of the chunks it takes.
    max_seconds: the longest chunk it takes.
    batch_size: chunks per `recognize` call.
  """
  sample_rate: int
  max_seconds: float
  batch_size: int

  def recognize(self, chunks: Sequence[np.ndarray],
                caps: Sequence[int | None]) -> list[ChunkText]:
    """Transcribes float32 [n_i] chunks, at most caps[i] tokens each (None: no cap)."""


def _pow2_at_least(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


class ModelRecognizer:
  """A `SpeechLLaMA` with one decoding strategy, as a `Recognizer`.

  A batch is padded to the next power of two rows (at most `batch_size`) and to a
  whole number of seconds (a full chunk when longer than half of one), so few shapes
  are compiled. The token cap of the batch is static (rounded up to a multiple of 8,
  at most `max_new_tokens`); each row is then cut to its own cap.
  """

  def __init__(self, model, params, tokenizer, *, strategy: str, max_new_tokens: int,
               max_seconds: float, batch_size: int, min_seconds: float = 0.2, **decode_kw):
    """Checks the strategy and its options on this model now (before any audio).

    Raises:
      TranscribeError: the strategy cannot run on this model (e.g. 'ctc' without a
        CTC head) or an option is invalid.
    """
    from mtp_jax.decode import api  # pylint: disable=g-import-not-at-top
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.strategy, self.decode_kw = strategy, decode_kw
    self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
    self.sample_rate = int(model.cfg.frontend.sample_rate)
    self.max_seconds = float(max_seconds)
    self.max_samples = int(self.max_seconds * self.sample_rate)
    self.min_samples = int(min_seconds * self.sample_rate)
    try:
      api.make_decode_fn(model, strategy=strategy, max_new_tokens=self.max_new_tokens,
                         **decode_kw)
    except (ValueError, TypeError) as e:
      raise TranscribeError(f"--strategy={strategy}: {e}") from e

  def _width(self, n: int) -> int:
    if n > self.max_samples // 2:
      return max(self.max_samples, n)
    return -(-max(n, self.min_samples) // self.sample_rate) * self.sample_rate

  def recognize(self, chunks, caps):
    from mtp_jax.decode.api import decode  # pylint: disable=g-import-not-at-top
    rows = min(self.batch_size, _pow2_at_least(len(chunks)))
    width = self._width(max(len(c) for c in chunks))
    audio = np.zeros((rows, width), np.float32)
    alen = np.zeros((rows,), np.int32)
    for r, c in enumerate(chunks):
      audio[r, :len(c)] = c
      alen[r] = max(len(c), self.min_samples)  # very short audio: padded with silence
    batch_cap = self.max_new_tokens
    if all(c is not None for c in caps):
      batch_cap = min(batch_cap, -(-max(caps) // 8) * 8)
    res = decode(self.model, self.params, audio, alen, strategy=self.strategy,
                 max_new_tokens=batch_cap, **self.decode_kw)
    tokens, lengths, calls = (np.asarray(res.tokens), np.asarray(res.lengths),
                              np.asarray(res.calls))
    out = []
    for r, cap in enumerate(caps):
      n = int(lengths[r])
      limit = batch_cap if cap is None else min(cap, batch_cap)
      capped = n >= limit
      ids = tokens[r, :min(n, limit)].tolist()
      out.append(ChunkText(self.tokenizer.decode(ids), len(ids), int(calls[r]), capped))
    return out


@dataclasses.dataclass
class _Source:
  name: str
  duration: float
  blocks: Iterator[np.ndarray]
  warnings: list


@dataclasses.dataclass
class _State:
  """One input in flight."""
  transcript: Transcript
  total: float
  merger: chunking.OverlapMerger | None
  t0: float = 0.0
  pending: int = 0
  read_all: bool = False
  done: bool = False
  exc: BaseException | None = None


def _dbfs(wav: np.ndarray) -> float:
  rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
  return 20 * math.log10(rms) if rms > 0 else -math.inf


class LongFormTranscriber:
  """Chunking, batching, merging and guards around a `Recognizer`."""

  def __init__(self, recognizer: Recognizer, *, segmenter: str = "silence",
               max_seconds: float | None = None, overlap_seconds: float | None = None,
               search_seconds: float = 5.0, long_audio: str = "split",
               guards: Guards | None = None, silence_dbfs: float = -60.0,
               block_seconds: float = 10.0):
    """
    Args:
      recognizer: decodes chunks (`ModelRecognizer`, or any `Recognizer`).
      segmenter: "silence" or "overlap" (see `mtp_jax.decode.chunking`).
      max_seconds: the longest chunk / the overlap window (default and at most: the
        recognizer's `max_seconds`).
      overlap_seconds: "overlap": seconds shared by consecutive windows (default a
        sixth of the window: 5 s of a 30-s window).
      search_seconds: "silence": how far back from the limit a cut may go.
      long_audio: "split" (chunk it) or "error" (refuse audio longer than one chunk).
      guards: the runaway-decoding guards (default `Guards()`).
      silence_dbfs: chunks with an RMS level below this are not decoded (-inf: all
        are).
      block_seconds: how much of a file is read at a time.
    Raises:
      ValueError: a bad setting (named).
    """
    if long_audio not in ("split", "error"):
      raise ValueError(f"long_audio={long_audio!r}: expected 'split' or 'error'")
    if segmenter not in chunking.STRATEGIES:
      raise ValueError(f"segmenter={segmenter!r}: expected one of {chunking.STRATEGIES}")
    limit = float(recognizer.max_seconds)
    if max_seconds is not None and not 0 < max_seconds:
      raise ValueError(f"max_seconds={max_seconds}: must be > 0")
    seconds = min(limit, max_seconds) if max_seconds else limit
    self.recognizer, self.segmenter, self.long_audio = recognizer, segmenter, long_audio
    self.rate = int(recognizer.sample_rate)
    self.max_samples = int(seconds * self.rate)
    self.overlap_seconds = seconds / 6 if overlap_seconds is None else float(overlap_seconds)
    if segmenter == "overlap":
      chunking.window_seconds_check(seconds, self.overlap_seconds)
    self.search_seconds = float(search_seconds)
    self.guards = guards or Guards()
    self.silence_dbfs = float(silence_dbfs)
    self.block_seconds = float(block_seconds)
    self.batch_size = int(recognizer.batch_size)

  # ------------------------------------------------------------------ inputs
  def _open(self, item, sample_rate: int | None, index: int) -> _Source:
    if isinstance(item, (str, os.PathLike)):
      path = os.fspath(item)
      stream = audio_lib.AudioStream(path, target_rate=self.rate,
                                     block_seconds=self.block_seconds)
      return _Source(path, stream.duration, stream.blocks(), stream.warnings)
    wav = np.asarray(item, np.float32)
    if wav.ndim == 2:
      wav = wav.mean(axis=1)
    if wav.ndim != 1 or not len(wav):
      raise ValueError(f"<array {index}>: expected a non-empty 1-D waveform, got shape "
                       f"{wav.shape}")
    if sample_rate is None:
      raise ValueError(f"<array {index}>: an array needs sample_rate=")
    if not np.isfinite(wav).all():
      raise ValueError(f"<array {index}>: the waveform has NaN/inf samples")
    wav = audio_lib.resample(wav, int(sample_rate), self.rate)
    return _Source(f"<array {index}>", len(wav) / self.rate, iter([wav]), [])

  def _chunks(self, blocks: Iterable[np.ndarray]) -> Iterator[chunking.Chunk]:
    if self.segmenter == "overlap":
      return chunking.overlap_chunks(blocks, self.max_samples,
                                     int(self.overlap_seconds * self.rate))
    return chunking.silence_chunks(blocks, self.max_samples, self.rate, self.search_seconds)

  def _check_length(self, name: str, seconds: float) -> None:
    if self.long_audio == "error" and seconds * self.rate > self.max_samples:
      raise LongAudioError(f"{name}: {seconds:.1f} s is longer than the model's "
                           f"{self.max_samples / self.rate:.1f} s (long_audio='split' "
                           "splits it)")

  # ------------------------------------------------------------------ decoding
  def _decode(self, batch: list[tuple[_State, chunking.Chunk]]) -> list[ChunkText | None]:
    """Recognizes the batch's loud chunks; None for the silent ones."""
    loud = [k for k, (_, c) in enumerate(batch) if _dbfs(c.wav) >= self.silence_dbfs]
    out: list[ChunkText | None] = [None] * len(batch)
    if loud:
      res = self.recognizer.recognize(
          [batch[k][1].wav for k in loud],
          [self.guards.cap(len(batch[k][1].wav) / self.rate) for k in loud])
      for k, r in zip(loud, res):
        out[k] = r
    return out

  def _flush(self, batch, on_progress, on_done) -> None:
    try:
      results = self._decode(batch)
    except Exception as e:  # pylint: disable=broad-except
      results = None
      for st in {id(s): s for s, _ in batch}.values():
        if st.transcript.error is None:
          st.transcript.error = (f"{st.transcript.name}: decoding failed: "
                                 f"{type(e).__name__}: {e}")
          st.exc = e
    for k, (st, chunk) in enumerate(batch):
      st.pending -= 1
      t = st.transcript
      if results is not None and t.error is None:
        self._take(st, chunk, results[k])
      t.duration = max(t.duration, chunk.end / self.rate)
    for st in {id(s): s for s, _ in batch}.values():
      if on_progress is not None and st.transcript.error is None:
        on_progress(st.transcript, st.total, time.perf_counter() - st.t0)
    self._emit_done(on_done)

  def _take(self, st: _State, chunk: chunking.Chunk, r: ChunkText | None) -> None:
    t, stats = st.transcript, st.transcript.stats
    text = ""
    if r is not None:
      text, cut = self.guards.cut(r.text)
      stats["decoded_chunks"] += 1
      stats["decoder_calls"] += r.calls
      stats["tokens"] += r.tokens
      stats["capped_chunks"] += int(r.capped)
      stats["repetition_cuts"] += int(cut)
    start, end = chunk.start / self.rate, chunk.end / self.rate
    if st.merger is not None:
      t.segments += [s for s in st.merger.add(text, start, end) if s.text]
    elif text:
      t.segments.append(Segment(start, end, text))

  def _emit_done(self, on_done) -> None:
    """Finishes the inputs at the front of the queue whose chunks are all decoded."""
    while self._queue and self._queue[0].read_all and not self._queue[0].pending:
      st = self._queue.pop(0)
      t = st.transcript
      if st.merger is not None:
        t.segments += [s for s in st.merger.finish() if s.text]
      if t.error is not None:
        t.segments = []
      if on_done is not None:
        on_done(t)

  def transcribe_many(self, inputs: Sequence, sample_rate: int | None = None, *,
                      on_progress: Callable[[Transcript, float], None] | None = None,
                      on_done: Callable[[Transcript], None] | None = None
                      ) -> list[Transcript]:
    """Transcribes each input; a bad one gets an `error`, the others go on.

    Args:
      inputs: file paths and/or float waveforms ([T] or [T, channels]).
      sample_rate: the arrays' rate (files carry their own).
      on_progress: called after each batch, for each input in it, with (transcript
        so far, total seconds from the header, seconds since the input was opened).
      on_done: called with each finished `Transcript` (errors included), in input
        order, as soon as it and the inputs before it are decoded.
    Returns:
      One `Transcript` per input, in order.
    """
    out, batch, states = [], [], []
    self._queue = []
    for i, item in enumerate(inputs):
      name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<array {i}>"
      t = Transcript(name=name, stats=dict(chunks=0, decoded_chunks=0, decoder_calls=0,
                                           tokens=0, capped_chunks=0, repetition_cuts=0))
      out.append(t)
      merger = chunking.OverlapMerger() if self.segmenter == "overlap" else None
      st = _State(t, 0.0, merger, t0=time.perf_counter())
      states.append(st)
      self._queue.append(st)
      try:
        src = self._open(item, sample_rate, i)
        st.total = src.duration
        self._check_length(src.name, src.duration)
        for chunk in self._chunks(src.blocks):
          t.stats["chunks"] += 1
          st.pending += 1
          batch.append((st, chunk))
          if len(batch) >= self.batch_size:
            self._flush(batch, on_progress, on_done)
            batch = []
        t.warnings += src.warnings
      except (BadInputError, LongAudioError, ValueError, OSError) as e:
        msg = e.reason if isinstance(e, BadInputError) and not e.manifest else str(e)
        t.error = msg if name in msg else f"{name}: {msg}"
        st.exc = e
      st.read_all = True
      self._emit_done(on_done)
    if batch:
      self._flush(batch, on_progress, on_done)
    self._errors = [st.exc for st in states]
    return out

  def __call__(self, inputs: Sequence, sample_rate: int | None = None) -> list[str]:
    """The texts of `transcribe_many`; raises the first input's error (LongAudioError
    for too-long audio with long_audio="error", BadInputError for a bad file,
    ValueError for a bad array)."""
    results = self.transcribe_many(inputs, sample_rate)
    for t, exc in zip(results, self._errors):
      if t.error is not None:
        raise exc if exc is not None else ValueError(t.error)
    return [t.text for t in results]


class Transcriber(LongFormTranscriber):
  """A trained model loaded once; call it on paths and/or arrays."""

  def __init__(self, workdir: str | os.PathLike, *, step: int | None = None,
               strategy: str = "greedy", batch_size: int = 8, max_seconds: float | None = None,
               long_audio: str = "split", max_new_tokens: int | None = None,
               use_kernels: bool | None = None, segmenter: str = "silence",
               overlap_seconds: float | None = None, guards: Guards | None = None,
               silence_dbfs: float = -60.0, **decode_kw):
    """Loads the run; `use_kernels` (not None) overrides its `config.kernels.enabled`.

    Raises:
      TranscribeError: the strategy cannot run on this model (named).
      ValueError: a bad setting (named).
    """
    from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
    from mtp_jax.config import KernelsConfig, ModelConfig  # pylint: disable=g-import-not-at-top
    from mtp_jax.model import encoders  # pylint: disable=g-import-not-at-top
    from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
    self.config, self.params, self.tokenizer = restore_for_inference(workdir, step=step)
    kernels = KernelsConfig.from_config(self.config.get("kernels", {}), enabled=use_kernels)
    self.model = SpeechLLaMA(ModelConfig.from_config(self.config.model), kernels=kernels)
    mc = self.model.cfg
    limit = min(float(self.config.data.max_duration), encoders.max_audio_seconds(mc))
    seconds = min(max_seconds, limit) if max_seconds else limit
    self.strategy = strategy
    self.max_new_tokens = int(max_new_tokens or mc.decoder.max_text_len - 2)
    self.decode_kw = decode_kw
    recognizer = ModelRecognizer(self.model, self.params, self.tokenizer, strategy=strategy,
                                 max_new_tokens=self.max_new_tokens, max_seconds=seconds,
                                 batch_size=batch_size, **decode_kw)
    super().__init__(recognizer, segmenter=segmenter, long_audio=long_audio,
                     overlap_seconds=overlap_seconds, guards=guards,
                     silence_dbfs=silence_dbfs)


class ProgressPrinter:
  """Progress lines for long inputs, e.g.

    talk.flac: [#####-----] 1:00:00 / 2:00:00 (50%), 412 segments, 8.1x real time

  printed at most every `every_s` seconds per input (and at 100%) for inputs of at
  least `min_seconds`.
  """

  def __init__(self, stream=None, *, min_seconds: float = 60.0, every_s: float = 2.0):
    self.stream = stream or sys.stderr
    self.min_seconds, self.every_s = float(min_seconds), float(every_s)
    self._last: dict[str, float] = {}

  @staticmethod
  def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

  def __call__(self, t: Transcript, total: float, elapsed: float) -> None:
    if total < self.min_seconds:
      return
    now = time.perf_counter()
    done = min(t.duration, total) if total else t.duration
    final = total and done >= total - 1e-6
    if not final and now - self._last.get(t.name, -math.inf) < self.every_s:
      return
    self._last[t.name] = now
    frac = done / total if total else 0.0
    bar = "#" * int(frac * 20) + "-" * (20 - int(frac * 20))
    speed = f", {done / elapsed:.1f}x real time" if elapsed > 0 else ""
    print(f"{t.name}: [{bar}] {self.clock(done)} / {self.clock(total)} ({frac:.0%}), "
          f"{len(t.segments)} segments{speed}", file=self.stream, flush=True)


def transcribe(workdir: str | os.PathLike, inputs: Sequence, *, sample_rate: int | None = None,
               **kwargs) -> list[str]:
  """One-shot `Transcriber(workdir, **kwargs)(inputs, sample_rate)`."""
  return Transcriber(workdir, **kwargs)(inputs, sample_rate)
