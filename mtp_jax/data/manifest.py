"""NeMo-style JSON Lines manifests.

One utterance per line:

  {"audio_filepath": "audio/x.flac", "duration": 3.21, "text": "...",
   "speaker": "optional", "lang": "optional", "utt_id": "optional"}

`audio_filepath` is relative to the manifest's folder or absolute. Blank lines
are ignored. Each record becomes a `ManifestEntry` that remembers where it came
from (manifest path and 1-based line), so any later error can name it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Iterable

from mtp_jax.data.errors import ManifestError


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
  """One utterance of a manifest.

  Attributes:
    audio_filepath: absolute path of the audio file.
    duration: duration in seconds as the manifest states it.
    text: the raw transcript (not normalized).
    manifest: absolute path of the manifest file.
    line: 1-based line number of the record in `manifest`.
    utt_id: the record's "utt_id" (or "id") field, else the audio file's stem.
    speaker: optional speaker label ("" when absent).
    lang: optional language code ("" when absent).
  """
  audio_filepath: str
  duration: float
  text: str
  manifest: str
  line: int
  utt_id: str
  speaker: str = ""
  lang: str = ""

  @property
  def where(self) -> str:
    """"manifest:line", for messages."""
    return f"{self.manifest}:{self.line}"


def _parse_line(raw: str, manifest: str, line: int) -> ManifestEntry:
  def fail(reason):
    raise ManifestError(manifest, line, reason)

  try:
    rec = json.loads(raw)
  except json.JSONDecodeError as e:
    fail(f"invalid JSON ({e.msg} at column {e.colno})")
  if not isinstance(rec, dict):
    fail(f"expected a JSON object, got {type(rec).__name__}")
  path = rec.get("audio_filepath")
  if not isinstance(path, str) or not path.strip():
    fail(f"field 'audio_filepath' must be a non-empty string, got {path!r}")
  duration = rec.get("duration")
  if (isinstance(duration, bool) or not isinstance(duration, (int, float))
      or not math.isfinite(duration)):
    fail(f"field 'duration' must be a finite number, got {duration!r}")
  text = rec.get("text")
  if not isinstance(text, str):
    fail(f"field 'text' must be a string, got {text!r}")
  optional = {}
  for field in ("speaker", "lang", "utt_id", "id"):
    value = rec.get(field)
    if value is not None and not isinstance(value, (str, int)):
      fail(f"field {field!r} must be a string, got {value!r}")
    optional[field] = "" if value is None else str(value)
  path = os.path.join(os.path.dirname(manifest), os.path.expanduser(path))
  utt_id = (optional["utt_id"] or optional["id"]
            or os.path.splitext(os.path.basename(path))[0])
  return ManifestEntry(
      audio_filepath=os.path.normpath(path), duration=float(duration),
      text=text, manifest=manifest, line=line, utt_id=utt_id,
      speaker=optional["speaker"], lang=optional["lang"])


def load_manifest(path: str | os.PathLike,
                  errors: list | None = None) -> list[ManifestEntry]:
  """Reads one JSONL manifest.

  Args:
    path: the manifest file.
    errors: when None, a malformed line raises `ManifestError`; when a list,
      the error is appended to it and the line skipped.

  Returns:
    The entries in file order.

  Raises:
    ManifestError: a line is not a JSON object with a string 'audio_filepath',
      a finite numeric 'duration' and a string 'text' (message names the
      manifest and line), unless `errors` collects it.
    FileNotFoundError: the manifest does not exist.
  """
  manifest = os.path.abspath(os.fspath(path))
  entries = []
  with open(manifest, encoding="utf-8") as f:
    for line, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        entries.append(_parse_line(raw, manifest, line))
      except ManifestError as e:
        if errors is None:
          raise
        errors.append(e)
  return entries


def split_manifest_paths(paths: str | os.PathLike | Iterable) -> list[str]:
  """Accepts "a.jsonl,b.jsonl", a single path or a list; returns a list of paths."""
  if isinstance(paths, (str, os.PathLike)):
    paths = os.fspath(paths).split(",")
  return [os.fspath(p).strip() for p in paths if os.fspath(p).strip()]


def load_manifests(paths: str | os.PathLike | Iterable,
                   errors: list | None = None) -> list[ManifestEntry]:
  """Reads and concatenates several manifests (see `load_manifest`).

  Args:
    paths: a comma-separated string of paths, one path, or a list of paths.
    errors: see `load_manifest`.
  """
  entries = []
  for p in split_manifest_paths(paths):
    entries += load_manifest(p, errors)
  return entries


def write_manifest(path: str | os.PathLike, records: Iterable[dict]) -> int:
  """Writes dict records as JSON Lines (UTF-8, one object per line).

  Returns:
    The number of records written.
  """
  n = 0
  with open(path, "w", encoding="utf-8") as f:
    for rec in records:
      f.write(json.dumps(rec, ensure_ascii=False) + "\n")
      n += 1
  return n


def write_subset(src: str | os.PathLike, dst: str | os.PathLike, max_utts: int) -> str:
  """Writes the first `max_utts` lines of manifest `src` to `dst`, audio paths made
  absolute (so `dst` can live anywhere). Returns `dst` as a string."""
  base = os.path.dirname(os.path.abspath(src))
  records = []
  with open(src, encoding="utf-8") as f:
    for i, line in enumerate(f):
      if i >= max_utts:
        break
      rec = json.loads(line)
      if not os.path.isabs(rec["audio_filepath"]):
        rec["audio_filepath"] = os.path.join(base, rec["audio_filepath"])
      records.append(rec)
  write_manifest(dst, records)
  return os.fspath(dst)
