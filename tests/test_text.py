"""Tests of mtp_jax.text: normalization and WER."""
import hypothesis
import hypothesis.strategies as st
import pytest

from mtp_jax import text


@pytest.mark.parametrize("raw, expected", [
    ("Author of the danger trail, Philip Steels, etc.",
     "author of the danger trail philip steels etc"),
    ("  Hello,\tWORLD!\n", "hello world"),
    ("Don't stop; it's O'Neill's.", "don't stop it's o'neill's"),
    ("'Tis the dogs' bone", "tis the dogs bone"),
    ("It\u2019s fine", "it's fine"),
    ("twenty-one", "twenty one"),
    ("wait...what?!", "wait what"),
    ("\u00abQuoted\u00bb \u2014 text", "quoted text"),
    ("...", ""),
    ("", ""),
])
def test_normalize(raw, expected):
  assert text.normalize(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("42", "forty two"),
    ("0", "zero"),
    ("I have 7 cats", "i have seven cats"),
    ("100 and 115", "one hundred and one hundred fifteen"),
    ("1,000 dogs", "one thousand dogs"),
    ("1000001", "one million one"),
    ("3.5 kg", "three point five kg"),
    ("the 21st, 2nd and 12th", "the twenty first second and twelfth"),
    ("20th", "twentieth"),
    ("room 4B", "room 4b"),  # Not a number: letters glued to it.
])
def test_numbers_to_words(raw, expected):
  assert text.normalize(raw, numbers_to_words=True) == expected


def test_numbers_kept_by_default():
  assert text.normalize("I have 42 cats, 1,000 dogs") == "i have 42 cats 1000 dogs"


def test_number_to_words_range():
  assert text.number_to_words(999_999) == (
      "nine hundred ninety nine thousand nine hundred ninety nine")
  with pytest.raises(ValueError):
    text.number_to_words(-1)


def test_normalize_rejects_non_text():
  with pytest.raises(TypeError, match="expects str"):
    text.normalize(42)


@hypothesis.given(st.text(max_size=60))
@hypothesis.settings(max_examples=150, deadline=None)
def test_normalize_idempotent_and_clean(s):
  out = text.normalize(s)
  assert text.normalize(out) == out
  assert out == out.strip() and "  " not in out
  assert out == out.lower()


def test_wer_counts():
  out = text.wer(["the cat sat", "a b c d"], ["the bat sat down", "a c d"])
  assert out == {"wer": 3 / 7, "substitutions": 1, "deletions": 1,
                 "insertions": 1, "hits": 5, "num_ref_words": 7}


def test_wer_normalizes_both_sides():
  out = text.wer(["Hello, World!"], ["hello world"])
  assert out["wer"] == 0.0 and out["hits"] == 2
  assert text.wer(["I have 2 cats"], ["i have two cats"],
                  numbers_to_words=True)["wer"] == 0.0


def test_wer_edge_cases():
  assert text.wer([], [])["wer"] == 0.0
  only_insertions = text.wer(["..."], ["noise"])
  assert only_insertions["insertions"] == 1 and only_insertions["wer"] == float("inf")
  assert text.wer(["a b"], [""])["deletions"] == 2
  with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
    text.wer(["a", "b"], ["a"])
