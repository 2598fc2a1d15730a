"""Long recordings, end to end: our models vs faster-whisper's own long-form transcribe().

Every system transcribes the same long-form recordings (`python -m mtp_jax.data.longform`:
Kathleen test joined into ~1- and ~5-minute recordings, FSDD digit strings) from their
files, in one run, and is scored over whole recordings (`longform.score_recordings`):

* `ours:<workdir>:<strategy>:<segmenter>`: `mtp_jax.decode.transcribe.Transcriber`
  (chunked at silences or in overlapping windows, chunks of a recording batched,
  runaway guards on) for each --workdirs x --strategies x --segmenters, one recording
  at a time; with --across_files also `...:across`: every recording of the set handed
  to one `transcribe_many` call, so chunks of different recordings share batches (a
  batch job's throughput; its warm-up transcribes the whole set once, untimed, so every
  batch shape is compiled before the clock).
* `ours:<workdir>:greedy:utterances` (--per_utterance): the same model decoding each
  recording's utterances one file at a time (the clips the recording was built from,
  under --data), their texts joined: the baseline of `wer_vs_utterances` (long-form
  WER / this WER: what the boundaries cost).
* `faster-whisper <model> beam <b> vad <on|off>`: `WhisperModel.transcribe(path,
  language="en", beam_size=b, vad_filter=...)` with its other defaults: its own 30-s
  sliding window with timestamps, conditioning on the previous text, temperature
  fallback, and (vad on) Silero VAD, for --peer beams x --peer_vad.
* `faster-whisper <model> chunks:<segmenter>`: our boundaries and guards
  (`LongFormTranscriber`) with Whisper decoding each chunk greedily without timestamps:
  the boundary strategies measured with a trained recognizer (--peer_chunked).

Columns: WER over whole recordings, RTFx (audio seconds / wall seconds, file reading
included, after a warm-up that loads everything and compiles our decoders: ours decode
the first recording (or its utterances) once, untimed, so its chunk-batch shapes are
compiled before the clock starts; faster-whisper, which compiles nothing, its first 10 s), RTFx per
CPU second (`rtfx_cpu`: audio seconds / CPU seconds of the process, all its threads: the
figure to compare on a machine shared with other jobs), decoder
calls per recording (ours: counted; faster-whisper: tokens + 1 per decoded window, from
its segments, temperature-fallback retries invisible, so a lower bound), peak RSS of the
process (each system runs in its own child process: `peak_rss_mib`; `rss_loaded_mib` is
its RSS once the model is loaded and warmed up).

  python bench/longform.py --sets runs/longform/kathleen_60s.jsonl \
      --workdirs runs/wt/k4 --strategies greedy,verify --segmenters silence,overlap
  python bench/longform.py --sets runs/longform/kathleen_60s.jsonl   # faster-whisper only
Writes bench/results/longform.json (--out) and prints a table.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import multiprocessing
import os
import pathlib
import resource
import shlex
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))
from mtp_jax.data import longform  # noqa: E402


def rss_mib() -> float:
  """The process's resident memory now, in MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return 0.0


