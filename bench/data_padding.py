"""Benchmark: padding and throughput of random vs 1-D vs 2-D batching.

For each manifest (Kathleen train by default, plus an optional synthetic one),
the utterances are validated and tokenized exactly as the training pipeline
does, then each batching strategy is planned for a few epochs and its padding
measured (padded samples / all samples, same for tokens). Throughput is the
real pipeline (decode + resample + pad) in batches/s and audio seconds/s.

  python bench/data_padding.py
  python bench/data_padding.py --synthetic_manifest=/path/synth/train.jsonl \
      --grid=8x4,16x2,32x2 --throughput_batches=40

Writes a table to stdout and JSON to --out (default bench/results/data_padding.json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mtp_jax.machine import machine_info
from mtp_jax.data import bucketing  # noqa: E402
from mtp_jax.data import pipeline  # noqa: E402
from mtp_jax.data import tokenizer as tok_lib  # noqa: E402
from mtp_jax.data.config import data_defaults  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))


def _machine() -> dict:
  import grain  # pylint: disable=g-import-not-at-top
  return machine_info(
      affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      numpy=np.__version__, grain=getattr(grain, "__version__", "?"))


def _dynamic_random_stats(buckets, plans, samples, tokens, cfg) -> dict:
  """Random batches padded to each batch's own longest row (unbounded shapes)."""
  batches, shapes = [], []
  for plan in plans:
    for _, rows in plan:
      real = rows[rows != bucketing.EMPTY_ROW]
      shapes.append((bucketing.round_up(int(samples[real].max()), cfg.audio_pad_multiple),
                     bucketing.round_up(int(tokens[real].max()) + cfg.text_pad_extra,
                                        cfg.token_pad_multiple)))
      batches.append(rows)
  return bucketing.padding_stats(batches, shapes, samples, tokens)


def _padding_rows(utts, cfg, grid, epochs) -> list[dict]:
  samples = np.array([u.num_samples for u in utts])
  tokens = np.array([len(u.tokens) for u in utts])
  multiple = pipeline.batch_multiple(cfg, 1)
  settings = [("random", "random", cfg.num_duration_bins, cfg.num_token_bins,
               "equal_total")]
  for binning in bucketing.BINNINGS:
    for k, m in grid:
      suffix = "" if binning == "equal_total" else f" {binning}"
      settings += [("1d", f"1d {k}{suffix}", k, 1, binning),
                   ("2d", f"2d {k}x{m}{suffix}", k, m, binning)]
  rows, seen = [], set()
  for batching, name, k, m, binning in settings:
    if name in seen:
      continue
    seen.add(name)
    c = cfg.copy_and_resolve_references()
    c.batching, c.num_duration_bins, c.num_token_bins = batching, k, m
    c.binning = binning
    buckets = pipeline.make_buckets_for(utts, c, batch_multiple=multiple)
    plans = [bucketing.plan_epoch(buckets, seed=0, epoch=e, remainder=c.remainder)
             for e in range(epochs)]
    flat = [p for plan in plans for p in plan]
    stats = bucketing.plan_padding_stats(buckets, flat, samples, tokens)
    # Rows that repeat an utterance within its epoch (remainder="fill").
    real_rows = sum(int((rows != bucketing.EMPTY_ROW).sum()) for _, rows in flat)
    unique_rows = sum(len(set(rows.tolist()) - {bucketing.EMPTY_ROW})
                      for rows in ([r for _, r in plan] for plan in plans)
                      for rows in [np.concatenate(rows)])
    stats["duplicate_rows"] = 1.0 - unique_rows / max(1, real_rows)
    rows.append({"batching": name, "num_buckets": len(buckets), **stats,
                 "batches_per_epoch": len(plans[0])})
    if batching == "random":
      dyn = _dynamic_random_stats(buckets, plans, samples, tokens, c)
      dyn["duplicate_rows"] = stats["duplicate_rows"]
      rows.append({"batching": "random, per-batch max (dynamic shapes)",
                   "num_buckets": None, **dyn, "batches_per_epoch": len(plans[0])})
  return rows


def _throughput(manifest, tok, cfg, batching, num_batches) -> dict:
  c = cfg.copy_and_resolve_references()
  c.batching = batching
  it = pipeline.make_train_iterator(c, tok, seed=0, process_index=0,
                                    process_count=1, manifests=manifest)
  next(it)  # Warm-up: thread pool, first plan.
  start = time.perf_counter()
  audio_s = 0.0
  for _ in range(num_batches):
    b = next(it)
    audio_s += b["audio_len"].sum() / c.sample_rate
  elapsed = time.perf_counter() - start
  it.close()
  return {"batches_per_s": num_batches / elapsed,
          "audio_seconds_per_s": audio_s / elapsed, "timed_batches": num_batches}


