"""Whisper's byte-level BPE tokenizer, with the project's fixed special ids.

For a Speech-LLaMA whose decoder is Whisper's (`model.decoder.type='whisper'`,
`data.tokenizer.path='whisper:tiny.en'` or a Whisper checkpoint directory / its
tokenizer.json). It reads the checkpoint's own `tokenizer.json` with Hugging Face
`tokenizers` (the library that wrote it), and maps ids so PAD=0, BOS=1, EOS=2 hold as
everywhere in the project (`mtp_jax.data.tokenizer`): Whisper's <|notimestamps|>,
<|startoftranscript|> and <|endoftext|> trade ids with Whisper's 0, 1, 2
(`interop.whisper_decoder.vocab_permutation`, the same swap as the imported embedding).

Transcripts keep their case and punctuation (what Whisper's decoder was trained on),
with Whisper's leading space; word error rates normalize both sides as always
(`mtp_jax.text.wer`). A workdir stores it as `whisper_tokenizer.json`.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Mapping

import numpy as np

from mtp_jax import text as text_lib
from mtp_jax import wheels

FILE_NAME = "whisper_tokenizer.json"
PREFIX = "whisper:"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_NAMES = ("<|notimestamps|>", "<|startoftranscript|>", "<|endoftext|>")


class NotWhisperError(ValueError):
  """A tokenizer.json that is not Whisper's; the message names the file."""


def special_ids(tokenizer_json: Mapping[str, Any], src: str) -> tuple[int, int, int]:
  """Whisper's (<|notimestamps|>, <|startoftranscript|>, <|endoftext|>) ids from a
  tokenizer.json's added tokens."""
  found = {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}
  missing = [n for n in SPECIAL_NAMES if n not in found]
  if missing:
    raise NotWhisperError(f"{src}: tokenizer.json has no {missing}: not a Whisper "
                          "tokenizer")
  return tuple(found[n] for n in SPECIAL_NAMES)


def vocab_permutation(vocab_size: int, specials: tuple[int, int, int]) -> np.ndarray:
  """perm[our id] = Whisper id (and perm[Whisper id] = our id): ids 0, 1, 2 swapped with
  `specials` (<|notimestamps|>, <|startoftranscript|>, <|endoftext|>)."""
  perm = np.arange(vocab_size)
  for ours, theirs in enumerate(specials):
    perm[ours], perm[theirs] = perm[theirs], perm[ours]
  return perm


def resolve_json(source: str | os.PathLike) -> pathlib.Path:
  """"whisper:<model>" (e.g. whisper:tiny.en), a checkpoint directory, or a .json file ->
  the tokenizer.json path."""
  s = os.fspath(source)
  if s.startswith(PREFIX):
    name = s[len(PREFIX):]
    if name not in wheels.WHEEL_MODELS:
      raise FileNotFoundError(f"{s}: unknown Whisper model, expected one of "
                              f"{sorted(PREFIX + n for n in wheels.WHEEL_MODELS)}")
    return wheels.model_dir(name) / "tokenizer.json"
  p = pathlib.Path(s)
  if p.is_dir():
    for name in (FILE_NAME, "tokenizer.json"):
      if (p / name).is_file():
        return p / name
    raise FileNotFoundError(f"{p}: no {FILE_NAME} or tokenizer.json")
  if not p.is_file():
    raise FileNotFoundError(f"Whisper tokenizer not found: {p}")
  return p


def is_whisper(source: str | os.PathLike) -> bool:
  """Whether a `data.tokenizer.path` (or a workdir) names a Whisper tokenizer."""
  s = os.fspath(source)
  if s.startswith(PREFIX):
    return True
  if s.endswith(".json") and os.path.isfile(s):  # Whisper's names its transcript start
    with open(s, encoding="utf-8") as f:
      return "<|startoftranscript|>" in f.read()
  return os.path.isfile(os.path.join(s, FILE_NAME))


class WhisperTokenizer:
  """The `Tokenizer` interface (encode, decode, normalize, vocab_size, id_to_piece,
  pad_id/bos_id/eos_id) over a Whisper tokenizer.json."""
  pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

  def __init__(self, path: str | os.PathLike, text: str | None = None):
    from tokenizers import Tokenizer as HFTokenizer  # pylint: disable=g-import-not-at-top
    self.path = os.fspath(path)
    self.numbers_to_words = False
    self._json = pathlib.Path(path).read_text(encoding="utf-8") if text is None else text
    self._tok = HFTokenizer.from_str(self._json)
    meta = json.loads(self._json)
    self.specials = special_ids(meta, self.path)
    self._n = self._tok.get_vocab_size(with_added_tokens=True)
    self._perm = vocab_permutation(self._n, self.specials)
    # Whisper ids from <|endoftext|> up are special or timestamps: never text.
    self._first_special = self.specials[2]

  @classmethod
  def load(cls, source: str | os.PathLike) -> "WhisperTokenizer":
    return cls(resolve_json(source))

  @property
  def vocab_size(self) -> int:
    return self._n

  def normalize(self, text: str) -> str:
    """The project's normalization (what scoring compares)."""
    return text_lib.normalize(text)

  def encode(self, text: str) -> list[int]:
    """A transcript (case and punctuation kept, whitespace collapsed) -> our ids, with
    Whisper's leading space; no BOS/EOS."""
    ids = self._tok.encode(" " + " ".join(text.split()), add_special_tokens=False).ids
    return self._perm[np.asarray(ids, np.int64)].tolist()

  def decode(self, ids: Iterable[int]) -> str:
    """Our ids -> text: stops at EOS, drops PAD/BOS, special and timestamp tokens."""
    keep = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i in (PAD_ID, BOS_ID) or not 0 <= i < self._n:
        continue
      w = int(self._perm[i])
      if w < self._first_special:
        keep.append(w)
    return self._tok.decode(keep).strip()

  def id_to_piece(self, i: int) -> str:
    """The BPE piece, with a word-initial space written "▁" as SentencePiece does (what
    `mtp_jax.mwer.word_errors` splits words on) instead of byte-level BPE's "Ġ"."""
    piece = self._tok.id_to_token(int(self._perm[int(i)])) or ""
    return "\u2581" + piece[1:] if piece.startswith("\u0120") else piece

  def save(self, workdir: str | os.PathLike) -> None:
    pathlib.Path(workdir, FILE_NAME).write_text(self._json, encoding="utf-8")

  def __getstate__(self):
    return {"path": self.path, "json": self._json}

  def __setstate__(self, state):
    self.__init__(state["path"], state["json"])
