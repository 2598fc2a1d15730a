"""Periodic greedy-decode WER on the dev manifest."""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from mtp_jax import sharding as sharding_lib
from mtp_jax import text as text_lib


def evaluate(model, params, batches, tokenizer, mesh, rules, *, max_new_tokens: int,
             max_utterances: int = 0, numbers_to_words: bool = False,
             decode_fn=None, strategy: str = "greedy") -> tuple[dict, list[tuple[str, str, str]]]:
  """Decodes every utterance of `batches` (greedy by default) and scores WER.

  Args:
    model: eval-mode SpeechLLaMA; params: its (sharded) params.
    batches: `make_eval_batches(...)` (this process's rows of each global batch).
    tokenizer: to turn ids into text.
    mesh, rules: for the global input arrays.
    max_new_tokens: decode budget per utterance.
    max_utterances: stop after this many (0 = all).
    numbers_to_words: WER normalization option.
    decode_fn: default `mtp_jax.decode.api.decode`.
    strategy: passed to `decode_fn` ("greedy": head 1; "ctc": the encoder's CTC head).
  Returns:
    ({"wer", "num_ref_words", "errors", "num_utterances"}, [(utt_id, ref, hyp)] of
    this process).
  """
  if decode_fn is None:
    from mtp_jax.decode.api import decode as decode_fn  # pylint: disable=g-import-not-at-top
  pi = jax.process_index()
  errors = words = utts = seen_rows = 0
  examples = []
  from mtp_jax.train.step import trace_context  # pylint: disable=g-import-not-at-top
  with trace_context(mesh, rules):
    for batch in batches:
      local = batch["audio"].shape[0]
      arrs = [jax.make_array_from_process_local_data(
          sharding_lib.batch_sharding(mesh, rules, x.ndim), x)
              for x in (np.asarray(batch["audio"], np.float32),
                        np.asarray(batch["audio_len"], np.int32))]
      out = decode_fn(model, params, arrs[0], arrs[1], strategy=strategy,
                      max_new_tokens=max_new_tokens)
      tokens = np.asarray(multihost_utils.process_allgather(out.tokens, tiled=True))
      lengths = np.asarray(multihost_utils.process_allgather(out.lengths, tiled=True))
      tokens = tokens[pi * local:(pi + 1) * local]
      lengths = lengths[pi * local:(pi + 1) * local]
      refs, hyps = [], []
      for r in range(local):
        if not batch["utt_id"][r]:
          continue  # batch padding row
        hyp = tokenizer.decode(tokens[r, :lengths[r]])
        refs.append(str(batch["ref_text"][r]))
        hyps.append(hyp)
        examples.append((str(batch["utt_id"][r]), refs[-1], hyp))
      w = text_lib.wer(refs, hyps, numbers_to_words=numbers_to_words)
      errors += w["substitutions"] + w["deletions"] + w["insertions"]
      words += w["num_ref_words"]
      utts += len(refs)
      seen_rows += local * jax.process_count()  # same on every process: no desync
      if max_utterances and seen_rows >= max_utterances:
        break
  totals = np.asarray(multihost_utils.process_allgather(
      np.array([errors, words, utts], np.int64))).reshape(-1, 3).sum(0)
  errors, words, utts = (int(x) for x in totals)
  return ({"wer": errors / max(words, 1), "errors": errors, "num_ref_words": words,
           "num_utterances": utts}, examples)
