"""Text normalization and WER scoring: the one place both are defined.

Training targets (the tokenizer's input) and WER scoring (references and
hypotheses) go through the same `normalize`, so a model is never penalized
for casing or punctuation it was never asked to produce.

`normalize` lowercases, turns punctuation into word breaks (apostrophes inside
words such as "don't" or "o'clock" are kept), collapses whitespace, and can
optionally spell out digits ("42" -> "forty two").
"""
from __future__ import annotations

import re
from typing import Sequence

import jiwer

# A private-use character (Unicode category "Co", not punctuation) that stands
# in for apostrophes inside words while jiwer removes punctuation.
_APOSTROPHE_GUARD = "\ue000"

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve "
         "thirteen fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"),
           (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}
# An integer with optional thousands separators, an optional decimal part and
# an optional ordinal suffix, e.g. "7", "1,000", "3.25", "21st".
_NUMBER_RE = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(?!\w)")


def _below_thousand(n: int) -> list[str]:
  words = []
  if n >= 100:
    words += [_ONES[n // 100], "hundred"]
    n %= 100
  if n >= 20:
    words.append(_TENS[n // 10])
    n %= 10
    if n:
      words.append(_ONES[n])
  elif n or not words:
    words.append(_ONES[n])
  return words


def number_to_words(n: int) -> str:
  """Spells out a non-negative integer in English, e.g. 1042 -> "one thousand forty two".

  Args:
    n: the integer, 0 <= n < 10**15.

  Returns:
    Lowercase words separated by single spaces (no "and", no hyphens).
  """
  if n < 0 or n >= 10**15:
    raise ValueError(f"number_to_words supports 0 <= n < 10**15, got {n}")
  if n == 0:
    return "zero"
  words = []
  for scale, name in _SCALES:
    if n >= scale:
      words += _below_thousand(n // scale) + [name]
      n %= scale
  if n:
    words += _below_thousand(n)
  return " ".join(words)


def _ordinal(words: str) -> str:
  head, _, last = words.rpartition(" ")
  if last in _ORDINAL_WORDS:
    last = _ORDINAL_WORDS[last]
  elif last.endswith("y"):
    last = last[:-1] + "ieth"
  else:
    last += "th"
  return f"{head} {last}" if head else last


def _spell_number(match: re.Match) -> str:
  integer, decimals, suffix = match.groups()
  digits = integer.replace(",", "")
  if len(digits) > 15:  # Too long to be read as a number: read digit by digit.
    return " " + " ".join(_ONES[int(d)] for d in digits) + " "
  words = number_to_words(int(digits))
  if decimals:
    words += " point " + " ".join(_ONES[int(d)] for d in decimals)
  elif suffix:
    words = _ordinal(words)
  return f" {words} "


class _NumbersToWords(jiwer.AbstractTransform):
  """jiwer transform that spells out the numbers of a string (see `number_to_words`)."""

  def process_string(self, s: str) -> str:
    return _NUMBER_RE.sub(_spell_number, s)


class _PunctuationToSpace(jiwer.RemovePunctuation):
  """jiwer's punctuation removal, but each mark becomes a word break.

  "philip's twenty-one" must become "philip's twenty one", not
  "philip's twentyone".
  """

  def __init__(self):
    super().__init__()
    self.replace_token = " "


def _make_transform(numbers_to_words: bool) -> jiwer.Compose:
  steps = [
      jiwer.ToLowerCase(),
      # Typographic apostrophes and backticks count as apostrophes.
      jiwer.SubstituteRegexes({"[\u2018\u2019\u02bc`]": "'"}),
      # Thousands separators belong to the number: "1,000" -> "1000".
      jiwer.SubstituteRegexes({r"(?<=\d),(?=\d{3}(?!\d))": ""}),
  ]
  if numbers_to_words:
    steps.append(_NumbersToWords())
  steps += [
      jiwer.SubstituteRegexes({r"(?<=\w)'(?=\w)": _APOSTROPHE_GUARD}),
      _PunctuationToSpace(),
      jiwer.SubstituteRegexes({_APOSTROPHE_GUARD: "'"}),
      jiwer.RemoveWhiteSpace(replace_by_space=True),
      jiwer.RemoveMultipleSpaces(),
      jiwer.Strip(),
  ]
  return jiwer.Compose(steps)


_TRANSFORMS = {flag: _make_transform(flag) for flag in (False, True)}


def normalize(text: str, numbers_to_words: bool = False) -> str:
  """Normalizes a transcript for training targets and WER scoring.

  Lowercases; turns every punctuation mark into a word break except apostrophes
  inside words ("Don't!" -> "don't"); collapses whitespace; strips.

  Args:
    text: the raw transcript.
    numbers_to_words: also spell out digits ("42" -> "forty two",
      "3.5" -> "three point five", "21st" -> "twenty first").

  Returns:
    The normalized transcript ("" when nothing but punctuation/space remains).
  """
  if not isinstance(text, str):
    raise TypeError(f"normalize expects str, got {type(text).__name__}: {text!r}")
  return _TRANSFORMS[bool(numbers_to_words)](text)


def wer(refs: Sequence[str], hyps: Sequence[str], *,
        numbers_to_words: bool = False) -> dict:
  """Corpus word error rate after normalizing both sides with `normalize`.

  Args:
    refs: reference transcripts, one per utterance.
    hyps: hypotheses, aligned with `refs`.
    numbers_to_words: passed to `normalize` for both sides.

  Returns:
    {"wer": float, "substitutions", "deletions", "insertions", "hits",
    "num_ref_words": int}. "wer" is (S + D + I) / num_ref_words (0.0 when there
    are no reference words and no insertions, inf when only insertions).
  """
  if len(refs) != len(hyps):
    raise ValueError(f"wer: {len(refs)} references but {len(hyps)} hypotheses")
  norm_refs = [normalize(r, numbers_to_words) for r in refs]
  norm_hyps = [normalize(h, numbers_to_words) for h in hyps]
  if not norm_refs:
    counts = dict(substitutions=0, deletions=0, insertions=0, hits=0)
  else:
    out = jiwer.process_words(norm_refs, norm_hyps)
    counts = dict(substitutions=out.substitutions, deletions=out.deletions,
                  insertions=out.insertions, hits=out.hits)
  num_ref_words = sum(len(r.split()) for r in norm_refs)
  errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
  if num_ref_words:
    rate = errors / num_ref_words
  else:
    rate = 0.0 if errors == 0 else float("inf")
  return {"wer": float(rate), **{k: int(v) for k, v in counts.items()},
          "num_ref_words": int(num_ref_words)}
