"""Decoding a whole manifest: hypotheses, WER, calls, acceptance, RTFx, latency.

Used by `decode.py` and `bench/decode.py`. Timing: the first batch of every new
shape is run once to compile (reported as compile time) and then timed again, so
decode seconds are steady state.
"""
from __future__ import annotations

import time
from typing import Iterable

import jax
import numpy as np

from mtp_jax import text as text_lib
from mtp_jax.decode.api import decode


def decode_batches(model, params, tokenizer, batches: Iterable[dict], *, strategy: str,
                   max_new_tokens: int, sample_rate: int = 16000,
                   numbers_to_words: bool = False, **decode_kw) -> dict:
  """Decodes every batch; returns {"records": [...], "summary": {...}}.

  Args:
    model, params: the model.
    tokenizer: `mtp_jax.data.tokenizer.Tokenizer` (ids -> text).
    batches: dicts with "audio" [B,S], "audio_len" [B] (0 = padding row),
      "utt_id" [B], "ref_text" [B] (as from `make_eval_batches`). When it has
      `bad_input_report()` (`EvalBatches`), the summary counts and names the rows it
      skipped: "skipped" and "skipped_rows" ([{"manifest", "line", "reason", "stage"}]).
    strategy, max_new_tokens, **decode_kw: passed to `api.decode`.
    sample_rate: of "audio" (for RTFx).
    numbers_to_words: WER normalization (`text.wer`), as in train-time eval: pass the
      run's `config.data.numbers_to_words`.
  """
  records, latencies, compile_s, seen = [], [], 0.0, set()
  audio_s = 0.0
  calls_all, accepted_all, batch_calls = [], [], []
  for batch in batches:
    audio, alen = batch["audio"], np.asarray(batch["audio_len"])
    run = lambda: jax.block_until_ready(decode(  # noqa: E731
        model, params, audio, alen, strategy=strategy, max_new_tokens=max_new_tokens,
        **decode_kw))
    if audio.shape not in seen:
      t0 = time.perf_counter()
      run()
      compile_s += time.perf_counter() - t0
      seen.add(audio.shape)
    t0 = time.perf_counter()
    res = run()
    latencies.append(time.perf_counter() - t0)
    res = jax.tree_util.tree_map(np.asarray, res)
    batch_calls.append(int(res.total_calls))
    for i in np.flatnonzero(alen > 0):
      ids = res.tokens[i, :res.lengths[i]].tolist()
      records.append(dict(utt_id=str(batch["utt_id"][i]), ref=str(batch["ref_text"][i]),
                          hyp=tokenizer.decode(ids), calls=int(res.calls[i]), tokens=ids))
      calls_all.append(int(res.calls[i]))
      accepted_all.append(res.accepted[i])
      audio_s += float(alen[i]) / sample_rate
  decode_s = float(np.sum(latencies))
  calls = np.asarray(calls_all, np.float64)
  acc = (np.asarray(accepted_all, np.float64).reshape(len(records), -1) if records
         else np.zeros((0, 0)))
  w = text_lib.wer([r["ref"] for r in records], [r["hyp"] for r in records],
                   numbers_to_words=numbers_to_words)
  emitted = acc.sum()
  summary = dict(
      strategy=strategy, utterances=len(records), wer=w["wer"],
      substitutions=w["substitutions"], deletions=w["deletions"],
      insertions=w["insertions"], num_ref_words=w["num_ref_words"],
      calls_per_utt=float(calls.mean()) if len(calls) else 0.0,
      tokens_per_call=float(emitted / max(calls.sum(), 1)),
      acceptance_per_head=[float(x) for x in acc.sum(0) / max(calls.sum(), 1)],
      batch_calls=int(np.sum(batch_calls)),
      audio_s=audio_s, decode_s=decode_s, compile_s=compile_s,
      rtfx=audio_s / decode_s if decode_s else 0.0,
      latency_p50_s=float(np.percentile(latencies, 50)) if latencies else 0.0,
      latency_p90_s=float(np.percentile(latencies, 90)) if latencies else 0.0,
      batches=len(latencies))
  report = getattr(batches, "bad_input_report", None)
  if report is not None:  # read after decoding: it includes rows that failed to read
    rows = report()["rows"]
    summary.update(skipped=len(rows), skipped_rows=rows)
  return dict(records=records, summary=summary)


def calls_ceiling(greedy_calls, emit_width: int) -> np.ndarray:
  """The fewest decoder calls an exact strategy can make, per utterance.

  An exact strategy (output = greedy's, e.g. verify, tree) emits one token with the
  prefill (nothing to verify yet) and at most `emit_width` (K, the number of heads)
  with each later call. Greedy emits one per call, EOS included, so its call count c
  is the number of emissions, and no exact K-token strategy can do better than
  1 + ceil((c - 1) / K) calls: the count when every draft is accepted. Short
  transcripts cap the achievable calls reduction well below K: on Kathleen test
  (~11 BPE tokens per utterance) K=4 gives at most ~2.9x.

  Args:
    greedy_calls: [N] greedy's decoder calls per utterance (`decode_batches` records'
      "calls"; 0 = a row that made no call).
    emit_width: the most tokens one later call may emit (>= 1).
  Returns:
    [N] float64 calls.
  """
  if emit_width < 1:
    raise ValueError(f"emit_width={emit_width}: expected >= 1")
  c = np.asarray(greedy_calls, np.float64)
  return np.where(c > 0, 1 + np.ceil(np.maximum(c - 1, 0) / emit_width), 0.0)


def describe_skipped(rows: list[dict]) -> str:
  """Lines naming each skipped row ("<manifest>:<line>: <reason>")."""
  return "\n".join(f"  {r['manifest']}:{r['line']}: {r['reason']}" for r in rows)


def format_table(rows: list[dict], columns: list[str]) -> str:
  """A plain-text table of `rows` (dicts) restricted to `columns`."""
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.3f}"
    if isinstance(v, list):
      return "/".join(f"{x:.2f}" for x in v)
    return str(v)
  cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
  lines = ["  ".join(c.ljust(wd) for c, wd in zip(columns, widths))]
  lines += ["  ".join(x.ljust(wd) for x, wd in zip(row, widths)) for row in cells]
  return "\n".join(lines)
