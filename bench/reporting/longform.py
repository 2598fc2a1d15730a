"""Long recordings (bench/longform.py): our models and faster-whisper's own long-form
transcription on the same recordings, scored over whole recordings."""
from __future__ import annotations

from reporting.common import Context, Section, caption, fmt, md_table


def render_longform(path, data, ctx: Context) -> Section:
  """One row per (set, system): WER (S/D/I), RTFx, decoder calls per recording, the
  ratios to greedy and to utterance-by-utterance decoding, peak memory."""
  table = [[fmt(r.get("set")), fmt(r.get("system")), fmt(r.get("recordings")),
            fmt(r.get("wer"), "pct"),
            "/".join(fmt(r.get(k)) for k in ("substitutions", "deletions", "insertions")),
            fmt(r.get("rtfx")), fmt(r.get("rtfx_cpu")), fmt(r.get("calls_per_rec")),
            fmt(r.get("calls_reduction"), "x"), fmt(r.get("speedup"), "x"),
            fmt(r.get("wer_vs_utterances"), "x"), fmt(r.get("peak_rss_mib"))]
           for r in data.get("rows") or []]
  body = [caption(data, path, "python bench/longform.py --sets runs/longform/kathleen_60s.jsonl"),
          "", md_table(["set", "system", "recordings", "WER", "S/D/I", "RTFx", "RTFx per CPU-s",
                        "calls/recording", "fewer calls than greedy", "speed vs greedy",
                        "WER / one utterance at a time", "peak RSS MiB"], table)]
  return Section(f"Long recordings ({ctx.name(path)})", "\n".join(body))
