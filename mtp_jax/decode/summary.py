"""Decoding a whole manifest: hypotheses, WER, calls, acceptance, RTFx, latency.

Used by `decode.py` and `bench/decode.py`; `decode_interleaved` decodes with several
strategies batch by batch, so their timings are side by side (the demo's). Timing: the
first batch of every new shape is run once to compile (reported as compile time) and
then timed again, so decode seconds are steady state.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

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
  tally = _Tally(tokenizer, sample_rate)
  for batch in batches:
    tally.run(batch, lambda audio, alen: decode(
        model, params, audio, alen, strategy=strategy, max_new_tokens=max_new_tokens,
        **decode_kw))
  summary = tally.summary(strategy, numbers_to_words)
  report = getattr(batches, "bad_input_report", None)
  if report is not None:  # read after decoding: it includes rows that failed to read
    rows = report()["rows"]
    summary.update(skipped=len(rows), skipped_rows=rows)
  return dict(records=tally.records, summary=summary)


def decode_interleaved(model, params, tokenizer, batches: Iterable[dict], *,
                       strategies: list[str], max_new_tokens: int, sample_rate: int = 16000,
                       numbers_to_words: bool = False,
                       on_batch: Callable[[int, int], None] | None = None,
                       **decode_kw) -> dict[str, dict]:
  """`decode_batches` for several strategies at once, timed side by side: each batch is
  decoded by every strategy in turn (the order rotated from batch to batch), so a
  machine that other work slows down for a while slows every strategy alike and the
  ratios of their decode seconds stay fair. Returns {strategy: {"records", "summary"}},
  each as `decode_batches` returns it (`decode_kw` go to every strategy). `on_batch(n,
  total)` is called after the n-th of `total` batches (progress)."""
  report = getattr(batches, "bad_input_report", None)
  batches = list(batches)
  tallies = {s: _Tally(tokenizer, sample_rate) for s in strategies}
  for n, batch in enumerate(batches):
    for j in range(len(strategies)):
      s = strategies[(n + j) % len(strategies)]
      tallies[s].run(batch, lambda audio, alen, s=s: decode(
          model, params, audio, alen, strategy=s, max_new_tokens=max_new_tokens,
          **decode_kw))
    if on_batch is not None:
      on_batch(n + 1, len(batches))
  out = {s: dict(records=t.records, summary=t.summary(s, numbers_to_words))
         for s, t in tallies.items()}
  if report is not None:  # as decode_batches: the rows skipped while reading
    rows = report()["rows"]
    for o in out.values():
      o["summary"].update(skipped=len(rows), skipped_rows=rows)
  return out


class _Tally:
  """One strategy's decoded batches: records, calls, acceptance, timing. The first
  batch of every new shape is run once to compile (counted as compile time), then
  timed again."""

  def __init__(self, tokenizer, sample_rate: int):
    self.tokenizer, self.sample_rate = tokenizer, sample_rate
    self.records, self.latencies, self.compile_s, self.seen = [], [], 0.0, set()
    self.audio_s = 0.0
    self.calls_all, self.accepted_all, self.batch_calls = [], [], []

  def run(self, batch: dict, fn) -> None:
    """Decodes `batch` with `fn(audio, audio_len)` (a `decode` call) and records it."""
    audio, alen = batch["audio"], np.asarray(batch["audio_len"])
    run = lambda: jax.block_until_ready(fn(audio, alen))  # noqa: E731
    if audio.shape not in self.seen:
      t0 = time.perf_counter()
      run()
      self.compile_s += time.perf_counter() - t0
      self.seen.add(audio.shape)
    t0 = time.perf_counter()
    res = run()
    self.latencies.append(time.perf_counter() - t0)
    res = jax.tree_util.tree_map(np.asarray, res)
    self.batch_calls.append(int(res.total_calls))
    for i in np.flatnonzero(alen > 0):
      ids = res.tokens[i, :res.lengths[i]].tolist()
      self.records.append(dict(utt_id=str(batch["utt_id"][i]), ref=str(batch["ref_text"][i]),
                               hyp=self.tokenizer.decode(ids), calls=int(res.calls[i]),
                               tokens=ids))
      self.calls_all.append(int(res.calls[i]))
      self.accepted_all.append(res.accepted[i])
      self.audio_s += float(alen[i]) / self.sample_rate

  def summary(self, strategy: str, numbers_to_words: bool) -> dict:
    records, latencies = self.records, self.latencies
    decode_s = float(np.sum(latencies))
    calls = np.asarray(self.calls_all, np.float64)
    acc = (np.asarray(self.accepted_all, np.float64).reshape(len(records), -1) if records
           else np.zeros((0, 0)))
    w = text_lib.wer([r["ref"] for r in records], [r["hyp"] for r in records],
                     numbers_to_words=numbers_to_words)
    emitted = acc.sum()
    return dict(
        strategy=strategy, utterances=len(records), wer=w["wer"],
        substitutions=w["substitutions"], deletions=w["deletions"],
        insertions=w["insertions"], num_ref_words=w["num_ref_words"],
        calls_per_utt=float(calls.mean()) if len(calls) else 0.0,
        tokens_per_call=float(emitted / max(calls.sum(), 1)),
        acceptance_per_head=[float(x) for x in acc.sum(0) / max(calls.sum(), 1)],
        batch_calls=int(np.sum(self.batch_calls)),
        audio_s=self.audio_s, decode_s=decode_s, compile_s=self.compile_s,
        rtfx=self.audio_s / decode_s if decode_s else 0.0,
        latency_p50_s=float(np.percentile(latencies, 50)) if latencies else 0.0,
        latency_p90_s=float(np.percentile(latencies, 90)) if latencies else 0.0,
        batches=len(latencies))


def vs_greedy(greedy: dict, row: dict, *, calls: str = "calls_per_utt",
              seconds: str = "decode_s") -> dict:
  """`row`'s decoder calls and time against `greedy`'s (two summary rows):
  {"calls_reduction": greedy's calls / the row's (> 1: fewer calls; None when the row
  makes no decoder call, e.g. ctc), "speedup": greedy's seconds / the row's (> 1:
  faster; None when either is untimed)}. `calls` / `seconds` name the rows' fields."""
  timed = greedy.get(seconds) is not None and row.get(seconds) is not None
  return {"calls_reduction": greedy[calls] / row[calls] if row[calls] > 0 else None,
          "speedup": greedy[seconds] / max(row[seconds], 1e-9) if timed else None}


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
