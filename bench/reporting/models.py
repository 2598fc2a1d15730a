"""Which model reads speech best, at what cost: real-speech evaluations
(bench/recipe_eval.py), the race against faster-whisper (bench/peer_whisper.py), the demo
(`python -m mtp_jax.demo`) and MWER fine-tuning (bench/mwer.py)."""
from __future__ import annotations

from reporting.common import (RANDOM_LABEL, Context, Section, caption, fmt, get, is_random,
                              md_table)


def render_recipe(path, data, ctx: Context) -> Section:
  """bench/recipe_eval.py: real-speech test sets x strategies."""
  rnd = is_random(data)
  table = [[fmt(r.get("test_set")), fmt(r.get("strategy")), fmt(r.get("utterances")),
            "–" if rnd else fmt(r.get("wer"), "pct"), fmt(r.get("calls_per_utt")),
            fmt(r.get("tokens_per_call")), fmt(r.get("calls_reduction"), "x"),
            fmt(r.get("speedup"), "x"), fmt(r.get("rtfx"))] for r in data.get("rows") or []]
  body = [caption(data, path, "python bench/recipe_eval.py --workdir runs/realmix_cpu")]
  if data.get("workdir"):
    body.append(f"\nModel: `{data['workdir']}`" + (f" (step {data['step']})"
                                                  if data.get("step") is not None else "") + ".")
  body += ["", md_table(["test set", "strategy", "utterances",
                         f"WER: {RANDOM_LABEL}" if rnd else "WER", "calls/utt", "tokens/call",
                         "calls reduction", "speedup vs greedy", "RTFx"], table)]
  return Section(f"Real-speech test sets ({ctx.name(path)})", "\n".join(body))


def render_race(path, data, ctx: Context) -> Section:
  """bench/peer_whisper.py: faster-whisper tiny.en vs our models, same utterances and run."""
  table = [[fmt(r.get("test_set")), fmt(r.get("system")), fmt(r.get("utterances")),
            fmt(r.get("skipped")), fmt(r.get("wer"), "pct"), fmt(r.get("calls_per_utt")),
            fmt(r.get("rtfx")), fmt(r.get("latency_p50_s")), fmt(r.get("latency_p90_s")),
            fmt(r.get("rtfx_vs_peer_fastest_greedy"), "x")] for r in data.get("rows") or []]
  body = [caption(data, path, "python bench/peer_whisper.py --workdirs runs/wt/k4"), "",
          md_table(["test set", "system", "utterances", "skipped", "WER", "calls/utt", "RTFx",
                    "p50 s", "p90 s", "RTFx vs peer's fastest greedy"], table)]
  return Section(f"Race against faster-whisper ({ctx.name(path)})", "\n".join(body))


def render_demo(path, data, ctx: Context) -> Section:
  """`python -m mtp_jax.demo`'s demo_results.json."""
  table = [[fmt(r.get("strategy")), fmt(r.get("utterances")), fmt(r.get("wer"), "pct"),
            fmt(r.get("calls_per_utt")), fmt(r.get("tokens_per_call")),
            fmt(r.get("calls_reduction"), "x"), fmt(r.get("speedup"), "x"), fmt(r.get("rtfx"))]
           for r in data.get("rows") or []]
  args = data.get("args") or {}
  default = "python -m mtp_jax.demo" + "".join(
      f" --{k} {v}" for k, v in args.items() if v is not None)
  if not args:
    default += " --out runs/demo"
  body = [caption(data, path, default)]
  if data.get("total_minutes") is not None:
    stages = data.get("stage_seconds") or {}
    parts = (", ".join(f"{k} {v / 60:.1f}" for k, v in stages.items()) + " min" if stages
             else "synthesis, encoder cache, training, decoding")
    body.append(f"\nTotal wall time: {data['total_minutes']:.1f} min ({parts})."
                + (f" {data['note']}" if data.get("note") else ""))
  body += ["", md_table(["strategy", "utterances", "WER", "calls/utt", "tokens/call",
                         "calls reduction", "speedup vs greedy", "RTFx"], table)]
  for name, t in (data.get("tables") or {}).items():
    if isinstance(t, list) and t and all(isinstance(r, dict) for r in t) and t != data.get("rows"):
      body += ["", f"**{name}**", "", md_table(
          ["strategy", "utterances", "WER", "calls/utt", "calls reduction", "speedup vs greedy"],
          [[fmt(r.get("strategy")), fmt(r.get("utterances")), fmt(r.get("wer"), "pct"),
            fmt(r.get("calls_per_utt")), fmt(r.get("calls_reduction"), "x"),
            fmt(r.get("speedup"), "x")] for r in t])]
  return Section(f"Demo ({ctx.name(path)})", "\n".join(body))


def render_mwer(path, data, ctx: Context) -> Section:
  """bench/mwer.py: the N-best search with K-token blocks vs single tokens, and the WER
  before and after fine-tuning."""
  search = [r for r in data.get("search") or [] if isinstance(r, dict)]
  body = [caption(data, path, "python bench/mwer.py")]
  if search:
    body += ["", "N-best search (prefix beam search, the MWER step's own):", "", md_table(
        ["model", "block", "beam", "N-best", "utterances", "calls/utt", "calls reduction vs 1",
         "utt/s", "speedup vs 1", "top-1 WER", "oracle WER", "expected errors/utt"],
        [[fmt(r.get("model")), fmt(r.get("block_size")), fmt(r.get("beam")), fmt(r.get("nbest")),
          fmt(r.get("utterances")), fmt(r.get("calls_per_utt")),
          fmt(r.get("calls_reduction_vs_k1"), "x"), fmt(r.get("utt_per_s")),
          fmt(r.get("speedup_vs_k1"), "x"), fmt(r.get("top1_wer"), "pct"),
          fmt(r.get("oracle_wer"), "pct"), fmt(r.get("expected_errors_per_utt"))]
         for r in search])]
  ft = data.get("finetune")
  if isinstance(ft, dict) and ft.get("wer_before") is not None:
    before, after = ft["wer_before"], ft.get("wer_after")
    body += ["", "Fine-tuning (greedy WER on the searched utterances):", "", md_table(
        ["objective", "steps", "lr", "CE weight", "time", "WER before", "WER after", "relative",
         "train head-1 acc. (last step)"],
        [[fmt(ft.get("objective", "mwer")), fmt(ft.get("finetune_steps")),
          fmt(ft.get("finetune_lr")), fmt(ft.get("lambda_ce")), fmt(ft.get("finetune_s"), "s"),
          fmt(before, "pct2"), fmt(after, "pct2"),
          fmt(after / before, "rel") if after is not None and before else "–",
          fmt(get(ft, "last_train_metrics", "train/acc_head1"))]])]
  return Section(f"MWER ({ctx.name(path)})", "\n".join(body))
