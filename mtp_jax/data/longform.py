"""Long-form test sets from the real speech of ../shared/data, built reproducibly.

  python -m mtp_jax.data.longform --data ../shared/data --out runs/longform

writes, for each set, `<out>/<set>.jsonl` and `<out>/audio/<set>_NNN.flac` (16 kHz mono
16-bit), and `<out>/build.json` (the command, seed and per-set counts):

| set | recordings of | from |
| --- | --- | --- |
| kathleen_60s | about 1 minute | Kathleen test utterances, in manifest order |
| kathleen_300s | about 5 minutes | the same |
| fsdd_digits | 8-12 digits, read-out phone numbers | FSDD test digits (8 kHz, resampled to 16 kHz with soxr), one speaker per string, shuffled with the seed |
| kathleen_train_windows | 8-28 s (each drawn), never longer | Kathleen TRAIN utterances in manifest order, three passes: training data that teaches a model to read a whole window (`--sets kathleen_train_windows`; not built by default) |

A recording is its clips back to back, each with its own leading and trailing
silence, and a pause of digital silence drawn uniformly from 0.3-1.0 s (seeded)
between two clips. Kathleen recordings take clips until they reach the target length;
a remainder shorter than half the target joins the last recording, so every test
utterance is used exactly once. Each manifest row is a normal NeMo-style row (so
any manifest reader takes it) with the recording's whole reference, plus:

  {"utt_id": "kathleen_60s_000", "score": "words" | "digits",
   "utterances": [{"utt_id", "source", "start", "end", "text"}, ...]}

`start`/`end` are each clip's place in the recording (seconds; the clip includes its
own silences) and `source` its file relative to the data folder. WER is scored over
whole recordings (`score_recordings`): one hypothesis per recording against its full
reference; "digits" rows spell every digit of a hypothesis on its own ("415-555" ->
"four one five five five five", as the references are written), so a recognizer
that writes phone numbers as numerals is scored on its digits.

The same command, seed and data give byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import zlib
from typing import Sequence

import numpy as np
import soundfile

from mtp_jax import text as text_lib
from mtp_jax.data import audio as audio_lib
from mtp_jax.data import manifest as manifest_lib

RATE = 16000
PAUSE_SECONDS = (0.3, 1.0)
DIGIT_STRING = (8, 12)
# set name -> (source manifest relative to --data, kind, target seconds)
SETS = {
    "kathleen_60s": ("kathleen/test.jsonl", "join", 60.0),
    "kathleen_300s": ("kathleen/test.jsonl", "join", 300.0),
    "fsdd_digits": ("fsdd/test.jsonl", "digits", 0.0),
    # Training windows (not built by default): Kathleen TRAIN utterances joined into
    # recordings of a length drawn from WINDOW_SECONDS, never longer than its upper end,
    # WINDOW_PASSES times over the manifest with fresh lengths, pauses and start offsets.
    "kathleen_train_windows": ("kathleen/train.jsonl", "window", 0.0),
}
TEST_SETS = ("kathleen_60s", "kathleen_300s", "fsdd_digits")
WINDOW_SECONDS = (8.0, 28.0)
WINDOW_PASSES = 3
DIGITS = "zero one two three four five six seven eight nine".split()


def set_rng(seed: int, name: str) -> np.random.Generator:
  """The set's own random stream: the same whichever other sets are built."""
  return np.random.default_rng([seed, zlib.crc32(name.encode())])


def group_by_duration(durations: Sequence[float], target: float,
                      pauses: Sequence[float] | None = None) -> list[list[int]]:
  """Consecutive groups of indices, each closed once it reaches `target` seconds (its
  clips and the pauses between them); a last group shorter than target / 2 joins the
  one before.

  Args:
    durations: seconds per clip.
    target: the wanted recording length in seconds.
    pauses: seconds of the pause before each clip, counted when the clip is not the
      first of its group (default: none).
  Returns:
    Lists of indices covering range(len(durations)) in order.
  """
  groups, cur, total = [], [], 0.0
  for i, d in enumerate(durations):
    total += d + (pauses[i] if cur and pauses is not None else 0.0)
    cur.append(i)
    if total >= target:
      groups.append(cur)
      cur, total = [], 0.0
  if cur:
    if groups and total < target / 2:
      groups[-1] += cur
    else:
      groups.append(cur)
  return groups


