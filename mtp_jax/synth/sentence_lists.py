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
"""
from __future__ import annotations

import argparse
import json
import pathlib

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


def sentences(data: str | pathlib.Path, min_chars: int = 15, max_chars: int = 120,
              exclude_manifests=()) -> list[str]:
  data = pathlib.Path(data)
  text = data / "text"
  out = [s for s in (text / "ljspeech_sentences.txt").read_text().splitlines()
         if min_chars <= len(s.strip()) <= max_chars]
  out += (text / "harvard_sentences.txt").read_text().splitlines()
  out += [line.split("\t")[-1] for line in (text / "arctic_prompts.tsv").read_text().splitlines()]
  held = held_out_texts(data) | manifest_texts(exclude_manifests)
  return [s.strip() for s in out if s.strip() and text_lib.normalize(s) not in held]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", default="../shared/data")
  ap.add_argument("--out", required=True)
  ap.add_argument("--min_chars", type=int, default=15)
  ap.add_argument("--max_chars", type=int, default=120)
  ap.add_argument("--exclude_manifests", default="",
                  help="comma list of manifests whose texts are dropped too")
  a = ap.parse_args()
  s = sentences(a.data, a.min_chars, a.max_chars,
                [p for p in a.exclude_manifests.split(",") if p])
  pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(a.out).write_text("\n".join(s) + "\n")
  print(f"{len(s)} sentences -> {a.out}")


if __name__ == "__main__":
  main()
