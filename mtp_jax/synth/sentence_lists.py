"""Sentences for synthesis from `../shared/data/text`, with every held-out test text removed.

  python -m mtp_jax.synth.sentence_lists --data ../shared/data --out runs/wt/sentences.txt

Reads ljspeech_sentences.txt (kept when `min_chars` <= length <= `max_chars`),
harvard_sentences.txt and arctic_prompts.tsv, and drops any sentence whose normalized
text (`mtp_jax.text.normalize`) equals a transcript of the held-out test manifests
(Kathleen test is the ARCTIC b-set, AN4 and FSDD test), so test text stays unseen.

`--exclude_manifests` also drops every text of those manifests, e.g. the sentences a
synthetic training corpus already used, leaving text the model has never seen (held-out
data for MWER fine-tuning):

  python -m mtp_jax.synth.sentence_lists --out runs/wt/sentences_unseen.txt \
      --exclude_manifests runs/wt/synth/train.jsonl

`--short N` writes N short texts instead: runs of 1-3 consecutive words cut from those
sentences (half of them single words), for speech of isolated words and short commands
(FSDD's digits, AN4's words). A model trained on sentences only never learns to stop
after one word. Held-out test transcripts stay out here too:

  python -m mtp_jax.synth.sentence_lists --out runs/wt/short.txt --short 3000 --seed 0
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from mtp_jax import text as text_lib

TEST_MANIFESTS = ("kathleen/test.jsonl", "an4/test.jsonl", "fsdd/test.jsonl")


def manifest_texts(paths, missing_ok: bool = False) -> set[str]:
  """Normalized transcripts of the JSON-lines manifests in `paths`; a missing one is
  skipped when `missing_ok`, else a FileNotFoundError naming it."""
  out = set()
  for path in paths:
    path = pathlib.Path(path)
    if not path.exists():
      if missing_ok:
        continue
      raise FileNotFoundError(f"manifest {path} does not exist")
    with open(path) as f:
      out |= {text_lib.normalize(json.loads(line)["text"]) for line in f if line.strip()}
  return out


def held_out_texts(data: pathlib.Path) -> set[str]:
  return manifest_texts((data / rel for rel in TEST_MANIFESTS), missing_ok=True)


def excluded_texts(data: pathlib.Path, exclude_manifests=()) -> set[str]:
  """Normalized texts never to synthesize: the held-out test transcripts under `data`
  and every text of `exclude_manifests`."""
  return held_out_texts(data) | manifest_texts(exclude_manifests)


def sentences(data: str | pathlib.Path, min_chars: int = 15, max_chars: int = 120,
              exclude_manifests=()) -> list[str]:
  data = pathlib.Path(data)
  text = data / "text"
  out = [s for s in (text / "ljspeech_sentences.txt").read_text().splitlines()
         if min_chars <= len(s.strip()) <= max_chars]
  out += (text / "harvard_sentences.txt").read_text().splitlines()
  out += [line.split("\t")[-1] for line in (text / "arctic_prompts.tsv").read_text().splitlines()]
  held = excluded_texts(data, exclude_manifests)
  return [s.strip() for s in out if s.strip() and text_lib.normalize(s) not in held]


SHORT_WORDS_P = (0.5, 0.3, 0.2)  # P(1, 2, 3 words) of a short text


def short_texts(sents: list[str], num: int, seed: int = 0,
                held_out: set[str] = frozenset()) -> list[str]:
  """`num` texts of 1-3 consecutive normalized words cut from `sents` (seeded); texts in
  `held_out` (normalized) are never returned. Duplicates are kept (frequent words recur,
  as in speech)."""
  words = [w for w in (text_lib.normalize(s).split() for s in sents) if w]
  if not words:
    raise ValueError("short_texts: no sentence has a word")
  rng = np.random.default_rng(seed)
  out, tries = [], 0
  while len(out) < num:
    tries += 1
    if tries > 100 * num + 1000:
      raise ValueError(f"short_texts: only {len(out)} of {num} texts outside the held-out set")
    ws = words[rng.integers(len(words))]
    n = min(len(ws), 1 + int(rng.choice(len(SHORT_WORDS_P), p=SHORT_WORDS_P)))
    start = int(rng.integers(len(ws) - n + 1))
    t = " ".join(ws[start:start + n])
    if t not in held_out:
      out.append(t)
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", default="../shared/data")
  ap.add_argument("--out", required=True)
  ap.add_argument("--min_chars", type=int, default=15)
  ap.add_argument("--max_chars", type=int, default=120)
  ap.add_argument("--exclude_manifests", default="",
                  help="comma list of manifests whose texts are dropped too")
  ap.add_argument("--short", type=int, default=0,
                  help="> 0: write this many 1-3 word texts cut from the sentences instead")
  ap.add_argument("--seed", type=int, default=0, help="seed of --short")
  a = ap.parse_args()
  excluded = [p for p in a.exclude_manifests.split(",") if p]
  s = sentences(a.data, a.min_chars, a.max_chars, excluded)
  if a.short > 0:
    s = short_texts(s, a.short, a.seed, excluded_texts(pathlib.Path(a.data), excluded))
  pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(a.out).write_text("\n".join(s) + "\n")
  print(f"{len(s)} {'short texts' if a.short > 0 else 'sentences'} -> {a.out}")


if __name__ == "__main__":
  main()
