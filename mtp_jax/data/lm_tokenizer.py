"""A pretrained language model's own tokenizer (Hugging Face `tokenizer.json`, or the
one a GGUF file carries), behind the project's `Tokenizer` interface.

A pretrained decoder must read the ids its embedding was trained on, so its tokenizer
comes with it; it is never retrained. The special tokens come from the tokenizer
itself (a GGUF's `tokenizer.ggml.{bos,eos,padding}_token_id`, a HF directory's
`tokenizer_config.json`), and are moved onto the project's fixed ids (PAD 0, BOS 1,
EOS 2, which the loss, the pipeline and every decoding strategy use) by a permutation
applied here to token ids and, on import, to the embedding rows
(`interop.gguf.decoder_tensors`). For SmolLM2 (<|endoftext|> 0, <|im_start|> 1,
<|im_end|> 2) the permutation is the identity.

Transcripts keep case and punctuation (what the LM was trained on) and are encoded
with a leading space (so every word starts with a word-initial piece, as Whisper's);
word error rates normalize both sides as always (`mtp_jax.text.wer`). A workdir stores
the tokenizer as one file, `lm_tokenizer.json` (tokenizer.json text + special ids).
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Mapping

import numpy as np

from mtp_jax import gguf_file
from mtp_jax import text as text_lib
from mtp_jax.data import whisper_tokenizer

FILE_NAME = "lm_tokenizer.json"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
_CONTROL = 3  # GGUF token_type of control (special) tokens


class LMTokenizerError(ValueError):
  """A tokenizer we cannot use; the message names the file and the field."""


def special_permutation(vocab_size: int, specials: tuple[int, int, int]) -> np.ndarray:
  """perm[our id] = the tokenizer's id, with perm[0], perm[1], perm[2] = its (pad, bos,
  eos) and every other id moved as little as possible (a product of transpositions)."""
  if len(set(specials)) != 3:
    raise LMTokenizerError(f"special ids (pad, bos, eos) = {specials}: must be distinct")
  perm = np.arange(vocab_size)
  for ours, theirs in enumerate(specials):
    if not 0 <= theirs < vocab_size:
      raise LMTokenizerError(f"special id {theirs} outside the vocabulary of {vocab_size}")
    j = int(np.flatnonzero(perm == theirs)[0])
    perm[ours], perm[j] = perm[j], perm[ours]
  return perm


def specials_from_gguf(meta: Mapping[str, Any], src: str) -> tuple[int, int, int]:
  """(pad, bos, eos) from a GGUF's tokenizer metadata. A padding id equal to bos or eos
  (SmolLM2 pads with <|im_end|>) is replaced by the first other control token, so that
  padding never reads as the end of a transcript."""
  def get(key):
    k = f"tokenizer.ggml.{key}"
    if k not in meta:
      raise LMTokenizerError(f"{src}: metadata {k!r} missing")
    return int(meta[k])
  bos, eos = get("bos_token_id"), get("eos_token_id")
  pad = meta.get("tokenizer.ggml.padding_token_id")
  if pad is None or int(pad) in (bos, eos):
    types = meta.get("tokenizer.ggml.token_type") or []
    control = [i for i, t in enumerate(types) if int(t) == _CONTROL and i not in (bos, eos)]
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    pad = control[0] if control else unk
    if pad is None or int(pad) in (bos, eos):
      raise LMTokenizerError(f"{src}: no token to pad with (no control token besides "
                             f"bos {bos} and eos {eos})")
  return int(pad), bos, eos


def tokenizer_json_from_gguf(meta: Mapping[str, Any], src: str) -> str:
  """A Hugging Face tokenizer.json (text) equal to a GGUF's byte-level BPE tokenizer."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  kind = meta.get("tokenizer.ggml.model")
  if kind != "gpt2":
    raise LMTokenizerError(f"{src}: tokenizer.ggml.model={kind!r}: only byte-level BPE "
                           "('gpt2') is read from GGUF; give the model's tokenizer.json "
                           "as data.tokenizer.path instead")
  tokens = meta.get("tokenizer.ggml.tokens")
  merges = meta.get("tokenizer.ggml.merges")
  if not tokens or merges is None:
    raise LMTokenizerError(f"{src}: tokenizer.ggml.tokens / tokenizer.ggml.merges missing")
  vocab = {t: i for i, t in enumerate(tokens)}
  pairs = [tuple(m.split(" ", 1)) for m in merges]
  tok = Tokenizer(models.BPE(vocab, pairs, fuse_unk=False, byte_fallback=False))
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  pre = meta.get("tokenizer.ggml.pre", "default")
  if pre in ("smollm", "starcoder", "refact"):  # digits split one by one, then GPT-2's
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  else:
    tok.pre_tokenizer = byte_level
  tok.decoder = decoders.ByteLevel()
  types = meta.get("tokenizer.ggml.token_type") or []
  special = [AddedToken(tokens[i], special=True, normalized=False)
             for i, t in enumerate(types) if int(t) == _CONTROL]
  tok.add_special_tokens(special)
  return tok.to_str()