def cpu_seconds() -> float:
  """User + system CPU seconds of this process, all threads (robust to other load)."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
  """The process's peak resident memory so far, in MiB (Linux: ru_maxrss in KiB). The
  kernel updates that high-water mark lazily, so a fresh VmRSS reading can be a little
  above it: the larger of the two."""
  return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mib())


class WhisperChunks:
  """faster-whisper's model as a `Recognizer` of our chunks: greedy, no timestamps, no
  conditioning on earlier text, one chunk at a time."""

  sample_rate, max_seconds, batch_size = 16000, 30.0, 1

  def __init__(self, model, beam: int = 1):
    self.model, self.beam = model, beam

  def recognize(self, chunks, caps):
    from mtp_jax.decode.transcribe import ChunkText  # pylint: disable=g-import-not-at-top
    out = []
    for wav, cap in zip(chunks, caps):
      segs, _ = self.model.transcribe(
          wav, language="en", beam_size=self.beam, without_timestamps=True,
          condition_on_previous_text=False, vad_filter=False, temperature=0.0,
          max_new_tokens=min(cap or 400, 400))
      segs = list(segs)
      tokens = sum(len(s.tokens) for s in segs)
      out.append(ChunkText("".join(s.text for s in segs).strip(), tokens, tokens + 1,
                           bool(cap) and tokens >= min(cap, 400)))
    return out


def _whisper_model(name: str, compute_type: str, threads: int):
  from faster_whisper import WhisperModel  # pylint: disable=g-import-not-at-top
  from mtp_jax.interop.whisper import resolve  # pylint: disable=g-import-not-at-top
  return WhisperModel(str(resolve(name)), device="cpu", compute_type=compute_type,
                      cpu_threads=threads)


def _warmup_audio(rec: dict) -> np.ndarray:
  from mtp_jax.data import audio as audio_lib  # pylint: disable=g-import-not-at-top
  return audio_lib.load_audio(rec["audio_filepath"])[:10 * 16000]


def _clip_paths(spec: dict, rec: dict) -> list[str]:
  """The files a long-form recording was built from (`utterances[].source` under
  --data), in order."""
  return [os.path.join(spec["data"], u["source"]) for u in rec["utterances"]]


def run_system(spec: dict, sets: dict[str, list[dict]]) -> list[dict]:
  """Runs one system on every set; returns one row per set (hypotheses included).

  Args:
    spec: {"kind": "ours" | "peer" | "peer_chunks", "name", ...settings}.
    sets: set name -> long-form manifest rows (absolute audio paths).
  """
  kind = spec["kind"]
  t0 = time.perf_counter()
  if kind in ("ours", "ours_utts"):
    from mtp_jax.decode.transcribe import Transcriber  # pylint: disable=g-import-not-at-top
    tr = Transcriber(spec["workdir"], strategy=spec["strategy"], segmenter=spec["segmenter"],
                     batch_size=spec["batch_size"], max_seconds=spec["chunk_seconds"])
    warm = lambda rec: tr.transcribe_many(  # noqa: E731
        [rec["audio_filepath"]] if kind == "ours" else _clip_paths(spec, rec))
    if spec.get("across_files"):
      warm = lambda rec: [tr.transcribe_many([r["audio_filepath"] for r in recs])  # noqa: E731
                          for recs in sets.values()]
  elif kind == "peer_chunks":
    from mtp_jax.decode.transcribe import LongFormTranscriber  # pylint: disable=g-import-not-at-top
    model = _whisper_model(spec["model"], spec["compute_type"], spec["threads"])
    tr = LongFormTranscriber(WhisperChunks(model), segmenter=spec["segmenter"],
                             max_seconds=spec["chunk_seconds"])
    warm = lambda rec: tr.transcribe_many([_warmup_audio(rec)], 16000)  # noqa: E731
  else:
    model = _whisper_model(spec["model"], spec["compute_type"], spec["threads"])

    def fw(source):
      segs, _ = model.transcribe(source, language="en", beam_size=spec["beam"],
                                 vad_filter=spec["vad"])
      return list(segs)
    warm = lambda rec: fw(_warmup_audio(rec))  # noqa: E731
  warm(next(iter(sets.values()))[0])
  load_s = time.perf_counter() - t0
  loaded = rss_mib()
  rows = []
  for set_name, recs in sets.items():
    hyps, calls, errors = [], [], []
    audio_s = float(sum(r["duration"] for r in recs))

    def take(ts):  # our transcripts, one per recording
      errors.extend(t.error for t in ts if t.error)
      hyps.extend(t.text for t in ts)
      calls.extend(t.stats.get("decoder_calls", 0) for t in ts)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    if spec.get("across_files"):  # one call: chunks of all recordings share batches
      take(tr.transcribe_many([r["audio_filepath"] for r in recs]))
    for k, r in enumerate(recs if not spec.get("across_files") else []):
      if kind == "ours_utts":
        ts = tr.transcribe_many(_clip_paths(spec, r))
        errors += [t.error for t in ts if t.error]
        hyps.append(" ".join(t.text for t in ts if t.text))
        calls.append(sum(t.stats.get("decoder_calls", 0) for t in ts))
      elif kind == "peer":
        segs = fw(r["audio_filepath"])
        hyps.append("".join(s.text for s in segs).strip())
        calls.append(sum(len(s.tokens) for s in segs) + len({s.seek for s in segs}))
      else:
        take(tr.transcribe_many([r["audio_filepath"]]))
      print(f"  {spec['name']}: {set_name} {k + 1}/{len(recs)}, "
            f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    rows.append(dict(set=set_name, system=spec["name"], recordings=len(recs),
                     audio_s=round(audio_s, 2), wall_s=round(wall, 2), cpu_s=round(cpu, 2),
                     rtfx=audio_s / wall if wall else 0.0,
                     rtfx_cpu=audio_s / cpu if cpu else 0.0,
                     calls_per_rec=float(np.mean(calls)) if calls else 0.0,
                     load_s=round(load_s, 2), rss_loaded_mib=round(loaded, 1),
                     peak_rss_mib=round(max(peak_rss_mib(), loaded), 1), errors=errors,
                     hyps=hyps,
                     **{k: v for k, v in spec.items() if k not in ("name",)}))
  return rows


def system_specs(args) -> list[dict]:
  """The systems of the command line, in run order."""
  specs = []
  chunk = args.chunk_seconds
  tag = f":{chunk:g}s" if chunk else ""  # chunks shorter than the model's limit
  for wd in [w for w in args.workdirs.split(",") if w]:
    for strategy in [s for s in args.strategies.split(",") if s]:
      for seg in [s for s in args.segmenters.split(",") if s]:
        specs.append(dict(kind="ours",
                          name=f"ours:{pathlib.Path(wd).name}:{strategy}:{seg}{tag}",
                          workdir=wd, strategy=strategy, segmenter=seg,
                          batch_size=args.batch_size, chunk_seconds=chunk))
        if args.across_files:
          specs.append(dict(specs[-1], name=specs[-1]["name"] + ":across", across_files=True))
    if args.per_utterance:
      specs.append(dict(kind="ours_utts", name=f"ours:{pathlib.Path(wd).name}:greedy:utterances",
                        workdir=wd, strategy="greedy", segmenter="silence",
                        batch_size=args.batch_size, chunk_seconds=chunk, data=args.data))
  peer = dict(model=args.model, compute_type=args.compute_type, threads=args.threads)
  for seg in [s for s in args.peer_chunked.split(",") if s]:
    specs.append(dict(kind="peer_chunks", name=f"faster-whisper {args.model} chunks:{seg}{tag}",
                      segmenter=seg, chunk_seconds=chunk, **peer))
  for beam in [int(b) for b in args.peer_beams.split(",") if b]:
    for vad in [v for v in args.peer_vad.split(",") if v]:
      specs.append(dict(kind="peer", name=f"faster-whisper {args.model} beam {beam} vad {vad}",
                        beam=beam, vad=vad == "on", **peer))
  return specs


def add_relative(rows: list[dict]) -> None:
  """Sets, on each of our long-form rows, `wer_vs_utterances` (its WER / the same model's
  utterance-by-utterance WER on the set, when measured), and `calls_reduction` / `speedup`
  (greedy's decoder calls / wall seconds over the row's, same model, set, boundaries and
  chunk length: > 1 = fewer calls / faster)."""
  from mtp_jax.decode.summary import vs_greedy  # pylint: disable=g-import-not-at-top

  def key(r, strategy):
    return (r["set"], r["workdir"], strategy, r["segmenter"], r.get("chunk_seconds"),
            bool(r.get("across_files")))
  by = {key(r, r["strategy"]): r for r in rows if r["kind"] == "ours"}
  utts = {(r["set"], r["workdir"]): r for r in rows if r["kind"] == "ours_utts"}
  for r in rows:
    if r["kind"] != "ours":
      continue
    base = utts.get((r["set"], r["workdir"]))
    if base is not None and base["wer"] > 0:
      r["wer_vs_utterances"] = r["wer"] / base["wer"]
    greedy = by.get(key(r, "greedy"))
    if greedy is not None:
      r.update(vs_greedy(greedy, r, calls="calls_per_rec", seconds="wall_s"))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sets", required=True, help="comma-separated long-form manifests "
                 "(python -m mtp_jax.data.longform)")
  p.add_argument("--max_recordings", type=int, default=0, help="first N per set (0: all)")
  p.add_argument("--workdirs", "--workdir", default="", help="comma-separated mtp_jax workdirs")
  p.add_argument("--strategies", default="greedy")
  p.add_argument("--segmenters", default="silence,overlap")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--chunk_seconds", type=float, default=None,
                 help="longest chunk / overlap window of our boundaries (default: the "
                      "model's limit, 30 s for Whisper encoders); e.g. 10 for models trained "
                      "on short utterances")
  p.add_argument("--across_files", action="store_true", help="also run each of our "
                 "systems over the whole set in one call, chunks of different recordings "
                 "sharing batches (`:across`)")
  p.add_argument("--per_utterance", action="store_true", help="also decode each "
                 "recording's utterances one file at a time (greedy): the WER the "
                 "boundaries are measured against")
  p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                 help="the data folder the recordings were built from (--per_utterance)")
  p.add_argument("--model", default="tiny.en", help="faster-whisper model dir or wheel name")
  p.add_argument("--compute_type", default="float32")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--peer_beams", default="1,5", help="faster-whisper transcribe() beams ('' = "
                 "none)")
  p.add_argument("--peer_vad", default="off,on")
  p.add_argument("--peer_chunked", default="silence,overlap", help="our boundaries with "
                 "Whisper decoding the chunks ('' = none)")
  p.add_argument("--in_process", action="store_true", help="run every system in this process "
                 "(peak memory is then the largest so far, not per system)")
  p.add_argument("--out", default=str(ROOT / "bench" / "results" / "longform.json"))
  args = p.parse_args(argv)

  from mtp_jax.decode.summary import format_table  # pylint: disable=g-import-not-at-top
  from mtp_jax.machine import machine_info, write_result  # pylint: disable=g-import-not-at-top
  sets = {}
  for m in [s for s in args.sets.split(",") if s]:
    if not os.path.isfile(m):
      p.error(f"--sets: {m} not found (build it: python -m mtp_jax.data.longform)")
    sets[pathlib.Path(m).stem] = longform.load_recordings(m, args.max_recordings)
  rows = []
  cols = ["set", "system", "recordings", "wer", "rtfx", "rtfx_cpu", "calls_per_rec",
          "peak_rss_mib", "rss_loaded_mib"]
  for spec in system_specs(args):
    if args.in_process:
      out = run_system(spec, sets)
    else:
      ctx = multiprocessing.get_context("spawn")
      with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        out = ex.submit(run_system, spec, sets).result()
    for r in out:
      w = longform.score_recordings(sets[r["set"]], r["hyps"])
      r.update(wer=w["wer"], substitutions=w["substitutions"], deletions=w["deletions"],
               insertions=w["insertions"], num_ref_words=w["num_ref_words"])
      rows.append(r)
      print(format_table([r], cols), flush=True)
  add_relative(rows)
  cols += ["wer_vs_utterances", "calls_reduction", "speedup"]
  print("\n" + format_table(rows, cols))
  result = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                machine=machine_info(),
                command="python bench/longform.py " + shlex.join(
                    sys.argv[1:] if argv is None else argv).replace(str(ROOT) + os.sep, ""),
                rows=rows)
  write_result(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
