"""SentencePiece tokenizer for transcripts, trained on normalized manifest text.

Special ids are FIXED across every model this module trains; the model, the
training loss and the decoder rely on them:

  PAD_ID = 0  padding of "text" batches (never a real token)
  BOS_ID = 1  start of transcript (the model prepends it; not in batches)
  EOS_ID = 2  end of transcript (the model appends it; `decode` stops there)
  UNK_ID = 3  unknown piece

Text is normalized with `mtp_jax.text.normalize` before training and before
every `encode`, so `decode(encode(t)) == normalize(t)` for in-vocabulary text.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, Sequence

import sentencepiece as spm

from mtp_jax import text as text_lib
from mtp_jax.config import ConfigError
from mtp_jax.data import lm_tokenizer
from mtp_jax.data import manifest as manifest_lib
from mtp_jax.data import whisper_tokenizer
from mtp_jax.data.errors import NoDataError

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3
SPECIAL_IDS = (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
# A pretrained LLaMA's own SentencePiece model (for `train.decoder_init`) has no pad
# piece and <unk> = 0: id 0 then pads (padding is masked everywhere) and a decoded
# <unk> is dropped like padding.
LLAMA_IDS = (-1, BOS_ID, EOS_ID, 0)

MODEL_PREFIX = "tokenizer"  # <dir>/tokenizer.model and <dir>/tokenizer.json


class Tokenizer:
  """A trained SentencePiece model plus the text normalization it expects.

  Attributes:
    path: the .model file.
    numbers_to_words: the `normalize` option used for training and `encode`.
    pad_id, bos_id, eos_id: the special ids (every tokenizer family has them).
  """
  pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

  def __init__(self, path: str | os.PathLike, numbers_to_words: bool = False):
    self.path = os.fspath(path)
    self.numbers_to_words = bool(numbers_to_words)
    self._sp = spm.SentencePieceProcessor(model_file=self.path)
    got = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(),
           self._sp.unk_id())
    if got not in (SPECIAL_IDS, LLAMA_IDS):
      raise ValueError(f"{self.path}: special ids (pad, bos, eos, unk) are {got},"
                       f" expected {SPECIAL_IDS} (or a LLaMA tokenizer's {LLAMA_IDS});"
                       " retrain with train_tokenizer")

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Tokenizer":
    """Loads <path> (a .model file, or a directory holding tokenizer.model).

    The normalization option is read from the sidecar tokenizer.json written by
    `train_tokenizer` when present. A Whisper tokenizer ("whisper:tiny.en", a Whisper
    tokenizer.json, or a workdir holding one) loads as a
    `whisper_tokenizer.WhisperTokenizer`; a pretrained LM's (a GGUF source, a Hugging
    Face tokenizer.json or its directory, a workdir's lm_tokenizer.json) as a
    `lm_tokenizer.LMTokenizer`. All have the same interface and special ids.
    """
    if lm_tokenizer.is_lm(path):
      return lm_tokenizer.LMTokenizer.load(path)
    if whisper_tokenizer.is_whisper(path):
      return whisper_tokenizer.WhisperTokenizer.load(path)
    path = os.fspath(path)
    if os.path.isdir(path):
      path = os.path.join(path, MODEL_PREFIX + ".model")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"tokenizer model not found: {path}")
    meta_path = os.path.splitext(path)[0] + ".json"
    meta = {}
    if os.path.isfile(meta_path):
      with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    return cls(path, numbers_to_words=meta.get("numbers_to_words", False))

  @property
  def vocab_size(self) -> int:
    """Number of ids, special ids included (may be below the requested size)."""
    return self._sp.get_piece_size()

  def normalize(self, text: str) -> str:
    """The normalization `encode` applies."""
    return text_lib.normalize(text, self.numbers_to_words)

  def encode(self, text: str) -> list[int]:
    """Normalizes and tokenizes a transcript; no bos/eos are added."""
    return self._sp.encode(self.normalize(text))

  def decode(self, ids: Iterable[int]) -> str:
    """Ids to text: stops at the first EOS_ID, drops PAD_ID and BOS_ID, and drops ids
    past this tokenizer's vocabulary (a model whose `decoder.vocab_size` is larger than
    the tokenizer, the usual case for a small corpus, never trains on them but can
    still emit one)."""
    out = []
    n = self.vocab_size
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i not in (PAD_ID, BOS_ID) and 0 <= i < n:
        out.append(i)
    return self._sp.decode(out)

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def __getstate__(self):
    return {"path": self.path, "numbers_to_words": self.numbers_to_words,
            "proto": self._sp.serialized_model_proto()}

  def __setstate__(self, state):
    self.path = state["path"]
    self.numbers_to_words = state["numbers_to_words"]
    self._sp = spm.SentencePieceProcessor(model_proto=state["proto"])


def check_tokenizer_fits(tokenizer: Tokenizer, vocab_size: int) -> None:
  """Raises ConfigError when `tokenizer` has ids the model cannot emit or embed.

  A tokenizer with fewer ids than `model.decoder.vocab_size` is fine (a small corpus
  gives a smaller vocabulary; `Tokenizer.decode` drops the extra ids a model emits).
  """
  if tokenizer.vocab_size > vocab_size:
    raise ConfigError(f"model.decoder.vocab_size={vocab_size}: the tokenizer "
                      f"{tokenizer.path} has {tokenizer.vocab_size} ids; the model needs "
                      "at least as many (raise model.decoder.vocab_size or use a smaller "
                      "tokenizer)")


def train_tokenizer_from_texts(texts: Iterable[str], model_dir: str | os.PathLike,
                               *, vocab_size: int = 256,
                               model_type: str = "unigram",
                               numbers_to_words: bool = False) -> Tokenizer:
  """Trains a SentencePiece model into <model_dir>/tokenizer.model.

  Args:
    texts: raw transcripts; normalized here, empty ones ignored.
    model_dir: output directory (created); e.g. the run's workdir.
    vocab_size: wanted vocabulary size, special ids included. It is a soft
      limit: a small corpus gives a smaller vocabulary instead of failing.
    model_type: "unigram" or "bpe".
    numbers_to_words: normalization option, stored in tokenizer.json.

  Returns:
    The loaded tokenizer.

  Raises:
    ValueError: no text, bad model_type, or vocab_size below the number of
      distinct characters plus the 4 special ids.
  """
  if model_type not in ("unigram", "bpe"):
    raise ValueError(f"tokenizer model_type must be unigram or bpe, got {model_type!r}")
  normalized = [text_lib.normalize(t, numbers_to_words) for t in texts]
  normalized = [t for t in normalized if t]
  if not normalized:
    raise NoDataError("cannot train a tokenizer: no non-empty transcript")
  model_dir = os.fspath(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  prefix = os.path.join(model_dir, MODEL_PREFIX)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(normalized), model_prefix=prefix,
        vocab_size=int(vocab_size), model_type=model_type,
        pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
        hard_vocab_limit=False, character_coverage=1.0,
        normalization_rule_name="identity",  # We normalize ourselves.
        input_sentence_size=2_000_000, shuffle_input_sentence=True,
        num_threads=2, minloglevel=2)
  except RuntimeError as e:
    m = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
    if m:
      raise ValueError(
          f"tokenizer vocab_size {vocab_size} is too small: the text has "
          f"{int(m.group(2)) - len(SPECIAL_IDS)} distinct characters, so "
          f"vocab_size must be at least {m.group(2)}") from e
    raise
  with open(prefix + ".json", "w", encoding="utf-8") as f:
    json.dump({"model_type": model_type, "requested_vocab_size": int(vocab_size),
               "numbers_to_words": bool(numbers_to_words),
               "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
               "unk_id": UNK_ID}, f, indent=2)
  return Tokenizer(prefix + ".model", numbers_to_words=numbers_to_words)


def train_tokenizer(manifests: str | Sequence[str], model_dir: str | os.PathLike,
                    *, vocab_size: int = 256, model_type: str = "unigram",
                    numbers_to_words: bool = False) -> Tokenizer:
  """Trains on the transcripts of manifests (see `train_tokenizer_from_texts`).

  Malformed manifest lines are skipped here; the data pipeline reports them.

  Args:
    manifests: comma-separated string or list of JSONL manifests.
    model_dir: output directory.
    vocab_size: see `train_tokenizer_from_texts`.
    model_type: "unigram" or "bpe".
    numbers_to_words: normalization option.
  """
  entries = manifest_lib.load_manifests(manifests, errors=[])
  if not entries:
    raise NoDataError(f"cannot train a tokenizer: no utterance in {manifests}")
  return train_tokenizer_from_texts(
      (e.text for e in entries), model_dir, vocab_size=vocab_size,
      model_type=model_type, numbers_to_words=numbers_to_words)


def load_configured(path: str | os.PathLike, merges: int = 0) -> Tokenizer:
  """`Tokenizer.load(path)`; with `merges` > 0 (`data.tokenizer.merges`), a pretrained
  LM's tokenizer keeping only its first `merges` BPE merges."""
  tok = Tokenizer.load(path)
  if not merges:
    return tok
  if not isinstance(tok, lm_tokenizer.LMTokenizer):
    raise ValueError(f"data.tokenizer.merges={merges}: {os.fspath(path)} is not a "
                     "pretrained LM's tokenizer (a GGUF or a Hugging Face tokenizer.json)")
  return tok.with_merges(merges)


def get_tokenizer(data_cfg, workdir: str | os.PathLike) -> Tokenizer:
  """The run's tokenizer: `data_cfg.tokenizer.path` if set, else the one in
  `workdir` (trained there on `data_cfg.train_manifests` on first use).
  """
  tok_cfg = data_cfg.tokenizer
  if tok_cfg.path:
    return load_configured(tok_cfg.path, tok_cfg.get("merges", 0))
  model_path = os.path.join(os.fspath(workdir), MODEL_PREFIX + ".model")
  if os.path.isfile(model_path):
    return Tokenizer.load(model_path)
  return train_tokenizer(data_cfg.train_manifests, workdir,
                         vocab_size=tok_cfg.vocab_size,
                         model_type=tok_cfg.model_type,
                         numbers_to_words=data_cfg.get("numbers_to_words", False))