def _token_id(vocab: Mapping[str, int], value, name: str, src: str) -> int | None:
  if value is None:
    return None
  content = value.get("content") if isinstance(value, Mapping) else value
  if content not in vocab:
    raise LMTokenizerError(f"{src}: {name}={content!r} is not in the vocabulary")
  return int(vocab[content])


def specials_from_hf(tokenizer_json: str, config: Mapping[str, Any], src: str):
  """(pad, bos, eos) of a HF tokenizer from its tokenizer_config.json fields."""
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  vocab = Tokenizer.from_str(tokenizer_json).get_vocab(with_added_tokens=True)
  bos = _token_id(vocab, config.get("bos_token"), "bos_token", src)
  eos = _token_id(vocab, config.get("eos_token"), "eos_token", src)
  if bos is None or eos is None:
    raise LMTokenizerError(f"{src}: bos_token and eos_token are needed (the transcript's "
                           "start and end)")
  pad = _token_id(vocab, config.get("pad_token"), "pad_token", src)
  if pad is None or pad in (bos, eos):
    added = json.loads(tokenizer_json).get("added_tokens", [])
    others = [int(t["id"]) for t in added if t.get("special") and int(t["id"]) not in (bos, eos)]
    unk = _token_id(vocab, config.get("unk_token"), "unk_token", src)
    pad = others[0] if others else unk
    if pad is None or pad in (bos, eos):
      raise LMTokenizerError(f"{src}: no pad_token, and no other special token to pad with")
  return pad, bos, eos


def is_lm(source: str | os.PathLike) -> bool:
  """Whether a tokenizer path (or workdir) names a pretrained LM's tokenizer: a GGUF
  source, a workdir holding lm_tokenizer.json, or a non-Whisper tokenizer.json (file or
  directory) that is not a SentencePiece model's sidecar."""
  s = os.fspath(source)
  if gguf_file.is_gguf_source(s) or s.startswith("gguf:"):
    return True
  p = pathlib.Path(s)
  if (p / FILE_NAME).is_file() or p.name == FILE_NAME:
    return True
  if whisper_tokenizer.is_whisper(s):
    return False
  # A SentencePiece model's sidecar (tokenizer.model + tokenizer.json) is not one.
  if p.is_file() and p.suffix == ".json":
    return not p.with_suffix(".model").is_file()
  return (p / "tokenizer.json").is_file() and not (p / "tokenizer.model").is_file()


