"""Text-only batches for pretraining the decoder as a language model (`data.text_corpus`).

A from-scratch decoder learns its English from the transcripts alone; with a few
thousand sentences it memorises them and misspells unseen words it hears clearly.
Pretraining it on text (the same sentence lists the synthetic corpus draws from, and
any text the researcher has) before the speech run (`train.init_from`) is the cheap
lever SLAM-ASR-style systems get from a pretrained LLM.

A text-only run reads `data.text_corpus`, `batch_size`, `batch_size_multiple`,
`max_text_tokens`, `text_pad_extra`, `token_pad_multiple`, `bad_input_policy` and `seed`;
the tokenizer still comes from `data.tokenizer.path` or is trained on
`data.train_manifests`; there is no dev-set evaluation (no audio). Only the decoder,
embeddings and heads get gradients; the speech run should start its projector (and a
from-scratch encoder) afresh: `train.init_exclude='(projector|ctc_head)'`.

Sources (`data.text_corpus`, comma-separated): `.txt` one sentence per line, `.tsv`
the last tab-separated column (e.g. ARCTIC prompts), `.jsonl` the "text" field of a
manifest. Lines are checked like transcripts; empty ones and ones longer than
`data.max_text_tokens` follow `data.bad_input_policy` (named `file:line`).

BATCH FORMAT (numpy, this process's rows): "text" int32 [B, L] token ids without BOS/EOS (PAD 0),
"text_len" int32 [B] (0 for padding rows), "utt_id" str [B] (`file:line`). There is
no audio: the model's `forward_lm` runs the decoder over the text alone. B is
`data.batch_size` (global; each process holds B / processes rows); L = the longest
kept sentence + `text_pad_extra`, rounded up to `token_pad_multiple`, one shape for
the whole run. Every epoch visits every sentence
once in a (seed, epoch) permutation; the iterator's state (a batch counter) resumes
exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import pathlib

import numpy as np

from mtp_jax.data import bucketing
from mtp_jax.data import pipeline
from mtp_jax.data.errors import BadInputError, NoDataError
from mtp_jax.data.tokenizer import PAD_ID, Tokenizer


def read_sentences(paths: str) -> list[tuple[str, int, str | BadInputError]]:
  """(file, line, sentence) of every non-blank line of the comma-separated `paths`; a
  `.jsonl` line without a string "text" gives a BadInputError in place of the sentence.

  Raises:
    FileNotFoundError: a listed file is missing.
  """
  out = []
  for path in [p.strip() for p in paths.split(",") if p.strip()]:
    f = pathlib.Path(path)
    if not f.is_file():
      raise FileNotFoundError(f"data.text_corpus: no such file: {path}")
    with open(f, encoding="utf-8", newline="\n") as lines:
      for n, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
          continue
        if f.suffix == ".jsonl":
          try:
            line = json.loads(line)["text"]
            if not isinstance(line, str):
              raise TypeError(f"'text' is {type(line).__name__}, not a string")
          except (ValueError, KeyError, TypeError) as err:
            line = BadInputError(path, n, f"not a JSON line with a string 'text': {err!r}")
        elif f.suffix == ".tsv":
          line = line.split("\t")[-1]
        out.append((path, n, line))
  return out


def tokenize_sentences(sentences, tokenizer: Tokenizer, data_cfg, report) -> list:
  """[(utt_id "file:line", token ids)] of the usable sentences; bad ones (unreadable,
  empty, too long: `pipeline.check_transcript`) follow `data_cfg.bad_input_policy`."""
  kept = []
  for path, n, line in sentences:
    try:
      if isinstance(line, BadInputError):
        raise line
      ids = pipeline.check_transcript(line, path, n, tokenizer, data_cfg)
    except BadInputError as err:
      pipeline.handle_bad(err, data_cfg.bad_input_policy, report)
      continue
    kept.append((f"{path}:{n}", ids))
  return kept


class TextIterator:
  """Infinite, resumable iterator of text-only batches (see the module docstring);
  the same interface as `pipeline.DataIterator`."""

  def __init__(self, rows, *, batch_size: int, max_tokens: int, seed: int, report,
               process_index: int = 0, process_count: int = 1):
    self._rows = rows
    self._b = batch_size
    self._l = max_tokens
    self._seed = seed
    self._report = report
    self._pi, self._pc = process_index, process_count
    self.batches_per_epoch = math.ceil(len(rows) / batch_size)
    self._next = 0
    self._order: tuple[int, np.ndarray] | None = None
    h = hashlib.sha256(json.dumps([seed, batch_size, max_tokens, process_count]).encode())
    for utt_id, ids in rows:
      h.update(utt_id.encode() + b"|" + ids.tobytes() + b"\n")
    self._fingerprint = h.hexdigest()[:16]
    self.epoch = 0

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._order is None or self._order[0] != epoch:
      rng = np.random.default_rng([self._seed, epoch])
      self._order = (epoch, rng.permutation(len(self._rows)))
    return self._order[1]

  def __iter__(self) -> "TextIterator":
    return self

  def __next__(self) -> dict:
    self.epoch, j = divmod(self._next, self.batches_per_epoch)
    self._next += 1
    rows = self._permutation(self.epoch)[j * self._b:(j + 1) * self._b]
    local = self._b // self._pc
    text = np.full((local, self._l), PAD_ID, np.int32)
    text_len = np.zeros((local,), np.int32)
    utt_ids = [""] * local
    for r in range(local):  # the last batch of an epoch is padded with empty rows
      i = self._pi * local + r
      if i < len(rows):
        utt_id, ids = self._rows[rows[i]]
        text[r, :len(ids)] = ids
        text_len[r] = len(ids)
        utt_ids[r] = utt_id
    return {"text": text, "text_len": text_len, "utt_id": np.array(utt_ids, dtype=str)}

  @property
  def batch_shapes(self) -> list[tuple[int, int, int]]:
    """The one local (B, S=0, L) shape: S = 0, no audio."""
    return [(self._b // self._pc, 0, self._l)]

  def get_state(self) -> dict:
    return {"batches": self._next, "fingerprint": self._fingerprint}

  def set_state(self, state: dict) -> None:
    if state.get("fingerprint") != self._fingerprint:
      raise pipeline.DataStateMismatchError(
          "data iterator state is from a different text corpus/tokenizer/seed/batch "
          f"size (fingerprint {state.get('fingerprint')!r}, expected {self._fingerprint!r})")
    self._next = int(state["batches"])

  def bad_input_report(self) -> dict:
    return self._report.as_dict()

  def describe(self) -> list[dict]:
    return [{"text_only": True, "sentences": len(self._rows), "batch_size": self._b,
             "max_tokens": self._l, "batches_per_epoch": self.batches_per_epoch}]

  def close(self) -> None:
    pass


def make_text_iterator(data_cfg, tokenizer: Tokenizer, *, seed: int,
                       process_index: int | None = None,
                       process_count: int | None = None) -> TextIterator:
  """The text-only training iterator over `data_cfg.text_corpus`: global batches of
  `data.batch_size` sentences (rounded down to a multiple of `batch_size_multiple` and
  the process count, as random batching does), this process's rows of each.

  Raises:
    FileNotFoundError: a listed file is missing.
    BadInputError: under policy "error", at the first bad sentence.
    NoDataError: no usable sentence.
  """
  pi, pc = pipeline.process_layout(process_index, process_count)
  report = pipeline.BadInputReport()
  rows = tokenize_sentences(read_sentences(data_cfg.text_corpus), tokenizer, data_cfg, report)
  if not rows:
    raise NoDataError(f"data.text_corpus={data_cfg.text_corpus!r}: no usable sentence "
                      f"({len(report)} skipped: {report.rows[:3]})")
  m = pipeline.batch_multiple(data_cfg, pc)
  b = max(m, int(data_cfg.batch_size) // m * m)
  longest = max(len(ids) for _, ids in rows)
  l = bucketing.round_up(longest + data_cfg.text_pad_extra, data_cfg.token_pad_multiple)
  return TextIterator(rows, batch_size=b, max_tokens=l, seed=seed, report=report,
                      process_index=pi, process_count=pc)