def _fmt(x, pct=False):
  if x is None:
    return "-"
  return f"{100 * x:.1f}%" if pct else (f"{x:.2f}" if isinstance(x, float) else str(x))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--manifest", default="../shared/data/kathleen/train.jsonl")
  p.add_argument("--synthetic_manifest", default="",
                 help="optional second manifest, e.g. from mtp_jax.synth "
                 "(any manifest works: results are labelled by folder/file)")
  p.add_argument("--tokenizer", default="",
                 help=".model file; default: train one (vocab 256) on --manifest")
  p.add_argument("--grid", default="8x4,16x2,16x4,32x2",
                 help="comma-separated KxM: duration bins x token bins (1d uses K)")
  p.add_argument("--epochs", type=int, default=3, help="epochs planned for padding")
  p.add_argument("--binning", default=None, choices=bucketing.BINNINGS,
                 help="binning of the strategies timed for throughput "
                 "(default: the config's)")
  p.add_argument("--throughput_batches", type=int, default=20,
                 help="batches timed per strategy (0 = skip throughput)")
  p.add_argument("--num_workers", type=int, default=0)
  p.add_argument("--batch_size_multiple", type=int, default=1,
                 help="batch sizes are multiples of this (data-parallel devices)")
  p.add_argument("--out", default=os.path.join(_HERE, "results", "data_padding.json"))
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.ERROR)

  cfg = data_defaults()
  cfg.batch_size_multiple = args.batch_size_multiple
  cfg.num_workers = args.num_workers
  cfg.binning = args.binning or cfg.binning
  grid = [tuple(int(v) for v in g.lower().split("x")) for g in args.grid.split(",") if g]
  if args.tokenizer:
    tok = tok_lib.Tokenizer.load(args.tokenizer)
  else:
    tok = tok_lib.train_tokenizer(args.manifest, tempfile.mkdtemp(prefix="bench_tok_"),
                                  vocab_size=cfg.tokenizer.vocab_size)
  label = lambda m: "/".join(os.path.splitext(os.path.abspath(m))[0].split(os.sep)[-2:])
  manifests = [(label(args.manifest), args.manifest)]
  if args.synthetic_manifest:
    manifests.append((label(args.synthetic_manifest), args.synthetic_manifest))

  results = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
             "machine": _machine(), "command": " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
             "config": {k: cfg[k] for k in (
                 "audio_seconds_per_batch", "tokens_per_batch", "batch_size",
                 "audio_pad_multiple", "token_pad_multiple", "text_pad_extra",
                 "remainder", "batch_size_multiple", "num_workers", "num_threads",
                 "num_duration_bins", "num_token_bins", "binning")},
             "tokenizer_vocab_size": tok.vocab_size, "datasets": {}}
  for label, manifest in manifests:
    report = pipeline.BadInputReport()
    utts = pipeline.prepare_utterances(pipeline.load_entries(manifest, cfg, report),
                                       tok, cfg, report)
    seconds = sum(u.num_samples for u in utts) / cfg.sample_rate
    rows = _padding_rows(utts, cfg, grid, args.epochs)
    if args.throughput_batches:
      suffix = "" if cfg.binning == "equal_total" else f" {cfg.binning}"
      for batching, name in [
          ("random", "random"), ("1d", f"1d {cfg.num_duration_bins}{suffix}"),
          ("2d", f"2d {cfg.num_duration_bins}x{cfg.num_token_bins}{suffix}")]:
        tp = _throughput(manifest, tok, cfg, batching, args.throughput_batches)
        for r in rows:
          if r["batching"] == name:
            r.update(tp)
    results["datasets"][label] = {"manifest": os.path.abspath(manifest),
                                  "utterances": len(utts), "skipped": len(report),
                                  "hours": seconds / 3600, "rows": rows}
    print(f"\n{label}: {manifest} ({len(utts)} utterances, {seconds / 3600:.2f} h, "
          f"{len(report)} skipped)")
    header = (f"{'batching':<40} {'shapes':>6} {'audio pad':>9} {'token pad':>9} "
              f"{'dup rows':>8} {'batch/ep':>8} {'batch/s':>8} {'audio s/s':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
      print(f"{r['batching']:<40} {r['num_shapes']:>6} "
            f"{_fmt(r['audio_padding'], True):>9} {_fmt(r['token_padding'], True):>9} "
            f"{_fmt(r['duplicate_rows'], True):>8} {r['batches_per_epoch']:>8} "
            f"{_fmt(r.get('batches_per_s')):>8} {_fmt(r.get('audio_seconds_per_s')):>9}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2)
  print(f"\nwrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