class LMTokenizer:
  """The `Tokenizer` interface (encode, decode, normalize, vocab_size, id_to_piece,
  pad_id/bos_id/eos_id) over a pretrained LM's byte-level BPE tokenizer.

  Attributes:
    path: where it was read from.
    specials: the tokenizer's own (pad, bos, eos) ids, before the permutation.
  """
  pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

  def __init__(self, path: str, tokenizer_json: str, specials: tuple[int, int, int]):
    from tokenizers import Tokenizer as HFTokenizer  # pylint: disable=g-import-not-at-top
    self.path = os.fspath(path)
    self.numbers_to_words = False
    self._json = tokenizer_json
    self._tok = HFTokenizer.from_str(tokenizer_json)
    self.specials = tuple(int(i) for i in specials)
    self._n = self._tok.get_vocab_size(with_added_tokens=True)
    self._perm = special_permutation(self._n, self.specials)  # ours -> theirs
    self._inv = np.argsort(self._perm)                        # theirs -> ours
    spec = json.loads(tokenizer_json)
    self._model = spec.get("model") or {}  # the BPE model: vocab, merges (read once)
    self._special_theirs = {int(t["id"]) for t in spec.get("added_tokens", [])
                            if t.get("special")}

  # ---------------------------------------------------------------- loading
  @classmethod
  def from_gguf(cls, source: str | os.PathLike) -> "LMTokenizer":
    s = os.fspath(source)
    s = s[len("gguf:"):] if s.startswith("gguf:") else s
    path = gguf_file.resolve(s)
    meta = gguf_file.metadata(gguf_file.reader(path), path)
    return cls(str(path), tokenizer_json_from_gguf(meta, str(path)),
               specials_from_gguf(meta, str(path)))

  @classmethod
  def from_hf(cls, source: str | os.PathLike) -> "LMTokenizer":
    """A HF tokenizer.json (file, or the directory holding it) with the special tokens
    named in the tokenizer_config.json beside it."""
    p = pathlib.Path(source)
    tj = p / "tokenizer.json" if p.is_dir() else p
    if not tj.is_file():
      raise LMTokenizerError(f"{p}: no tokenizer.json (a pretrained LM's tokenizer)")
    cfg_path = tj.parent / "tokenizer_config.json"
    if not cfg_path.is_file():
      raise LMTokenizerError(f"{cfg_path}: not found; it names the bos/eos/pad tokens of "
                             f"{tj}")
    text = tj.read_text(encoding="utf-8")
    return cls(str(tj), text, specials_from_hf(
        text, json.loads(cfg_path.read_text(encoding="utf-8")), str(cfg_path)))

  @classmethod
  def load(cls, source: str | os.PathLike) -> "LMTokenizer":
    """A workdir (its lm_tokenizer.json), an lm_tokenizer.json, a GGUF source, or a HF
    tokenizer.json / directory."""
    s = os.fspath(source)
    p = pathlib.Path(s)
    stored = p / FILE_NAME if p.is_dir() else p
    if stored.name == FILE_NAME and stored.is_file():
      d = json.loads(stored.read_text(encoding="utf-8"))
      return cls(d["source"], d["tokenizer"], tuple(d["specials"]))
    if gguf_file.is_gguf_source(s) or s.startswith("gguf:"):
      return cls.from_gguf(s)
    return cls.from_hf(s)

  def save(self, workdir: str | os.PathLike) -> None:
    out = pathlib.Path(workdir, FILE_NAME)
    out.write_text(json.dumps({"source": self.path, "specials": list(self.specials),
                               "tokenizer": self._json}), encoding="utf-8")

  def with_merges(self, n: int) -> "LMTokenizer":
    """The same tokenizer keeping only its first `n` BPE merges (the likeliest ones).

    Words are then spelt with shorter pieces (SmolLM2 with 2,000 merges: ~1,900
    distinct pieces instead of 13,400 on the recipe's transcripts, 1.5x as many tokens
    per sentence), each of which a small training set holds many times. Ids keep
    their meaning (the vocabulary and the embedding rows are untouched): the LM reads
    and writes a word in pieces it knows, just not in its usual ones.
    """
    merges = self._model.get("merges")
    if self._model.get("type") != "BPE" or merges is None:
      raise LMTokenizerError(f"{self.path}: data.tokenizer.merges={n}: not a BPE tokenizer")
    if not 0 < int(n) <= len(merges):
      raise LMTokenizerError(f"{self.path}: data.tokenizer.merges={n}: must be in "
                             f"[1, {len(merges)}] (0 keeps them all)")
    d = json.loads(self._json)  # a copy to change
    d["model"]["merges"] = merges[:int(n)]
    # A word that is itself in the vocabulary is spelt by the kept merges too.
    d["model"]["ignore_merges"] = False
    return LMTokenizer(self.path, json.dumps(d, ensure_ascii=False), self.specials)

  @property
  def num_merges(self) -> int:
    return len(self._model.get("merges") or [])

  def unit_ids(self) -> np.ndarray:
    """Every id `encode` can produce, and PAD (the CTC blank), ascending [U] int32:
    the single-symbol tokens and the results of the kept merges. With few merges it
    is a small part of the vocabulary (SmolLM2, 2,000 merges: 2,236 of 49,152 ids),
    and a CTC head need score no other id."""
    vocab = self._model["vocab"]
    merges = self._model.get("merges") or []
    pieces = {t for t in vocab if len(t) == 1}
    pieces |= {"".join(m.split(" ", 1) if isinstance(m, str) else m) for m in merges}
    theirs = [vocab[t] for t in pieces if t in vocab and vocab[t] not in self._special_theirs]
    ours = self._inv[np.asarray(theirs, np.int64)]
    return np.unique(np.concatenate([[PAD_ID], ours])).astype(np.int32)

  # ---------------------------------------------------------------- interface
  @property
  def vocab_size(self) -> int:
    return self._n

  def normalize(self, text: str) -> str:
    """The project's normalization (what scoring compares)."""
    return text_lib.normalize(text)

  def encode(self, text: str) -> list[int]:
    """A transcript (case and punctuation kept, whitespace collapsed) -> our ids, with a
    leading space; no BOS/EOS."""
    ids = self._tok.encode(" " + " ".join(text.split()), add_special_tokens=False).ids
    return self._inv[np.asarray(ids, np.int64)].tolist()

  def encode_prompt(self, text: str) -> list[int]:
    """A prompt as written (no leading space added; special tokens in it are parsed)."""
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return self._inv[np.asarray(ids, np.int64)].tolist()

  def decode(self, ids: Iterable[int]) -> str:
    """Our ids -> text: stops at EOS, drops PAD/BOS and every other special token."""
    keep = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i in (PAD_ID, BOS_ID) or not 0 <= i < self._n:
        continue
      theirs = int(self._perm[i])
      if theirs not in self._special_theirs:
        keep.append(theirs)
    return self._tok.decode(keep).strip()

  def id_to_piece(self, i: int) -> str:
    """The BPE piece, a word-initial space written "▁" (as SentencePiece does)."""
    piece = self._tok.id_to_token(int(self._perm[int(i)])) or ""
    return "\u2581" + piece[1:] if piece.startswith("\u0120") else piece

  def __getstate__(self):
    return {"path": self.path, "json": self._json, "specials": self.specials}

  def __setstate__(self, state):
    self.__init__(state["path"], state["json"], state["specials"])