def group_into_windows(durations: Sequence[float], targets: Sequence[float],
                       pauses: Sequence[float], start: int = 0) -> list[list[int]]:
  """Consecutive groups of indices from `start` on, group g holding the clips (and the
  pauses before all but its first) that fit in targets[g] seconds; a clip longer than
  its target is a group of its own. Unlike `group_by_duration`, no group exceeds its
  target unless one clip does (training windows must fit the encoder).

  Args:
    durations: seconds per clip.
    targets: the length of each group in turn (at least as many as groups).
    pauses: seconds of the pause before each clip.
    start: the first clip (earlier ones are left out).
  Returns:
    Lists of indices covering range(start, len(durations)) in order.
  """
  groups, cur, total = [], [], 0.0
  for i in range(start, len(durations)):
    if cur and total + pauses[i] + durations[i] > targets[len(groups)]:
      groups.append(cur)
      cur = []
    total = total + pauses[i] + durations[i] if cur else durations[i]
    cur.append(i)
  if cur:
    groups.append(cur)
  return groups


def digit_string_lengths(n: int, rng: np.random.Generator,
                         bounds: tuple[int, int] = DIGIT_STRING) -> list[int]:
  """A random split of n digits into strings of bounds[0]..bounds[1] digits.

  The number of strings is drawn among those that allow it; digits are then dealt one
  by one to random strings below the maximum. When no split exists (n < 8 or
  13 <= n <= 15 for 8-12), the n digits are one string.
  """
  lo, hi = bounds
  counts = [k for k in range(math.ceil(n / hi), n // lo + 1) if k]
  if not counts:
    return [n] if n else []
  k = int(rng.choice(counts))
  lengths = [lo] * k
  for _ in range(n - lo * k):
    open_ = [i for i, x in enumerate(lengths) if x < hi]
    lengths[int(rng.choice(open_))] += 1
  return lengths


def _join(clips: list[np.ndarray], pauses: Sequence[float]) -> tuple[np.ndarray, list]:
  """Clips with pauses[k] seconds of silence before clip k > 0; returns (wav,
  [(start_s, end_s)] per clip)."""
  parts, spans, pos = [], [], 0
  for k, clip in enumerate(clips):
    if k:
      gap = int(round(pauses[k] * RATE))
      parts.append(np.zeros(gap, np.float32))
      pos += gap
    parts.append(clip)
    spans.append((pos / RATE, (pos + len(clip)) / RATE))
    pos += len(clip)
  return np.concatenate(parts), spans


def _load(entry) -> np.ndarray:
  return audio_lib.load_audio(entry.audio_filepath, manifest=entry.manifest, line=entry.line,
                              target_rate=RATE)


def _groups(name: str, entries, rng: np.random.Generator) -> list[list[tuple]]:
  """The set's recordings: lists of (entry, pause before it in seconds)."""
  _, kind, target = SETS[name]
  if kind == "window":
    groups = []
    for _ in range(WINDOW_PASSES):
      pauses = rng.uniform(*PAUSE_SECONDS, size=len(entries))
      targets = rng.uniform(*WINDOW_SECONDS, size=len(entries))
      start = int(rng.integers(0, 4))  # windows of each pass start at other clips
      idx = group_into_windows([e.duration for e in entries], targets, pauses, start)
      groups += [[(entries[i], float(pauses[i])) for i in g] for g in idx]
    return groups
  if kind == "join":
    pauses = rng.uniform(*PAUSE_SECONDS, size=len(entries))
    idx = group_by_duration([e.duration for e in entries], target, pauses)
    return [[(entries[i], float(pauses[i])) for i in g] for g in idx]
  by_speaker: dict[str, list] = {}
  for e in entries:
    by_speaker.setdefault(e.speaker or "?", []).append(e)
  groups = []
  for speaker in sorted(by_speaker):
    utts = by_speaker[speaker]
    order = rng.permutation(len(utts))
    pos = 0
    for n in digit_string_lengths(len(utts), rng):
      pauses = rng.uniform(*PAUSE_SECONDS, size=n)
      groups.append([(utts[i], float(p)) for i, p in zip(order[pos:pos + n], pauses)])
      pos += n
  return groups


def build_set(name: str, data: str, out: str, *, seed: int = 0,
              max_recordings: int = 0) -> dict:
  """Builds one set (see the module docstring); returns its summary.

  Args:
    name: one of `SETS`.
    data: the data folder (holding kathleen/, fsdd/).
    out: the output folder.
    seed: the seed of pauses and digit strings.
    max_recordings: write only the first N recordings (0: all).
  Returns:
    {"set", "manifest", "recordings", "utterances", "audio_s", "min_s", "max_s"}.
  Raises:
    FileNotFoundError: the source manifest is missing.
    BadInputError: a source clip cannot be read (named).
  """
  src, kind, _ = SETS[name]
  manifest = os.path.join(data, src)
  entries = manifest_lib.load_manifest(manifest)
  rng = set_rng(seed, name)
  groups = _groups(name, entries, rng)
  if max_recordings:
    groups = groups[:max_recordings]
  os.makedirs(os.path.join(out, "audio"), exist_ok=True)
  rows, lengths = [], []
  base = os.path.abspath(data)
  for n, pairs in enumerate(groups):
    group = [e for e, _ in pairs]
    wav, spans = _join([_load(e) for e in group], [p for _, p in pairs])
    utt_id = f"{name}_{n:03d}"
    rel = f"audio/{utt_id}.flac"
    soundfile.write(os.path.join(out, rel), wav, RATE, format="FLAC", subtype="PCM_16")
    utts = [{"utt_id": e.utt_id, "source": os.path.relpath(e.audio_filepath, base),
             "start": round(s, 6), "end": round(t, 6), "text": e.text}
            for e, (s, t) in zip(group, spans)]
    rows.append({"audio_filepath": rel, "duration": round(len(wav) / RATE, 6),
                 "text": " ".join(e.text for e in group), "utt_id": utt_id,
                 "score": "digits" if kind == "digits" else "words", "utterances": utts})
    lengths.append(len(wav) / RATE)
  path = os.path.join(out, f"{name}.jsonl")
  manifest_lib.write_manifest(path, rows)
  return {"set": name, "manifest": path, "recordings": len(rows),
          "utterances": sum(len(g) for g in groups), "audio_s": round(sum(lengths), 2),
          "min_s": round(min(lengths), 2) if lengths else 0.0,
          "max_s": round(max(lengths), 2) if lengths else 0.0}


# ------------------------------------------------------------------ scoring
_DIGIT = re.compile(r"\d")
_OH = re.compile(r"\b(oh|o)\b", re.IGNORECASE)


def score_text(text: str, score: str = "words") -> str:
  """`text` normalized for scoring a recording of kind `score` ("words" or "digits").

  "digits": each numeral is spelt digit by digit and a spoken "oh" is zero, then the
  usual normalization (`mtp_jax.text.normalize`, numbers to words).
  """
  if score == "digits":
    text = _DIGIT.sub(lambda m: f" {DIGITS[int(m.group())]} ", text)
    text = _OH.sub("zero", text)
  return text_lib.normalize(text, numbers_to_words=True)


def score_recordings(rows: Sequence[dict], hyps: Sequence[str]) -> dict:
  """Corpus WER over whole recordings (`mtp_jax.text.wer` fields: wer, substitutions,
  deletions, insertions, num_ref_words), each side normalized by `score_text`."""
  refs = [score_text(r["text"], r.get("score", "words")) for r in rows]
  hyps = [score_text(h, r.get("score", "words")) for r, h in zip(rows, hyps)]
  return text_lib.wer(refs, hyps, numbers_to_words=True)


def load_recordings(manifest: str, max_recordings: int = 0) -> list[dict]:
  """The rows of a long-form manifest, "audio_filepath" made absolute."""
  base = os.path.dirname(os.path.abspath(manifest))
  rows = []
  with open(manifest, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        row["audio_filepath"] = os.path.join(base, row["audio_filepath"])
        rows.append(row)
  return rows[:max_recordings] if max_recordings else rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description="Builds long-form test sets from ../shared/data.")
  p.add_argument("--data", default="../shared/data", help="folder with kathleen/ and fsdd/")
  p.add_argument("--out", default="runs/longform")
  p.add_argument("--sets", default=",".join(TEST_SETS),
                 help=f"comma-separated, of {list(SETS)}")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max_recordings", type=int, default=0, help="first N per set (0: all)")
  args = p.parse_args(argv)
  names = [s for s in args.sets.split(",") if s]
  unknown = [s for s in names if s not in SETS]
  if unknown:
    p.error(f"--sets: unknown {unknown}; known: {list(SETS)}")
  os.makedirs(args.out, exist_ok=True)
  summaries = []
  for name in names:
    src = os.path.join(args.data, SETS[name][0])
    if not os.path.isfile(src):
      print(f"{name}: {src} not found, skipped", file=sys.stderr)
      continue
    s = build_set(name, args.data, args.out, seed=args.seed,
                  max_recordings=args.max_recordings)
    summaries.append(s)
    print(f"{name}: {s['recordings']} recordings, {s['utterances']} utterances, "
          f"{s['audio_s'] / 60:.1f} min ({s['min_s']:.1f}-{s['max_s']:.1f} s each) -> "
          f"{s['manifest']}", flush=True)
  with open(os.path.join(args.out, "build.json"), "w") as f:
    json.dump({"command": "python -m mtp_jax.data.longform " + " ".join(
        sys.argv[1:] if argv is None else argv), "seed": args.seed,
               "pause_seconds": PAUSE_SECONDS, "digit_string": DIGIT_STRING,
               "sets": summaries}, f, indent=2)
  return 0 if summaries else 1


if __name__ == "__main__":
  sys.exit(main())
