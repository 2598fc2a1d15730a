"""Cutting long audio into chunks a model takes, and joining their transcripts.

Two boundary strategies, both streaming (they consume an iterator of audio blocks and
hold at most about one chunk plus one block, so a recording of any length is cut in
bounded memory):

* "silence" (`silence_chunks`): each chunk is as long as the model allows, cut inside
  the quietest stretch (energy smoothed over `smooth_seconds`) of the last
  `search_seconds` before the limit. Chunks do not overlap; their texts are joined.
  A word is lost or garbled only when no pause falls in the search window and the cut
  lands inside it.
* "overlap" (`overlap_chunks` + `OverlapMerger`): fixed windows of `window` samples
  every `window - overlap` samples (the last one ends at the end of the audio). The
  words of the overlap are decoded twice; `merge_words` finds the longest run of words
  both windows agree on in their shared part and switches from the earlier window to
  the later one inside it, which drops the words cut by either window's edge. Word
  times are not known: a word is placed in time by its rank (a uniform speaking rate
  over the window), which decides where the overlap starts and ends in each window's
  words, and, with no agreeing word, where to switch (the middle of the overlap, or
  the whole overlap from the window that has clearly more words in it).

Times are samples of the 16 kHz (model rate) stream; `Chunk.start` is absolute.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable, Iterator, Sequence

import numpy as np

from mtp_jax.decode.segments import Segment

STRATEGIES = ("silence", "overlap")
_WORD = re.compile(r"[^\w']+")


@dataclasses.dataclass(frozen=True)
class Chunk:
  """A piece of a recording to decode.

  Attributes:
    start: its first sample's index in the recording.
    wav: float32 [n] samples.
  """
  start: int
  wav: np.ndarray

  @property
  def end(self) -> int:
    return self.start + len(self.wav)


def _quiet_cut(seg: np.ndarray, frame: int, smooth_frames: int) -> int:
  """Offset in `seg` at the middle of its quietest stretch (the longest run of frames at
  the minimum of the smoothed energy; the latest on ties)."""
  n = len(seg) // frame
  energy = np.square(seg[:n * frame].reshape(n, frame).astype(np.float64)).sum(-1)
  if smooth_frames > 1:
    c = np.concatenate([[0.0], np.cumsum(energy)])
    half = smooth_frames // 2
    lo = np.maximum(np.arange(n) - half, 0)
    hi = np.minimum(np.arange(n) + half + 1, n)
    energy = (c[hi] - c[lo]) / (hi - lo)
  low = energy <= energy.min() * (1 + 1e-6) + 1e-12
  best, best_len, k = 0, -1, 0
  while k < n:
    if low[k]:
      j = k
      while j < n and low[j]:
        j += 1
      if j - k >= best_len:
        best, best_len = (k + j - 1) // 2, j - k
      k = j
    else:
      k += 1
  return best * frame + frame // 2


def silence_chunks(blocks: Iterable[np.ndarray], max_samples: int, sample_rate: int,
                   search_seconds: float = 5.0, smooth_seconds: float = 0.2) -> Iterator[Chunk]:
  """Chunks of <= `max_samples`, each cut at the quietest stretch of the last
  `search_seconds` before the limit.

  Args:
    blocks: float32 [n] pieces of the recording, in time order.
    max_samples: the longest chunk.
    sample_rate: of the blocks.
    search_seconds: how far back from the limit a cut may go (at most half the chunk).
    smooth_seconds: energy averaged over this span before taking the minimum (0:
      the quietest 20 ms frame; larger prefers a real pause over a stop consonant).
  Yields:
    `Chunk`s covering the recording exactly, in order.
  """
  frame = max(1, int(0.02 * sample_rate))
  smooth = max(1, int(round(smooth_seconds / 0.02)))
  buf, pos = np.zeros(0, np.float32), 0
  for block in blocks:
    buf = np.concatenate([buf, np.asarray(block, np.float32)])
    while len(buf) > max_samples:
      # At most the second half of the chunk: a cut in the middle of a pause leaves the
      # rest of it at the start of the next chunk, which must not be cut again.
      lo = max(frame, max_samples - min(int(search_seconds * sample_rate), max_samples // 2))
      cut = lo + _quiet_cut(buf[lo:max_samples], frame, smooth)
      yield Chunk(pos, buf[:cut].copy())
      buf, pos = buf[cut:], pos + cut
  if len(buf):
    yield Chunk(pos, buf.copy())


def split_at_silence(wav: np.ndarray, max_samples: int, sample_rate: int,
                     search_seconds: float = 5.0, smooth_seconds: float = 0.2
                     ) -> list[np.ndarray]:
  """`silence_chunks` of one waveform, as arrays (they concatenate back to `wav`)."""
  return [c.wav for c in silence_chunks([wav], max_samples, sample_rate, search_seconds,
                                        smooth_seconds)]


def overlap_chunks(blocks: Iterable[np.ndarray], window: int, overlap: int) -> Iterator[Chunk]:
  """Windows of `window` samples starting every `window - overlap` samples.

  The last window ends at the end of the recording (it may overlap its predecessor by
  more than `overlap`); a recording shorter than `window` is one chunk.

  Args:
    blocks: float32 [n] pieces of the recording, in time order.
    window: window length in samples.
    overlap: samples shared by consecutive windows, 0 <= overlap < window.
  Yields:
    `Chunk`s in order.
  """
  if not 0 <= overlap < window:
    raise ValueError(f"overlap={overlap} samples: must be >= 0 and < window={window}")
  stride = window - overlap
  buf, buf_start = np.zeros(0, np.float32), 0  # buf holds samples from buf_start on
  next_start, last_end = 0, 0
  for block in blocks:
    buf = np.concatenate([buf, np.asarray(block, np.float32)])
    while buf_start + len(buf) >= next_start + window:
      off = next_start - buf_start
      yield Chunk(next_start, buf[off:off + window].copy())
      last_end = next_start + window
      next_start += stride
      # Keep one window of history: the last window may start before next_start.
      keep_from = max(buf_start, next_start - stride)
      buf, buf_start = buf[keep_from - buf_start:], keep_from
  total = buf_start + len(buf)
  if total > last_end:
    start = max(0, total - window)
    yield Chunk(start, buf[start - buf_start:].copy())


def _key(word: str) -> str:
  return _WORD.sub("", word.lower())


def merge_words(a: Sequence[str], b: Sequence[str], a_span: tuple[float, float],
                b_span: tuple[float, float], a_from: int = 0) -> tuple[int, int]:
  """Where to switch from window `a`'s words to the next window `b`'s.

  Looks for the longest run of words (case- and punctuation-blind) that the end of
  `a` and the start of `b` share, among the words that can lie in the overlap (twice
  the count a uniform speaking rate puts there, plus 4); ties go to the run nearest
  the middle of the overlap. The merged text is a[:i] + b[j:] with i, j at the run's
  start, so b's words before the run are taken to repeat a's words of the overlap
  before it. When they clearly outnumber them (more than twice as many, plus 2), `a`
  lost words there (a window that stopped early, a guard's cut) and b's version of the
  overlap is kept instead, from where the overlap starts in `a` by rank.

  With no shared word, the window with the denser overlap (by rank: its words spread
  evenly over its span) keeps all of it when it has more than twice the other's
  words per second there; otherwise both are cut at the middle of the overlap by
  rank.

  Args:
    a: words of the earlier window.
    b: words of the later window.
    a_span: (start, end) of window a, in seconds (or any unit shared with b_span).
    b_span: (start, end) of window b; b starts before a ends.
    a_from: a's words before this index were already taken by an earlier merge.
  Returns:
    (i, j): keep a[a_from:i], then b[j:] (a_from <= i <= len(a), 0 <= j <= len(b)).
  """
  (a0, a1), (b0, b1) = a_span, b_span
  ov = a1 - b0
  if ov <= 0 or not len(a) or not len(b):
    return len(a), 0
  mid = (b0 + a1) / 2
  a_rank = lambda t: round(len(a) * (t - a0) / max(a1 - a0, 1e-9))  # noqa: E731
  b_rank = lambda t: round(len(b) * (t - b0) / max(b1 - b0, 1e-9))  # noqa: E731
  ia = min(len(a), max(a_from, a_rank(b0)))  # a's first word in the overlap, by rank
  ma = min(len(a) - a_from, int(2 * len(a) * ov / max(a1 - a0, 1e-9)) + 4)
  mb = min(len(b), int(2 * len(b) * ov / max(b1 - b0, 1e-9)) + 4)
  ka = [_key(w) for w in a[len(a) - ma:]]
  kb = [_key(w) for w in b[:mb]]
  best = None  # (length, -distance from mid, i, j)
  run = [0] * (mb + 1)
  for x in range(1, ma + 1):
    prev_diag = 0
    for y in range(1, mb + 1):
      cur = run[y]
      run[y] = prev_diag + 1 if ka[x - 1] == kb[y - 1] and ka[x - 1] else 0
      prev_diag = cur
      if run[y]:
        i = len(a) - ma + x - run[y]
        j = y - run[y]
        t = a0 + (i + run[y] / 2) / len(a) * (a1 - a0)
        cand = (run[y], -abs(t - mid), i, j)
        if best is None or cand[:2] > best[:2]:
          best = cand
  if best is not None:
    i, j = max(best[2], a_from), best[3]
    if j > 2 * max(0, i - ia) + 2:  # b has far more words before the run than a
      return min(ia, i), 0
    return i, j
  # No shared word: compare the words each window puts in the overlap, by rank.
  na = len(a) - ia
  nb = min(len(b), max(0, b_rank(a1)))
  if na > 2 * nb:
    return len(a), nb
  if nb > 2 * na:
    return ia, 0
  i = max(a_from, min(len(a), a_rank(mid)))
  j = min(len(b), max(0, b_rank(mid)))
  return i, j


class OverlapMerger:
  """Joins the transcripts of overlapping windows, in order, into segments.

    m = OverlapMerger()
    for chunk, text in decoded:             # in time order
      segments += m.add(text, chunk_start_s, chunk_end_s)
    segments += m.finish()

  A window's segment runs from the previous merge point (the middle of its overlap
  with the window before) to the next one; a segment is given out once the next
  window has been merged into it.
  """

  def __init__(self):
    self._prev = None  # (words, start, end, from index, segment start)

  def add(self, text: str, start: float, end: float) -> list[Segment]:
    """Adds the next window's text; returns the segments now final (0 or 1)."""
    words = text.split()
    if self._prev is None:
      self._prev = (words, start, end, 0, start)
      return []
    pw, ps, pe, pfrom, pseg = self._prev
    if pe <= start:  # no overlap: a plain join
      i, j, cut = len(pw), 0, pe
    else:
      i, j = merge_words(pw, words, (ps, pe), (start, end), pfrom)
      cut = (start + pe) / 2
    self._prev = (words, start, end, j, cut)
    return [Segment(pseg, cut, " ".join(pw[pfrom:i]))]

  def finish(self) -> list[Segment]:
    """The last window's segment (empty list when nothing was added)."""
    if self._prev is None:
      return []
    pw, _, pe, pfrom, pseg = self._prev
    self._prev = None
    return [Segment(pseg, pe, " ".join(pw[pfrom:]))]


def window_seconds_check(window: float, overlap: float) -> None:
  """Raises ValueError unless 0 <= overlap < window."""
  if not (math.isfinite(window) and window > 0):
    raise ValueError(f"window={window} s: must be > 0")
  if not 0 <= overlap < window:
    raise ValueError(f"overlap={overlap} s: must be >= 0 and < the window ({window} s)")
