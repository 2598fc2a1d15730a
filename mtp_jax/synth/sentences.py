"""English sentences for speech synthesis: a built-in generator and a file loader.

`generate_sentences` composes natural-ish sentences (4 to 20 words) from
templates and word lists: people, animals, things, food, places, cities, times,
weekdays, months, prices, years, clock times and counts with numbers spelled as
words, so that text and speech agree. It is seeded and reproducible.

Example:
  >>> generate_sentences(2, seed=0)   # doctest: +SKIP
  ['The old baker carried a wooden box across the bridge.', ...]
"""
from __future__ import annotations

import os
import re
from typing import Callable

import numpy as np

from mtp_jax.synth import sentence_words as L

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve "
         "thirteen fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth "
             "eleventh twelfth").split()


def number_to_words(n: int) -> str:
  """Spells a number in 0..999_999 the British/American way.

  Args:
    n: the number.

  Returns:
    e.g. 0 -> "zero", 42 -> "forty two", 305 -> "three hundred and five",
    12000 -> "twelve thousand".
  """
  if not 0 <= n < 1_000_000:
    raise ValueError(f"number_to_words supports 0..999999, got {n}")
  if n < 20:
    return _ONES[n]
  if n < 100:
    tens, ones = divmod(n, 10)
    return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
  if n < 1000:
    hundreds, rest = divmod(n, 100)
    head = _ONES[hundreds] + " hundred"
    return head if rest == 0 else head + " and " + number_to_words(rest)
  thousands, rest = divmod(n, 1000)
  head = number_to_words(thousands) + " thousand"
  if rest == 0:
    return head
  return head + (" and " if rest < 100 else " ") + number_to_words(rest)


def year_to_words(year: int) -> str:
  """Reads a year aloud: 1984 -> "nineteen eighty four", 2005 -> "two thousand and five"."""
  century, rest = divmod(year, 100)
  if 2000 <= year < 2010:
    return number_to_words(year)
  if rest == 0:
    return number_to_words(century) + " hundred"
  tail = ("oh " + _ONES[rest]) if rest < 10 else number_to_words(rest)
  return number_to_words(century) + " " + tail


def normalize_text(text: str) -> str:
  """Lower-cases and strips punctuation: the key for comparing sentences."""
  text = text.lower().replace("\u2019", "'")
  text = re.sub(r"[^a-z0-9']+", " ", text)
  return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


