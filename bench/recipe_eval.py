"""Evaluates a real-speech recipe model on Kathleen, FSDD and AN4 test: greedy vs verify.

For each test set and strategy this does what
`python decode.py --workdir W --manifest <set> --strategy <s>` does (same library
calls: `restore_for_inference`, `make_eval_batches`, `decode_batches`; hypotheses
JSONL and summary written next to each other under `<workdir>/recipe_eval/`), but in
ONE process, so the checkpoint is loaded once and the verify-vs-greedy speedup is a
ratio measured side by side on the same machine. Compile time is reported apart
(`compile_s`); `decode_s` is steady state. FSDD is 8 kHz and is resampled by the loader.

  python bench/recipe_eval.py --workdir runs/realmix_cpu --max_utts 100
  python bench/recipe_eval.py --workdir runs/realmix_gpu --batch_size 32
  python bench/recipe_eval.py --add_ceiling bench/results/whxs_latent_k4_b16.json

Writes bench/results/recipe_eval.json: {"machine", "date", "command", "workdir", "step",
"rows": [summary + test_set, calls_reduction, speedup, decode_py_command; exact
multi-token strategies also calls_reduction_ceiling, the reduction with every draft
accepted]}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mtp_jax.checkpoint import newest_step_dir  # noqa: E402
from mtp_jax.machine import machine_info, write_result  # noqa: E402
from mtp_jax.data.manifest import write_subset  # noqa: E402
from mtp_jax.decode.registry import split_spec  # noqa: E402

TEST_SETS = {"kathleen_test": "kathleen/test.jsonl", "fsdd_test": "fsdd/test.jsonl",
             "an4_test": "an4/test.jsonl",
             # Training data, not a test set: how well a model fits what it was trained on.
             "kathleen_train": "kathleen/train.jsonl"}


def subset_manifest(manifest: str, max_utts: int, tmp: str) -> str:
  """The first `max_utts` lines of `manifest` with absolute audio paths (0 = all)."""
  if not max_utts:
    return manifest
  out = os.path.join(tmp, os.path.basename(os.path.dirname(manifest)) + "_subset.jsonl")
  return write_subset(manifest, out, max_utts)


def add_ratios(rows: list[dict], greedy_calls: dict | None = None, num_heads: int = 1) -> None:
  """Sets calls_reduction and speedup of each row vs the greedy row of its test set, and
  for an exact multi-token strategy (verify, tree) calls_reduction_ceiling: the
  reduction if every draft were accepted (`summary.calls_ceiling` of greedy's calls per
  utterance, `greedy_calls[test_set]`, with K = `num_heads` tokens per call)."""
  from mtp_jax.decode import registry  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.summary import calls_ceiling, vs_greedy  # pylint: disable=g-import-not-at-top
  greedy = {r["test_set"]: r for r in rows if r["strategy"] == "greedy"}
  for r in rows:
    g = greedy.get(r["test_set"])
    if g is not None:
      # ctc rows make no decoder call; --shared_cpu rows are not timed: None there.
      r.update(vs_greedy(g, r))
      calls = (greedy_calls or {}).get(r["test_set"])
      sname = split_spec(r["strategy"])[0]
      if (calls is not None and num_heads > 1 and sname != "greedy"
          and registry.get(sname).exact):
        best = float(np.mean(calls_ceiling(calls, num_heads)))
        r["calls_reduction_ceiling"] = g["calls_per_utt"] / best if best else None


def add_ceiling(path: str) -> list[str]:
  """Adds calls_reduction_ceiling to an earlier result file in place, from the greedy
  hypotheses its rows name (their per-utterance calls) and its workdir's K. Returns the
  test sets it could not do (hypotheses gone, or not the row's utterances)."""
  with open(path) as f:
    result = json.load(f)
  with open(pathlib.Path(result["workdir"]) / "config.json") as f:
    num_heads = int(json.load(f)["model"]["mtp"]["num_heads"])
  greedy_calls, missing = {}, []
  for r in result["rows"]:
    if r["strategy"] != "greedy":
      continue
    hyp = pathlib.Path(r.get("hypotheses") or "")
    calls = ([json.loads(line)["calls"] for line in open(hyp)] if hyp.is_file() else [])
    if len(calls) == r["utterances"]:
      greedy_calls[r["test_set"]] = calls
    else:
      missing.append(r["test_set"])
  add_ratios(result["rows"], greedy_calls, num_heads)
  write_result(path, result)
  return missing


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--add_ceiling", nargs="+", metavar="JSON",
                 help="only add calls_reduction_ceiling to these earlier result files "
                      "(from the greedy hypotheses they name) and exit")
  p.add_argument("--workdir", help="training workdir")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
  p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                 help="shared data folder (kathleen/, fsdd/, an4/)")
  p.add_argument("--sets", default="kathleen_test,fsdd_test,an4_test",
                 help=f"comma-separated, some of {', '.join(TEST_SETS)}")
  p.add_argument("--strategies", default="greedy,verify",
                 help="comma-separated strategy specs, options after colons: "
                      "greedy,threshold:threshold=0.8,beam:beam=4")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--max_utts", type=int, default=0, help="first N utterances per set (0 = all)")
  p.add_argument("--max_new_tokens", type=int, default=0,
                 help="token cap (0 = config.data.max_text_tokens)")
  p.add_argument("--shared_cpu", action="store_true",
                 help="another job shares the CPU: WER and calls only; speed columns "
                      "(rtfx, latency, speedup) are dropped rather than recorded disturbed")
  p.add_argument("--hyp_dir", default=None, help="hypotheses (default <workdir>/recipe_eval)")
  p.add_argument("--out", default=str(ROOT / "bench" / "results" / "recipe_eval.json"))
  args = p.parse_args(argv)
  if args.add_ceiling:
    for path in args.add_ceiling:
      missing = add_ceiling(path)
      print(f"{path}: ceiling added" + (f"; no greedy hypotheses for {', '.join(missing)}"
                                        if missing else ""))
    return 0
  if not args.workdir:
    p.error("--workdir is required")

  import jax  # pylint: disable=g-import-not-at-top
  from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.pipeline import make_eval_batches, scoring_data_config  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.summary import decode_batches, format_table  # pylint: disable=g-import-not-at-top
  from mtp_jax.model import encoders  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top

  sets = [s for s in args.sets.split(",") if s]
  for s in sets:
    if s not in TEST_SETS:
      p.error(f"--sets: unknown test set {s!r}, expected some of {sorted(TEST_SETS)}")
  config, params, tokenizer = restore_for_inference(args.workdir, step=args.step)
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  max_new = args.max_new_tokens or int(config.data.max_text_tokens)
  hyp_dir = pathlib.Path(args.hyp_dir or pathlib.Path(args.workdir) / "recipe_eval")
  hyp_dir.mkdir(parents=True, exist_ok=True)
  rows, greedy_calls = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in sets:
      manifest = os.path.join(args.data, TEST_SETS[name])
      if not os.path.exists(manifest):
        print(f"{name}: {manifest} missing, skipped", file=sys.stderr)
        continue
      # Test utterances are never dropped for training-time limits; every bad row is
      # counted and named in the row's "skipped".
      data = scoring_data_config(config.data, encoders.max_audio_seconds(model.cfg))
      eval_batches = make_eval_batches(subset_manifest(manifest, args.max_utts, tmp), tokenizer,
                                       data, batch_size=args.batch_size)
      batches = list(eval_batches)
      bad = eval_batches.bad_input_report()  # after reading: with rows that failed to read
      for strategy in args.strategies.split(","):
        sname, options = split_spec(strategy)
        out = decode_batches(model, params, tokenizer, batches, strategy=sname,
                             max_new_tokens=max_new, sample_rate=int(config.data.sample_rate),
                             numbers_to_words=bool(config.data.numbers_to_words), **options)
        tag = re.sub(r"[^A-Za-z0-9.]+", "_", strategy)
        hyp = hyp_dir / f"{name}_{tag}_b{args.batch_size}.jsonl"
        with open(hyp, "w") as f:
          for r in out["records"]:
            f.write(json.dumps(r) + "\n")
        shown = os.path.relpath(manifest, ROOT)  # no machine-specific paths in results
        flags = "".join(f" --{k} {v}" for k, v in options.items())  # decode.py's option flags
        row = dict(out["summary"], strategy=strategy, test_set=name, manifest=shown,
                   hypotheses=str(hyp), skipped=bad["num_skipped"], skipped_rows=bad["rows"],
                   decode_py_command=(f"python decode.py --workdir {args.workdir} --manifest "
                                      f"{shown} --strategy {sname} --batch_size "
                                      f"{args.batch_size}{flags}"))
        with open(hyp.with_suffix(".summary.json"), "w") as f:
          json.dump(row, f, indent=2)
        rows.append(row)
        if sname == "greedy" and not options:
          greedy_calls[name] = [r["calls"] for r in out["records"]]
        print(format_table([row], ["test_set", "strategy", "utterances", "skipped", "wer",
                                   "calls_per_utt",
                                   "tokens_per_call", "rtfx", "compile_s"]), flush=True)
  add_ratios(rows, greedy_calls, model.cfg.mtp.num_heads)
  if args.shared_cpu:
    for r in rows:
      for k in ("rtfx", "latency_p50_s", "latency_p90_s", "decode_s", "compile_s", "speedup"):
        r[k] = None
  cols = ["test_set", "strategy", "wer", "calls_per_utt", "calls_reduction",
          "calls_reduction_ceiling", "speedup"]
  print("\n" + format_table(rows, cols))
  result = dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      machine=machine_info(),
      command="python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]
                                   if argv is None else ["bench/recipe_eval.py", *argv]),
      workdir=args.workdir, step=args.step if args.step is not None else newest_step_dir(args.workdir),
      trained=True, max_new_tokens=max_new, timing="not recorded (shared CPU)"
      if args.shared_cpu else "alone", rows=rows)
  write_result(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
