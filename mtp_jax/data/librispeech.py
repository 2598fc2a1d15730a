"""Imports a LibriSpeech split directory into a JSONL manifest.

Layout: <root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt, whose lines
are "<speaker>-<chapter>-<utt> TRANSCRIPT", next to <speaker>-<chapter>-<utt>.flac.

Usage:
  python -m mtp_jax.data.librispeech ROOT OUT.jsonl [--absolute]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import soundfile

from mtp_jax.data import manifest as manifest_lib


def iter_librispeech(root: str | os.PathLike, out_dir: str | None = None):
  """Yields manifest records for every utterance under a LibriSpeech split.

  Args:
    root: the split directory (e.g. .../LibriSpeech/train-clean-100).
    out_dir: when given, "audio_filepath" is relative to it; else absolute.

  Yields:
    {"audio_filepath", "duration", "text", "speaker", "utt_id"} dicts, in
    sorted (speaker, chapter, utterance) order.

  Raises:
    ValueError: a transcript line is malformed or names a missing .flac
      (the message names the .trans.txt file and line).
  """
  root = os.path.abspath(os.fspath(root))
  pattern = os.path.join(root, "*", "*", "*.trans.txt")
  for trans in sorted(glob.glob(pattern)):
    chapter_dir = os.path.dirname(trans)
    speaker = os.path.basename(os.path.dirname(chapter_dir))
    with open(trans, encoding="utf-8") as f:
      for line_no, line in enumerate(f, start=1):
        line = line.strip()
        if not line:
          continue
        utt_id, _, text = line.partition(" ")
        if not text.strip():
          raise ValueError(f"{trans}:{line_no}: expected '<utt-id> <text>', got {line!r}")
        audio = os.path.join(chapter_dir, utt_id + ".flac")
        if not os.path.isfile(audio):
          raise ValueError(f"{trans}:{line_no}: audio file not found: {audio}")
        info = soundfile.info(audio)
        path = os.path.relpath(audio, out_dir) if out_dir is not None else audio
        yield {"audio_filepath": path,
               "duration": round(info.frames / info.samplerate, 4),
               "text": text.strip(), "speaker": speaker, "utt_id": utt_id}


def import_librispeech(root: str | os.PathLike, out_path: str | os.PathLike,
                       *, absolute: bool = False) -> int:
  """Writes the manifest of a LibriSpeech split.

  Args:
    root: the split directory.
    out_path: the JSONL manifest to write (its folder is created).
    absolute: write absolute audio paths instead of paths relative to the
      manifest's folder.

  Returns:
    The number of utterances written.
  """
  out_path = os.path.abspath(os.fspath(out_path))
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  out_dir = None if absolute else os.path.dirname(out_path)
  return manifest_lib.write_manifest(out_path, iter_librispeech(root, out_dir))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="Import a LibriSpeech split directory into a JSONL manifest.")
  parser.add_argument("root", help="split directory, e.g. LibriSpeech/dev-clean")
  parser.add_argument("out", help="output manifest (.jsonl)")
  parser.add_argument("--absolute", action="store_true",
                      help="write absolute audio paths")
  args = parser.parse_args(argv)
  n = import_librispeech(args.root, args.out, absolute=args.absolute)
  if n == 0:
    print(f"no *.trans.txt found under {args.root}", file=sys.stderr)
    return 1
  print(f"wrote {n} utterances to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
