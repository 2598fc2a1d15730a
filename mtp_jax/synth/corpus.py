"""Synthetic speech corpus: espeak-ng -> 16 kHz mono FLAC + NeMo JSONL manifests.

Each utterance gets an accent (e.g. "en-us"), a voice variant (e.g. "f3"), a
speaking rate and pitch, short leading/trailing silences and optional white or
pink noise at a given SNR. Output layout:

  OUT/audio/train_00000.flac ...   16-bit mono FLAC at --sample_rate
  OUT/train.jsonl, OUT/test.jsonl  {"audio_filepath": "audio/train_00000.flac",
                                    "duration": 2.1, "text": "...",
                                    "speaker": "en-us+f3_r160_p55"}
  OUT/synth_config.json            the options, seed and espeak-ng version
  OUT/synth_plan.jsonl             every utterance's drawn parameters

Sentences are deduplicated (by lower-cased text without punctuation) and split
before assignment, so test sentences never occur in train. The manifest text is
the sentence as given: use normalized text files (numbers and abbreviations
written as words), as espeak reads "1984" or "etc." its own way.

Reproducibility: all random choices, including the seed of espeak-ng's own
breath-noise generator (which espeak seeds from the clock), are drawn up front
from --seed. Utterances
are cut into fixed shards of --shard_size; each shard is synthesized, in order,
by a fresh process (espeak-ng output depends on what the process spoke before).
So the same seed, options and shard size give byte-identical FLAC files for any
--workers on the same machine and library versions.

Usage:
  python -m mtp_jax.synth --out runs/synth --num 2000 --workers 2
  python -m mtp_jax.synth --out runs/noisy --num 500 --snr_db 5,25 \
      --sentences ../shared/data/text/harvard_sentences.txt --name dev
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from typing import Mapping, Sequence

import numpy as np

from mtp_jax.synth import espeak
from mtp_jax.synth import sentences as sentences_lib
from mtp_jax.synth import workers as workers_lib
from mtp_jax.synth.render import NOISE_COLORS
from mtp_jax.synth.render import Utterance
from mtp_jax.synth.workers import SynthesisError

DEFAULT_ACCENTS = ("en", "en-us", "en-us-nyc", "en-029", "en-gb-scotland",
                   "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
DEFAULT_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5",
                    "m6", "m7", "m8")


# ----------------------------------------------------------------------------
# Option parsing and planning.


def parse_range(value, field: str, cast=float) -> tuple:
  """"130,220" or "20" or (130, 220) or 20 -> (lo, hi); names `field` on error."""
  parts = value.split(",") if isinstance(value, str) else (
      list(value) if isinstance(value, (tuple, list)) else [value])
  try:
    nums = [cast(float(p)) if cast is int else cast(p) for p in parts]
  except (TypeError, ValueError):
    raise ValueError(f"{field}={value!r}: expected a number or 'lo,hi'") from None
  if cast is int and any(float(p) != n for p, n in zip(parts, nums)):
    raise ValueError(f"{field}={value!r}: expected integers")
  if len(nums) == 1:
    nums = nums * 2
  if len(nums) != 2 or nums[0] > nums[1]:
    raise ValueError(f"{field}={value!r}: expected 'lo,hi' with lo <= hi")
  return tuple(nums)


def parse_splits(value: str | Mapping[str, float]) -> dict[str, float]:
  """"train=0.9,test=0.1" -> {"train": 0.9, "test": 0.1} (fractions sum to 1)."""
  if isinstance(value, str):
    items = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
      name, eq, frac = part.partition("=")
      try:
        items[name.strip()] = float(frac) if eq else float("nan")
      except ValueError:
        raise ValueError(f"split_fractions: bad fraction in {part!r}") from None
  else:
    items = {str(k): float(v) for k, v in value.items()}
  if not items:
    raise ValueError(f"split_fractions={value!r}: no split given")
  for name, frac in items.items():
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
      raise ValueError(f"split_fractions: bad split name {name!r} "
                       "(letters, digits, '_' and '-' only)")
    if not frac > 0:
      raise ValueError(f"split_fractions: split {name!r} needs a fraction > 0, "
                       f"got {frac} (write name=fraction)")
  if abs(sum(items.values()) - 1) > 1e-6:
    raise ValueError(f"split_fractions={value!r}: fractions sum to "
                     f"{sum(items.values()):g}, expected 1")
  return items


def _apportion(total: int, fractions: Sequence[float], minimum: int = 0) -> list[int]:
  """Integer counts proportional to `fractions` summing to `total` (largest remainder)."""
  raw = [total * f for f in fractions]
  counts = [max(minimum, int(r)) for r in raw]
  order = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
  i = 0
  while sum(counts) < total:
    counts[order[i % len(order)]] += 1
    i += 1
  while sum(counts) > total:
    above = [k for k in range(len(counts)) if counts[k] > minimum]
    if not above:
      raise ValueError(f"cannot split {total} into {len(counts)} parts of at "
                       f"least {minimum}")
    counts[max(above, key=lambda k: (counts[k] - raw[k], -k))] -= 1
  return counts


def _check_param(field: str, lo_hi: tuple, param: str) -> None:
  lo, hi = espeak.PARAM_LIMITS[param]
  if lo_hi[0] < lo or lo_hi[1] > hi:
    raise ValueError(f"{field}={lo_hi[0]},{lo_hi[1]} is outside espeak's "
                     f"{param} range [{lo}, {hi}]")


def plan_corpus(sentences: Sequence[str], *, seed: int, num: int,
                splits: Mapping[str, float], accents: Sequence[str],
                variants: Sequence[str], rate_range=(130, 220),
                pitch_range=(30, 70), intonation_range=(50, 50),
                silence_range=(0.05, 0.25), snr_db=None,
                noise_colors: Sequence[str] = NOISE_COLORS,
                noise_fraction: float = 1.0) -> list[Utterance]:
  """Draws every utterance's text and voice from `seed`; synthesizes nothing.

  Sentences are deduplicated by `normalize_text`, shuffled and divided among
  the splits in proportion to `splits` (so splits share no sentence); each
  split's utterances cycle through its sentences. Independent random streams
  are used for sentences, voices, silences and noise, so e.g. adding noise
  leaves the voices unchanged. Accent and variant names are not checked here.

  Returns:
    Utterances in output order: all of the first split, then the next...

  Raises:
    ValueError: bad option (the message names it) or too few sentences.
  """
  if num < 1:
    raise ValueError(f"num={num}: need at least one utterance")
  splits = parse_splits(splits)
  if not accents or not variants:
    raise ValueError("need at least one accent and one variant")
  rate_range = parse_range(rate_range, "rate_range", int)
  pitch_range = parse_range(pitch_range, "pitch_range", int)
  intonation_range = parse_range(intonation_range, "intonation_range", int)
  silence_range = parse_range(silence_range, "silence_range")
  _check_param("rate_range", rate_range, "rate")
  _check_param("pitch_range", pitch_range, "pitch")
  _check_param("intonation_range", intonation_range, "range")
  if silence_range[0] < 0:
    raise ValueError(f"silence_range={silence_range}: must be >= 0 seconds")
  snr = None if snr_db is None else parse_range(snr_db, "snr_db")
  for color in noise_colors:
    if color not in NOISE_COLORS:
      raise ValueError(f"noise color {color!r} unknown; valid: {', '.join(NOISE_COLORS)}")
  if not noise_colors:
    raise ValueError("noise_colors is empty")
  if not 0 <= noise_fraction <= 1:
    raise ValueError(f"noise_fraction={noise_fraction}: expected 0..1")

  pool, seen = [], set()
  for s in sentences:
    key = sentences_lib.normalize_text(s)
    if key and key not in seen:
      seen.add(key)
      pool.append(" ".join(s.split()))
  names = list(splits)
  if len(pool) < len(names):
    raise ValueError(f"{len(pool)} distinct sentences cannot fill {len(names)} "
                     f"disjoint splits {names}")
  text_rng, voice_rng, sil_rng, noise_rng = (
      np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
  pool = [pool[i] for i in text_rng.permutation(len(pool))]
  fracs = [splits[n] for n in names]
  sent_counts = _apportion(len(pool), fracs, minimum=1)
  if num < len(names):
    raise ValueError(f"num={num} cannot give every split of {names} an utterance")
  utt_counts = _apportion(num, fracs, minimum=1)

  n = num
  acc = voice_rng.integers(len(accents), size=n)
  var = voice_rng.integers(len(variants), size=n)
  rates = voice_rng.integers(rate_range[0], rate_range[1] + 1, size=n)
  pitches = voice_rng.integers(pitch_range[0], pitch_range[1] + 1, size=n)
  inton = voice_rng.integers(intonation_range[0], intonation_range[1] + 1, size=n)
  espeak_seeds = voice_rng.integers(2**31, size=n)
  sil = sil_rng.uniform(silence_range[0], silence_range[1], size=(n, 2))
  noisy = noise_rng.random(n) < noise_fraction
  snrs = noise_rng.uniform(0.0, 1.0, size=n)
  colors = noise_rng.integers(len(noise_colors), size=n)
  noise_seeds = noise_rng.integers(2**62, size=n)

  out, start, k = [], 0, 0
  for name, n_sent, n_utt in zip(names, sent_counts, utt_counts):
    split_pool = pool[start:start + n_sent]
    start += n_sent
    width = max(5, len(str(n_utt - 1)))
    for j in range(n_utt):
      snr_k = None
      if snr is not None and noisy[k]:
        snr_k = round(float(snr[0] + (snr[1] - snr[0]) * snrs[k]), 3)
      out.append(Utterance(
          split=name, audio_filepath=f"audio/{name}_{j:0{width}d}.flac",
          text=split_pool[j % n_sent], accent=accents[acc[k]],
          variant=variants[var[k]], rate=int(rates[k]), pitch=int(pitches[k]),
          intonation=int(inton[k]), lead_silence=round(float(sil[k, 0]), 4),
          trail_silence=round(float(sil[k, 1]), 4), snr_db=snr_k,
          noise_color=noise_colors[colors[k]], noise_seed=int(noise_seeds[k]),
          espeak_seed=int(espeak_seeds[k])))
      k += 1
  return out


# ----------------------------------------------------------------------------
# Public entry points.


def synthesize_corpus(out_dir: str | os.PathLike,
                      sentences: Sequence[str] | None = None, *, seed: int = 0,
                      num: int, splits: Mapping[str, float] | str | None = None,
                      accents: Sequence[str] = DEFAULT_ACCENTS,
                      variants: Sequence[str] | str = DEFAULT_VARIANTS,
                      rate_range=(130, 220), pitch_range=(30, 70),
                      intonation_range=(50, 50), silence_range=(0.05, 0.25),
                      snr_db=None, noise_colors: Sequence[str] = NOISE_COLORS,
                      noise_fraction: float = 1.0, sample_rate: int = 16000,
                      workers: int | None = None, shard_size: int = 32,
                      progress: bool = True) -> dict[str, str]:
  """Synthesizes a corpus and writes FLAC files plus one manifest per split.

  Args:
    out_dir: output folder (created; existing files of the same names are
      overwritten).
    sentences: texts to speak; None generates `num` distinct sentences with
      `sentences.generate_sentences(num, seed)`.
    seed: the seed of every random choice.
    num: total number of utterances over all splits.
    splits: {"name": fraction} or "train=0.9,test=0.1" (default), or a single
      split name (all utterances in it).
    accents: espeak accents, e.g. ("en-us", "en"); see espeak.list_accents().
    variants: espeak voice variants, e.g. ("f3", "m1"), or "all".
    rate_range: (lo, hi) words per minute, uniform integers.
    pitch_range: (lo, hi) espeak pitch 0..99.
    intonation_range: (lo, hi) espeak pitch range 0..99 (50 = default).
    silence_range: (lo, hi) seconds of silence kept at each end.
    snr_db: None (clean), a value or (lo, hi) in dB; noise is scaled against
      the power of the speech (without the added edge silences).
    noise_colors: colors drawn from, "white" and/or "pink".
    noise_fraction: fraction of utterances that get noise when snr_db is set.
    sample_rate: output rate in Hz.
    workers: parallel processes (default: CPUs available).
    shard_size: utterances per fresh worker process; part of the recipe (a
      different shard size gives different, equally valid, audio).
    progress: show progress on stderr.

  Returns:
    {split: manifest path}.

  Raises:
    ValueError: a bad option (the message names the field and value).
    SynthesisError: a worker failed.
  """
  if shard_size < 1:
    raise ValueError(f"shard_size={shard_size}: must be >= 1")
  if not 8000 <= sample_rate <= 48000:
    raise ValueError(f"sample_rate={sample_rate}: expected 8000..48000 Hz")
  if splits is None:
    splits = {"train": 0.9, "test": 0.1}
  elif isinstance(splits, str) and "=" not in splits:
    splits = {splits: 1.0}
  splits = parse_splits(splits)
  accents = [espeak.validate_accent(a) for a in accents]
  if isinstance(variants, str):
    variants = (espeak.list_variants() if variants == "all"
                else [v for v in variants.split(",") if v.strip()])
  variants = [espeak.validate_variant(v) for v in variants]
  rate_range = parse_range(rate_range, "rate_range", int)
  pitch_range = parse_range(pitch_range, "pitch_range", int)
  intonation_range = parse_range(intonation_range, "intonation_range", int)
  silence_range = parse_range(silence_range, "silence_range")
  snr_db = None if snr_db is None else parse_range(snr_db, "snr_db")
  if sentences is None:
    sentences = sentences_lib.generate_sentences(num, seed)
  utts = plan_corpus(sentences, seed=seed, num=num, splits=splits, accents=accents,
                     variants=variants, rate_range=rate_range,
                     pitch_range=pitch_range, intonation_range=intonation_range,
                     silence_range=silence_range, snr_db=snr_db,
                     noise_colors=noise_colors, noise_fraction=noise_fraction)
  out_dir = os.path.abspath(os.fspath(out_dir))
  os.makedirs(os.path.join(out_dir, "audio"), exist_ok=True)
  if workers is None:
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
  if workers < 1:
    raise ValueError(f"workers={workers}: must be >= 1")
  shards = [utts[i:i + shard_size] for i in range(0, len(utts), shard_size)]
  bar = workers_lib.Progress(len(utts), progress)
  lengths = [n for shard in workers_lib.run_shards(out_dir, shards, sample_rate,
                                                         workers, bar)
             for n in shard]
  wall = time.monotonic() - bar.start

  manifests = {}
  for name in splits:
    rows = [json.dumps({"audio_filepath": u.audio_filepath,
                        "duration": n / sample_rate, "text": u.text,
                        "speaker": u.speaker}, ensure_ascii=False)
            for u, n in zip(utts, lengths) if u.split == name]
    manifests[name] = _write_lines(os.path.join(out_dir, f"{name}.jsonl"), rows)
  _write_lines(os.path.join(out_dir, "synth_plan.jsonl"),
               [json.dumps(dataclasses.asdict(u), ensure_ascii=False) for u in utts])
  config = dict(seed=seed, num=num, splits=splits, accents=list(accents),
                variants=list(variants), rate_range=list(rate_range),
                pitch_range=list(pitch_range), intonation_range=list(intonation_range),
                silence_range=list(silence_range),
                snr_db=None if snr_db is None else list(snr_db),
                noise_colors=list(noise_colors), noise_fraction=noise_fraction,
                sample_rate=sample_rate, shard_size=shard_size,
                espeak_ng=espeak.version(), num_sentences=len(set(u.text for u in utts)))
  _write_lines(os.path.join(out_dir, "synth_config.json"),
               [json.dumps(config, indent=1, default=list)])
  if progress:
    audio_s = sum(lengths) / sample_rate
    print(f"synth: {len(utts)} utterances, {audio_s / 3600:.2f} h of audio in "
          f"{wall:.1f} s ({audio_s / max(wall, 1e-9):.1f} audio s per wall s, "
          f"{workers} workers) -> {out_dir}", file=sys.stderr)
  return manifests


def _write_lines(path: str, lines: Sequence[str]) -> str:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(line + "\n" for line in lines)
  os.replace(tmp, path)
  return path


def _parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m mtp_jax.synth",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--num", type=int, required=True, help="number of utterances")
  p.add_argument("--sentences", help="text file, one sentence per line (.tsv: last "
                 "column); default: the built-in generator")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--accents", default=",".join(DEFAULT_ACCENTS))
  p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                 help="comma-separated variant names, or 'all'")
  p.add_argument("--rate_range", default="130,220", help="words per minute lo,hi")
  p.add_argument("--pitch_range", default="30,70", help="espeak pitch 0..99, lo,hi")
  p.add_argument("--intonation_range", default="50,50",
                 help="espeak pitch range (intonation) 0..99, lo,hi")
  p.add_argument("--silence_range", default="0.05,0.25",
                 help="seconds of silence kept at each end, lo,hi")
  p.add_argument("--snr_db", default=None, help="add noise at this SNR: dB or lo,hi")
  p.add_argument("--noise_colors", default="white,pink")
  p.add_argument("--noise_fraction", type=float, default=1.0,
                 help="fraction of utterances with noise when --snr_db is set")
  p.add_argument("--sample_rate", type=int, default=16000)
  p.add_argument("--workers", type=int, default=None)
  p.add_argument("--shard_size", type=int, default=32)
  group = p.add_mutually_exclusive_group()
  group.add_argument("--split_fractions", default="train=0.9,test=0.1")
  group.add_argument("--name", help="write one split with this name instead")
  p.add_argument("--quiet", action="store_true", help="no progress output")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  try:
    sentences = (sentences_lib.load_sentences(args.sentences)
                 if args.sentences else None)
    manifests = synthesize_corpus(
        args.out, sentences, seed=args.seed, num=args.num,
        splits=args.name or args.split_fractions,
        accents=[a for a in args.accents.split(",") if a.strip()],
        variants=args.variants, rate_range=args.rate_range,
        pitch_range=args.pitch_range, intonation_range=args.intonation_range,
        silence_range=args.silence_range, snr_db=args.snr_db,
        noise_colors=[c.strip() for c in args.noise_colors.split(",") if c.strip()],
        noise_fraction=args.noise_fraction, sample_rate=args.sample_rate,
        workers=args.workers, shard_size=args.shard_size, progress=not args.quiet)
  except (ValueError, FileNotFoundError, SynthesisError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for path in manifests.values():
    print(path)
  return 0