class _Gen:
  """Draws sentence pieces from one numpy Generator."""

  def __init__(self, rng: np.random.Generator):
    self.rng = rng

  def pick(self, seq):
    return seq[int(self.rng.integers(len(seq)))]

  def chance(self, p: float) -> bool:
    return bool(self.rng.random() < p)

  # Numbers and times.
  def count(self) -> int:
    return self.pick((2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 20, 24, 30,
                      40, 50, 60, 75, 100, 200, 250, 500))

  def price(self) -> str:
    dollars = int(self.rng.integers(1, 100)) if self.chance(0.85) else int(
        self.rng.integers(100, 2000))
    cents = self.pick((0, 0, 5, 10, 20, 25, 50, 75, 99, 15, 40))
    unit = "dollar" if dollars == 1 else "dollars"
    text = f"{number_to_words(dollars)} {unit}"
    return text if cents == 0 else f"{text} and {number_to_words(cents)} cents"

  def clock(self) -> str:
    hour = int(self.rng.integers(1, 13))
    minute = self.pick((0, 0, 5, 10, 15, 20, 25, 30, 30, 40, 45, 50, 55))
    h = number_to_words(hour)
    style = int(self.rng.integers(4))
    if minute == 0:
      return f"{h} o'clock" if style < 2 else h
    if minute == 15 and style == 0:
      return f"quarter past {h}"
    if minute == 30 and style == 0:
      return f"half past {h}"
    if minute < 10:
      return f"{h} oh {number_to_words(minute)}"
    return f"{h} {number_to_words(minute)}"

  def time(self) -> str:
    kind = int(self.rng.integers(7))
    if kind == 0:
      return "on " + self.pick(L.WEEKDAYS)
    if kind == 1:
      return "in " + self.pick(L.MONTHS)
    if kind == 2:
      return "at " + self.clock()
    if kind == 3:
      return "in " + year_to_words(int(self.rng.integers(1850, 2031)))
    return self.pick(L.TIME_PHRASES)

  # Noun phrases: (text, plural, pronoun person).
  def subject(self) -> tuple[str, bool]:
    kind = int(self.rng.integers(8))
    if kind <= 1:
      return self.pick(L.NAMES), False
    if kind == 2:
      return f"{self.pick(L.NAMES)} and {self.pick(L.NAMES)}", True
    if kind == 3:
      word = self.pick(L.PRONOUNS)
      return word, word not in ("he", "she")
    if kind == 4:
      return f"my {self.pick(L.RELATIVES)}", False
    noun, plural = self.pick(L.PEOPLE), self.chance(0.25)
    word = noun[1] if plural else noun[0]
    det = self.pick(("the", "the", "our", "their", "a")) if not plural else self.pick(
        ("the", "the", "some", "two", "three", "our"))
    if det == "a" and self.chance(0.5):
      word = f"{self.pick(L.PERSON_ADJECTIVES)} {word}"
    elif self.chance(0.35):
      word = f"{self.pick(L.PERSON_ADJECTIVES)} {word}"
    return f"{_article(word) if det == 'a' else det} {word}", plural

  def thing(self, plural: bool = False) -> str:
    noun = self.pick(L.THINGS)
    word = noun[1] if plural else noun[0]
    if self.chance(0.5):
      word = f"{self.pick(L.ADJECTIVES)} {word}"
    return word

  def object(self) -> str:
    kind = int(self.rng.integers(7))
    if kind == 0:
      return f"{number_to_words(self.count())} {self.thing(plural=True)}"
    if kind == 1:
      return f"{self.pick(L.POSSESSIVES)} {self.thing()}"
    if kind == 2:
      return self.food()
    if kind == 3:
      animal = self.pick(L.ANIMALS)
      return f"the {self.pick(L.ADJECTIVES)} {animal[0]}" if self.chance(0.5) else f"the {animal[0]}"
    word = self.thing()
    return f"{_article(word)} {word}" if kind == 4 else f"the {word}"

  def food(self) -> str:
    return f"{self.pick(('some', 'the', 'fresh', 'more', 'warm'))} {self.pick(L.FOODS)}"

  def place(self) -> str:
    return f"{self.pick(L.PREPOSITIONS)} the {self.pick(L.PLACES)}"


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def _be(subject: str, plural: bool) -> str:
  if subject == "I":
    return "am"
  return "are" if plural or subject == "you" else "is"


def _present(verb: tuple[str, ...], plural: bool, subject: str) -> str:
  return verb[0] if plural or subject in ("I", "you") else verb[1]


# Templates: each returns a sentence without final punctuation and a mark.
def _t_past_object(g: _Gen):
  s, _ = g.subject()
  v = g.pick(L.TRANSITIVE)
  tail = g.pick((g.time(), g.place(), f"{g.place()} {g.time()}", ""))
  return f"{s} {v[2]} {g.object()} {tail}", "."


def _t_modal(g: _Gen):
  s, _ = g.subject()
  return f"{s} {g.pick(L.MODALS)} {g.pick(L.TRANSITIVE)[0]} {g.object()} {g.time()}", "."


def _t_question(g: _Gen):
  s, plural = g.subject()
  aux = g.pick(("did", "will", "can", "should"))
  v = g.pick(L.TRANSITIVE)[0]
  if g.chance(0.3):
    aux = "do" if plural or s in ("I", "you") else "does"
  return f"{aux} {s} {v} {g.object()} {g.place()}", "?"


def _t_there_are(g: _Gen):
  n = g.count()
  return f"there are {number_to_words(n)} {g.thing(plural=True)} {g.place()}", "."


def _t_animal(g: _Gen):
  a = g.pick(L.ANIMALS)
  adj = g.pick(L.ADJECTIVES)
  return (f"the {adj} {a[0]} {g.pick(L.INTRANSITIVE)[2]} {g.pick(L.ADVERBS)} "
          f"{g.place()}"), "."


