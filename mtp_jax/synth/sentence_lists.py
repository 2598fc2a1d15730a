"""Sentences for synthesis from `../shared/data/text`, with every held-out test text removed.

  python -m mtp_jax.synth.sentence_lists --data ../shared/data --out runs/wt/sentences.txt

Reads ljspeech_sentences.txt (kept when `min_chars` <= length <= `max_chars`),
harvard_sentences.txt and arctic_prompts.tsv, and drops any sentence whose normalized
text (`mtp_jax.text.normalize`) equals a transcript of the held-out test manifests
(Kathleen test is the ARCTIC b-set, AN4 and FSDD test), so test text stays unseen.
"""
from __future__ import annotations

import argparse
import json
import pathlib

from mtp_jax import text as text_lib

TEST_MANIFESTS = ("kathleen/test.jsonl", "an4/test.jsonl", "fsdd/test.jsonl")


def held_out_texts(data: pathlib.Path) -> set[str]:
  out = set()
  for rel in TEST_MANIFESTS:
    path = data / rel
    if path.exists():
      with open(path) as f:
        out |= {text_lib.normalize(json.loads(line)["text"]) for line in f if line.strip()}
  return out


def sentences(data: str | pathlib.Path, min_chars: int = 15, max_chars: int = 120) -> list[str]:
  data = pathlib.Path(data)
  text = data / "text"
  out = [s for s in (text / "ljspeech_sentences.txt").read_text().splitlines()
         if min_chars <= len(s.strip()) <= max_chars]
  out += (text / "harvard_sentences.txt").read_text().splitlines()
  out += [line.split("\t")[-1] for line in (text / "arctic_prompts.tsv").read_text().splitlines()]
  held = held_out_texts(data)
  return [s.strip() for s in out if s.strip() and text_lib.normalize(s) not in held]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", default="../shared/data")
  ap.add_argument("--out", required=True)
  ap.add_argument("--min_chars", type=int, default=15)
  ap.add_argument("--max_chars", type=int, default=120)
  a = ap.parse_args()
  s = sentences(a.data, a.min_chars, a.max_chars)
  pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(a.out).write_text("\n".join(s) + "\n")
  print(f"{len(s)} sentences -> {a.out}")


if __name__ == "__main__":
  main()
