"""Guards against a decoder that runs away on a chunk of long audio.

An autoregressive decoder can fall into a loop ("thank you thank you thank you ...")
on audio unlike its training data (noise, music, a cut word, a long chunk) and then
emits tokens up to its cap. Two guards bound the damage, per decoded chunk:

* `token_cap`: at most `tokens_per_second` tokens per second of the chunk's audio
  (plus a floor for very short chunks); decoding stops there.
* `cut_repetitions`: the chunk's words are cut where an n-gram (n <= `max_ngram`)
  repeats more than `max_repeats` times in a row.

Both apply to each chunk alone, never to a whole recording's transcript: a cut ends
the chunk's text, the next chunk starts afresh.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

_WORD = re.compile(r"[^\w']+")


@dataclasses.dataclass(frozen=True)
class Guards:
  """Settings of the runaway-decoding guards.

  Attributes:
    tokens_per_second: token cap per second of chunk audio (<= 0: no cap beyond the
      model's). Speech runs at ~2-4 words/s, ~3-8 subword tokens/s; 15 leaves room
      for fast speech and small vocabularies.
    min_tokens: the cap's floor (short chunks, e.g. one digit).
    max_ngram: the longest repeated n-gram looked for (0: no repetition cut).
    max_repeats: an n-gram may occur this many times in a row; the next repeat
      and everything after it in the chunk is cut.
  """
  tokens_per_second: float = 15.0
  min_tokens: int = 10
  max_ngram: int = 8
  max_repeats: int = 4

  def __post_init__(self):
    if self.min_tokens < 1:
      raise ValueError(f"min_tokens={self.min_tokens}: must be >= 1")
    if self.max_ngram < 0:
      raise ValueError(f"max_ngram={self.max_ngram}: must be >= 0")
    if self.max_repeats < 1:
      raise ValueError(f"max_repeats={self.max_repeats}: must be >= 1")

  def cap(self, seconds: float) -> int | None:
    """The token cap of a chunk of `seconds` (None: no cap)."""
    return token_cap(seconds, self.tokens_per_second, self.min_tokens)

  def cut(self, text: str) -> tuple[str, bool]:
    """`cut_repetitions` on `text`'s words: (text, whether it was cut)."""
    if not self.max_ngram:
      return text, False
    words = text.split()
    kept = cut_repetitions(words, self.max_ngram, self.max_repeats)
    return (" ".join(kept), True) if len(kept) < len(words) else (text, False)


def token_cap(seconds: float, tokens_per_second: float, min_tokens: int = 1) -> int | None:
  """max(min_tokens, ceil(tokens_per_second * seconds)); None when tokens_per_second <= 0."""
  if tokens_per_second <= 0:
    return None
  return max(int(min_tokens), math.ceil(tokens_per_second * max(seconds, 0.0) - 1e-9))


def _key(word: str) -> str:
  return _WORD.sub("", word.lower())


def cut_repetitions(words: Sequence[str], max_ngram: int = 8,
                    max_repeats: int = 4) -> list[str]:
  """`words` cut after the `max_repeats`-th consecutive occurrence of a looping n-gram.

  The earliest loop wins: scanning positions left to right and, at each, n = 1 ..
  `max_ngram`, the first n-gram found `max_repeats` + 1 or more times in a row ends
  the output after its `max_repeats`-th occurrence. Words compare case- and
  punctuation-blind ("Thank you." == "thank you").

  Args:
    words: the words of one decoded chunk.
    max_ngram: longest n-gram considered.
    max_repeats: occurrences in a row allowed (>= 1).
  Returns:
    The kept prefix of `words` (all of them when nothing loops).
  """
  keys = [_key(w) for w in words]
  n_words = len(keys)
  for i in range(n_words):
    for n in range(1, max_ngram + 1):
      if i + n * (max_repeats + 1) > n_words:
        break
      gram = keys[i:i + n]
      if not any(gram):
        continue
      reps = 1
      while keys[i + reps * n:i + (reps + 1) * n] == gram:
        reps += 1
        if reps > max_repeats:
          return list(words[:i + n * max_repeats])
  return list(words)