def _t_price(g: _Gen):
  s, _ = g.subject()
  word = g.thing()
  verb = g.pick(("paid", "spent", "saved", "found", "lost"))
  link = {"paid": "for", "spent": "on"}.get(verb, "near")
  return f"{s} {verb} {g.price()} {link} {_article(word)} {word}", "."


def _t_costs(g: _Gen):
  word = g.thing()
  return f"the {word} {g.pick(('costs', 'cost', 'was sold for'))} {g.price()}", "."


def _t_travel(g: _Gen):
  vehicle = g.pick(("train", "bus", "ferry", "flight", "coach"))
  verb = g.pick(("leaves", "arrives", "departs", "stops"))
  return (f"the {vehicle} to {g.pick(L.CITIES)} {verb} at {g.clock()} "
          f"{g.pick(('', 'on ' + g.pick(L.WEEKDAYS), 'every morning'))}"), "."


def _t_born(g: _Gen):
  s, _ = g.subject()
  year = year_to_words(int(g.rng.integers(1900, 2025)))
  return f"{s} {g.pick(('moved to', 'lived in', 'visited', 'left'))} {g.pick(L.CITIES)} in {year}", "."


def _t_shopping(g: _Gen):
  return (f"we need {number_to_words(g.count())} {g.pick(L.FOODS)} and "
          f"{g.food()} for {g.pick(L.EVENTS)}"), "."


def _t_floor(g: _Gen):
  return (f"my {g.pick(L.RELATIVES)} lives on the {g.pick(_ORDINALS)} floor of "
          f"{_article(adj := g.pick(L.ADJECTIVES))} {adj} building {g.pick(('', 'near the ' + g.pick(L.PLACES)))}"), "."


def _t_said(g: _Gen):
  s, _ = g.subject()
  verb = g.pick(("said", "told us", "explained", "remembered", "wrote", "thinks",
                 "believes", "heard"))
  clause, _ = g.pick(_SIMPLE)(g)
  return f"{s} {verb} that {clause}", "."


def _t_when(g: _Gen):
  s, _ = g.subject()
  clause, _ = g.pick(_SIMPLE)(g)
  conj = g.pick(("when", "after", "before", "because", "although", "while"))
  return f"{conj} {s} {g.pick(L.INTRANSITIVE)[2]} {g.pick(L.ADVERBS)}, {clause}", "."


def _t_likes(g: _Gen):
  s, plural = g.subject()
  verb = _present(("like", "likes"), plural, s)
  return f"{s} {verb} to {g.pick(L.INTRANSITIVE)[0]} {g.place()} {g.pick(L.TIME_PHRASES)}", "."


def _t_progressive(g: _Gen):
  s, plural = g.subject()
  v = g.pick(L.TRANSITIVE)
  while v[0] in _STATIVE:
    v = g.pick(L.TRANSITIVE)
  return f"{s} {_be(s, plural)} {v[3]} {g.object()} {g.place()}", "."


def _t_how_many(g: _Gen):
  s, _ = g.subject()
  return (f"how many {g.thing(plural=True)} did {s} {g.pick(L.TRANSITIVE)[0]} "
          f"{g.time()}"), "?"


def _t_weather(g: _Gen):
  a, b = g.pick(L.WEATHER), g.pick(L.WEATHER)
  where = g.pick(("", f" in {g.pick(L.CITIES)}", f" {g.place()}"))
  return f"it was {a} and {b}{where} {g.pick(L.TIME_PHRASES)}", "."


def _t_meeting(g: _Gen):
  event = g.pick(L.EVENTS)
  return f"{event} {g.pick(('starts', 'ends', 'begins'))} at {g.clock()} on {g.pick(L.WEEKDAYS)}", "."


def _t_phone(g: _Gen):
  digits = " ".join(_ONES[int(d)] for d in g.rng.integers(0, 10, size=g.pick((4, 7))))
  who = g.pick(("call me", "please dial", "the number is", "write down"))
  return f"{who} {digits}", "."


