"""Timed transcript segments and their file formats: txt, jsonl, srt, vtt.

  from mtp_jax.decode.segments import Segment, write_transcript
  segs = [Segment(0.0, 4.2, "hello there"), Segment(4.2, 9.0, "general kenobi")]
  write_transcript("out/talk", segs, ["srt", "vtt"])   # out/talk.srt, out/talk.vtt

Times are seconds from the start of the recording. A segment is one decoded chunk
(silence split) or the part of an overlapping window that survived the merge of its
overlapped words, so its times are the chunk's (or the merge point's, at the middle of
the overlap), not word times.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Sequence

FORMATS = ("txt", "jsonl", "srt", "vtt")


@dataclasses.dataclass(frozen=True)
class Segment:
  """A piece of a transcript with its place in the recording.

  Attributes:
    start: start in seconds.
    end: end in seconds (>= start).
    text: the words.
  """
  start: float
  end: float
  text: str

  def to_dict(self) -> dict:
    """{"start", "end", "text"}, times rounded to milliseconds."""
    return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}


@dataclasses.dataclass
class Transcript:
  """The result for one input of `Transcriber.transcribe_many`.

  Attributes:
    name: the file path, or "<array i>".
    segments: the timed segments with text, in time order.
    duration: seconds of audio read (0.0 when nothing could be read).
    error: why the input could not be transcribed (names the file), else None.
    warnings: messages about a partly read input (e.g. a truncated file).
    stats: counters: chunks, decoded_chunks (the rest were silent and skipped),
      decoder_calls, tokens, capped_chunks (stopped by the token cap),
      repetition_cuts (cut by the repeated n-gram guard).
  """
  name: str
  segments: list[Segment] = dataclasses.field(default_factory=list)
  duration: float = 0.0
  error: str | None = None
  warnings: list[str] = dataclasses.field(default_factory=list)
  stats: dict = dataclasses.field(default_factory=dict)

  @property
  def text(self) -> str:
    """The whole transcript: the segments' texts joined with spaces."""
    return " ".join(s.text for s in self.segments if s.text)

  @property
  def ok(self) -> bool:
    return self.error is None


def _clock(seconds: float, sep: str) -> str:
  ms = max(0, int(round(seconds * 1000)))
  h, ms = divmod(ms, 3_600_000)
  m, ms = divmod(ms, 60_000)
  s, ms = divmod(ms, 1000)
  return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_time(seconds: float) -> str:
  """SubRip time, e.g. 3725.5 -> "01:02:05,500"."""
  return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
  """WebVTT time, e.g. 3725.5 -> "01:02:05.500"."""
  return _clock(seconds, ".")


def _cue_text(text: str) -> str:
  # A blank line ends a cue in both formats, and "-->" would read as a timing line.
  return " ".join(text.split()).replace("-->", "->")


def to_txt(segments: Sequence[Segment]) -> str:
  """The transcript as one line."""
  return " ".join(" ".join(s.text.split()) for s in segments if s.text.strip()) + "\n"


def to_jsonl(segments: Sequence[Segment]) -> str:
  """One {"start", "end", "text"} JSON object per line."""
  return "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n"
                 for s in segments if s.text)


def to_srt(segments: Sequence[Segment]) -> str:
  """SubRip: numbered cues "HH:MM:SS,mmm --> HH:MM:SS,mmm", blank-line separated."""
  cues = [f"{n}\n{srt_time(s.start)} --> {srt_time(s.end)}\n{_cue_text(s.text)}\n"
          for n, s in enumerate((s for s in segments if s.text), start=1)]
  return "\n".join(cues)


def to_vtt(segments: Sequence[Segment]) -> str:
  """WebVTT: the "WEBVTT" header, then "HH:MM:SS.mmm --> HH:MM:SS.mmm" cues."""
  cues = [f"{vtt_time(s.start)} --> {vtt_time(s.end)}\n{_cue_text(s.text)}\n"
          for s in segments if s.text]
  return "WEBVTT\n\n" + "\n".join(cues)


WRITERS = {"txt": to_txt, "jsonl": to_jsonl, "srt": to_srt, "vtt": to_vtt}


def check_formats(formats: Iterable[str]) -> list[str]:
  """The formats, deduplicated in order; raises ValueError naming an unknown one."""
  out = []
  for f in formats:
    f = f.strip().lower()
    if f not in WRITERS:
      raise ValueError(f"unknown transcript format {f!r}: expected one of {', '.join(FORMATS)}")
    if f not in out:
      out.append(f)
  return out


def write_transcript(stem: str | os.PathLike, segments: Sequence[Segment],
                     formats: Iterable[str]) -> list[str]:
  """Writes `<stem>.<format>` for each format; returns the paths written."""
  paths = []
  for f in check_formats(formats):
    path = f"{os.fspath(stem)}.{f}"
    with open(path, "w", encoding="utf-8") as out:
      out.write(WRITERS[f](segments))
    paths.append(path)
  return paths