def _t_directions(g: _Gen):
  turn = g.pick(("turn left", "turn right", "go straight", "cross the road"))
  minutes = number_to_words(int(g.rng.integers(2, 31)))
  return (f"{turn} at the {g.pick(_ORDINALS[:5])} corner and walk for {minutes} "
          f"minutes to the {g.pick(L.PLACES)}"), "."


def _t_imperative(g: _Gen):
  v = g.pick(L.TRANSITIVE)[0]
  return (f"please {v} the {g.thing()} {g.pick(('before', 'after'))} "
          f"{g.pick(L.EVENTS)}"), "."


def _t_room(g: _Gen):
  room = number_to_words(int(g.rng.integers(1, 500)))
  return f"room {room} is {g.pick(L.PREPOSITIONS)} the {g.pick(L.PLACES)}", "."


def _t_exclaim(g: _Gen):
  a = g.pick(L.ANIMALS)
  return f"what a {g.pick(L.ADJECTIVES)} {a[0]} that {g.pick(('is', 'was'))}", "!"


_STATIVE = ("need", "want", "like", "see")
_SIMPLE = (_t_past_object, _t_modal, _t_there_are, _t_animal, _t_progressive,
           _t_weather)
_TEMPLATES: tuple[Callable[[_Gen], tuple[str, str]], ...] = (
    _t_past_object, _t_past_object, _t_modal, _t_question, _t_there_are,
    _t_animal, _t_price, _t_costs, _t_travel, _t_born, _t_shopping, _t_floor,
    _t_said, _t_when, _t_likes, _t_progressive, _t_how_many, _t_weather,
    _t_meeting, _t_phone, _t_directions, _t_imperative, _t_room, _t_exclaim)


def _finish(body: str, mark: str) -> str:
  body = " ".join(body.split()).replace(" ,", ",")
  return body[0].upper() + body[1:] + mark


def generate_sentences(num: int, seed: int = 0, *, min_words: int = 4,
                       max_words: int = 20, unique: bool = True) -> list[str]:
  """Generates `num` English sentences, reproducibly from `seed`.

  Args:
    num: how many sentences.
    seed: random seed; the same seed gives the same list.
    min_words: fewest words per sentence (at least 1).
    max_words: most words per sentence.
    unique: no two sentences with the same `normalize_text`.

  Returns:
    Sentences with a capital first letter and final punctuation; numbers are
    spelled as words.

  Raises:
    ValueError: bad arguments, or `unique` and the grammar ran out of sentences.
  """
  if num < 0:
    raise ValueError(f"num must be >= 0, got {num}")
  if not 1 <= min_words <= max_words:
    raise ValueError(f"need 1 <= min_words <= max_words, got min_words={min_words}, "
                     f"max_words={max_words}")
  g = _Gen(np.random.default_rng(seed))
  out: list[str] = []
  seen: set[str] = set()
  attempts = 0
  while len(out) < num:
    attempts += 1
    if attempts > 50 * num + 1000:
      raise ValueError(f"could only generate {len(out)} distinct sentences of "
                       f"{min_words}-{max_words} words, {num} asked")
    sentence = _finish(*g.pick(_TEMPLATES)(g))
    key = normalize_text(sentence)
    if not min_words <= len(key.split()) <= max_words:
      continue
    if unique:
      if key in seen:
        continue
      seen.add(key)
    out.append(sentence)
  return out


def load_sentences(path: str | os.PathLike) -> list[str]:
  """Reads sentences from a text file, one per line.

  Blank lines are skipped; surrounding whitespace is stripped. For a `.tsv`
  file the last tab-separated column is the sentence (e.g. "id<TAB>text").

  Args:
    path: the file (UTF-8).

  Returns:
    The sentences in file order (duplicates kept).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file holds no sentence.
  """
  path = os.fspath(path)
  is_tsv = path.lower().endswith(".tsv")
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      text = line.rstrip("\n").split("\t")[-1] if is_tsv else line
      text = " ".join(text.split())
      if text:
        out.append(text)
  if not out:
    raise ValueError(f"{path}: no sentences found (empty file?)")
  return out
