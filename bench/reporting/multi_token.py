"""What multi-token decoding buys: decoder calls and wall clock by head type and strategy
(bench/decode.py, bench/recipe_eval.py's heads × strategies runs), what one call costs
(bench/step_cost.py, bench/unembed_layout.py), the peer generate (bench/peer_decode.py)
and the Pallas kernels (bench/kernels.py)."""
from __future__ import annotations

import pathlib
import re

from reporting.common import (HEAD_TYPES, RANDOM_LABEL, Context, Section, caption, command_of,
                              fmt, get, is_random, load_json, md_table, measured_on)


def _head_type(model: str, root: pathlib.Path) -> str:
  """The MTP head type of a bench/decode.py `model`: its workdir's config, else its name."""
  for base in (pathlib.Path(str(model)), root / str(model)):
    cfg = load_json(base / "config.json") if str(model) else None
    head = get(cfg, "model", "mtp", "head_type")
    if head:
      k = get(cfg, "model", "mtp", "num_heads")
      return f"{head} (K={k})" if k else str(head)
  for h in HEAD_TYPES:
    if h in str(model):
      return h
  return str(model)


def render_decode(path, data, ctx: Context) -> Section:
  """bench/decode.py: head type x strategy -> WER, calls/utt, reduction, speedup."""
  rows = data.get("rows") or []
  rnd = is_random(data) or any(r.get("random_init") for r in rows)
  loop = any("loop_speedup" in r for r in rows)
  heads = {r.get("model", ""): _head_type(r.get("model", "?"), ctx.root) for r in rows}
  table = [[heads[r.get("model", "")], fmt(r.get("model")), fmt(r.get("batch_size")),
            fmt(r.get("strategy")), "–" if rnd else fmt(r.get("wer"), "pct"),
            fmt(r.get("calls_per_utt")), fmt(r.get("tokens_per_call")),
            fmt(r.get("calls_reduction"), "x"), fmt(r.get("speedup"), "x")]
           + ([fmt(r.get("loop_speedup"), "x")] if loop else []) + [fmt(r.get("rtfx"))]
           for r in rows]
  body = [caption(data, path, "python bench/decode.py --workdirs runs/ind,runs/lat,runs/seq"),
          "", md_table(["head type", "model", "batch", "strategy",
                        f"WER: {RANDOM_LABEL}" if rnd else "WER", "calls/utt", "tokens/call",
                        "calls reduction", "speedup vs greedy"]
                       + (["loop speedup"] if loop else []) + ["RTFx"], table)]
  if loop:
    body += ["", "*Speedup vs greedy* is end to end; *loop speedup* leaves out the "
             "encoder + prefill time (a one-token greedy decode, timed apart), the part "
             "multi-token decoding cannot shorten."]
  if rows:
    def draw(plt):
      fig, ax = plt.subplots(figsize=(8.5, 4.2))
      ykey = "speedup" if rnd else "wer"
      markers = dict(zip(HEAD_TYPES, "osD"))
      strategies = sorted({r.get("strategy", "?") for r in rows})
      colors = {s: f"C{i}" for i, s in enumerate(strategies)}
      batch = max(int(r.get("batch_size") or 1) for r in rows)
      for r in rows:
        if int(r.get("batch_size") or 1) != batch or r.get(ykey) is None:
          continue
        ax.scatter(r.get("calls_per_utt", 0), r[ykey] * (1 if rnd else 100),
                   color=colors[r.get("strategy", "?")],
                   marker=markers.get(heads[r.get("model", "")].split(" ")[0], "x"), s=50)
      for s in strategies:
        ax.scatter([], [], color=colors[s], label=s)
      for h, mk in markers.items():
        if any(v.split(" ")[0] == h for v in heads.values()):
          ax.scatter([], [], color="0.4", marker=mk, label=f"{h} heads")
      ax.set_xlabel("decoder calls per utterance")
      ax.set_ylabel("speedup vs greedy (×)" if rnd else "WER (%)")
      ax.set_title(f"Decoding strategies, batch {batch}" +
                   (f" — {RANDOM_LABEL}: speedup, not WER" if rnd else ": WER vs decoder calls"),
                   fontsize=10)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
      fig.tight_layout(rect=(0, 0.03, 1, 1))
      return fig
    img, png = ctx.plot(pathlib.Path(path).stem + ".png", draw, measured_on(data, path),
                        "WER vs decoder calls per strategy")
    body += ["", img]
    return Section(f"Decoding strategies ({ctx.name(path)})", "\n".join(body), [png])
  return Section(f"Decoding strategies ({ctx.name(path)})", "\n".join(body))


# ----------------------------------------------------------------------------
# Heads × strategies: bench/recipe_eval.py runs named <family>_<label>_<kind>.json.

HXS_RE = re.compile(r"^(?P<family>w?hxs)_(?P<label>.+?)_(?P<kind>b16|speed_b1|speed_b16)$")
# File prefix -> the trunk its heads × strategies table is about.
HXS_FAMILIES = {
    "hxs": "the Whisper encoder + from-scratch LLaMA decoder (configs/recipes/whisper_tiny_cpu.py)",
    "whxs": "Whisper's own decoder (configs/recipes/whisper_tiny_decoder_cpu.py)",
}
DEPTH_STRATEGIES = ("greedy", "verify", "tree")
HXS_HEADERS = ["heads", "strategy", "Kathleen WER", "FSDD WER", "AN4 WER", "calls/utt",
               "calls reduction", "ceiling", "tokens/call", "acceptance per head", "RTFx B=1",
               "speedup B=1", "speedup B=16"]


def hxs_label_key(label: str):
  """Order: decoder depth, head type (HEAD_TYPES order), then K; other labels last."""
  m = re.match(r"^(?:dec(?P<layers>\d+)_)?(?P<type>[a-z]+)_k(?P<k>\d+)$", label)
  if not m:
    return (9, 0, 0, label)
  t = HEAD_TYPES.index(m["type"]) if m["type"] in HEAD_TYPES else len(HEAD_TYPES)
  return (int(m["layers"] or 4), t, int(m["k"]), label)


def render_heads_x_strategies(files, ctx: Context) -> list[Section]:
  """bench/recipe_eval.py runs named <family>_<label>_{b16,speed_b1,speed_b16}.json, one
  section per family (HXS_FAMILIES): a head type x strategy table (the MTP paper's) and a
  decoder-depth table (labels dec<L>_<type>_k<K>; the recipe's own decoder is the label
  without that prefix). `files` is [(path, data)]."""
  families: dict[str, dict] = {}
  for path, data in files:
    m = HXS_RE.match(pathlib.Path(path).stem)
    if m:
      families.setdefault(m["family"], {}).setdefault(m["label"], {})[m["kind"]] = (path, data)
  return [_hxs_family(items, ctx, fam) for fam, items in sorted(families.items())]


def _hxs_family(items: dict, ctx: Context, family: str) -> Section:
  labels = sorted(items, key=hxs_label_key)

  def rows_of(label, kind, test_set):
    data = items[label].get(kind, (None, {}))[1]
    return {r["strategy"]: r for r in data.get("rows") or [] if r.get("test_set") == test_set}

  def alone(label):  # the batch-16 run on every utterance was timed with the machine to itself
    return items[label].get("b16", (None, {}))[1].get("timing") == "alone"

  def table(labels, strategies=None):
    out, best = [], []
    for label in labels:
      kath = rows_of(label, "b16", "kathleen_test")
      fsdd, an4 = rows_of(label, "b16", "fsdd_test"), rows_of(label, "b16", "an4_test")
      b1 = rows_of(label, "speed_b1", "kathleen_test")
      b16 = rows_of(label, "speed_b16", "kathleen_test")
      greedy_wer = (kath.get("greedy") or {}).get("wer")
      for strat, r in kath.items():
        if strategies is not None and strat not in strategies:
          continue
        if (greedy_wer is not None and r.get("wer") is not None and r["wer"] <= greedy_wer
            and r.get("calls_reduction")):
          best.append((r["calls_reduction"], label, strat, r.get("calls_reduction_ceiling")))
        s16 = fmt((b16.get(strat) or {}).get("speedup"), "x")
        if not b16 and alone(label) and r.get("speedup") is not None:
          s16 = fmt(r["speedup"], "x") + " †"
        out.append([label, strat, fmt(r.get("wer"), "pct"),
                    fmt((fsdd.get(strat) or {}).get("wer"), "pct"),
                    fmt((an4.get(strat) or {}).get("wer"), "pct"),
                    fmt(r.get("calls_per_utt")), fmt(r.get("calls_reduction"), "x"),
                    fmt(r.get("calls_reduction_ceiling"), "x"),
                    fmt(r.get("tokens_per_call")),
                    "/".join(f"{a:.2f}" for a in r.get("acceptance_per_head") or []) or "–",
                    fmt((b1.get(strat) or {}).get("rtfx")),
                    fmt((b1.get(strat) or {}).get("speedup"), "x"), s16])
    return out, best

  first = items[labels[0]].get("b16") or next(iter(items[labels[0]].values()))
  timed = any(k != "b16" for kinds in items.values() for k in kinds)
  dates = sorted({measured_on(d, p).split("; ")[1] for kinds in items.values()
                  for p, d in kinds.values()})
  when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
  body = [f"*Measured on {measured_on(first[1], first[0]).split('; ')[0]}; {when}. WER, calls, "
          "tokens/call and acceptance: every utterance of each test set at batch 16 (calls and "
          "acceptance on Kathleen test)"
          + ("; speed: Kathleen test's first 150 (batch 1) / 300 (batch 16) utterances, "
             "every other process paused, compile time apart (†: every utterance at batch "
             "16, from the run above, which had the machine to itself)" if timed else "")
          + ". Reproduce:*", ""]
  for label in labels:
    for kind in ("b16", "speed_b1", "speed_b16"):
      if kind in items[label]:
        body.append(f"* `{command_of(items[label][kind][1], 'python bench/recipe_eval.py')}`")
  heads = [l for l in labels if not l.startswith("dec")]
  depth = [l for l in labels if l.startswith("dec")]
  plots, files = [], [p for kinds in items.values() for p, _ in kinds.values()]
  if heads:
    t, best = table(heads)
    body += ["", "**Head type × strategy** (K heads trained alone on the frozen K=1 trunk, "
             "unless the label says `joint`; greedy is that trunk's output)", "",
             md_table(HXS_HEADERS, t)]
    points = {l: rows_of(l, "b16", "kathleen_test") for l in heads}
    if any(r.get("calls_reduction") is not None and r.get("wer") is not None
           for by in points.values() for r in by.values()):
      img, png = ctx.plot(f"{family}_calls_vs_wer.png", lambda plt: _calls_vs_wer(plt, points),
                          measured_on(first[1], first[0]),
                          "Kathleen-test WER against decoder calls saved")
      plots.append(png)
      body += ["", img]
    if best:
      r, label, strat, ceiling = max(best, key=lambda b: b[:3])
      body.append(f"\nMost decoder calls saved at a Kathleen WER ≤ greedy's: **{r:.2f}×** "
                  f"({label}, {strat})"
                  + (f"; with every draft accepted, this model's K and these transcripts' "
                     f"lengths allow at most {ceiling:.2f}×" if ceiling else "") + ".")
    if any(row[7] != "–" for row in t):  # some exact multi-token row has a ceiling
      body.append("\n*ceiling*: the calls reduction of an exact strategy (verify, tree) if "
                  "every draft were accepted: the prefill emits one token and each later "
                  "call at most K, so an utterance greedy decodes in c calls needs at least "
                  "1 + ⌈(c − 1)/K⌉ (`mtp_jax.decode.summary.calls_ceiling`; "
                  "`python bench/recipe_eval.py --add_ceiling FILE` adds it to a file "
                  "from its greedy hypotheses).")
  if depth:
    base = [l for l in heads if hxs_label_key(l)[1:3] == hxs_label_key(depth[0])[1:3]]
    t, _ = table(sorted(depth + base[:1], key=hxs_label_key), DEPTH_STRATEGIES)
    body += ["", "**MTP vs a thinner decoder** (the same encoder and training with decoders of "
             "other depths; greedy = the K=1 trunk, verify/tree = K=4 heads on that trunk; "
             "a label without `dec` is the recipe's own decoder)", "", md_table(HXS_HEADERS, t)]
  return Section(f"Heads × strategies and decoder depth on {HXS_FAMILIES.get(family, family)}",
                 "\n".join(body), plots, files)


def _calls_vs_wer(plt, rows: dict):
  """One point per (heads label, strategy): decoder calls saved vs greedy (x) against
  Kathleen-test WER (y); a dashed line at each greedy WER."""
  points = [(lab, strat, r["calls_reduction"], r["wer"]) for lab, by in rows.items()
            for strat, r in by.items()
            if r.get("calls_reduction") is not None and r.get("wer") is not None]
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  strategies = sorted({p[1].split(":")[0] for p in points})
  markers = dict(zip(strategies, "osD^v<>ph*"))
  for i, lab in enumerate(rows):
    color = f"C{i % 10}"
    for _, strat, x, y in (p for p in points if p[0] == lab):
      ax.scatter(x, 100 * y, color=color, marker=markers[strat.split(":")[0]], s=36)
    greedy = rows[lab].get("greedy", {}).get("wer")
    if greedy is not None:
      ax.axhline(100 * greedy, color=color, lw=0.6, ls="--")
    ax.scatter([], [], color=color, marker="o", label=lab)
  for strat in strategies:
    ax.scatter([], [], color="0.4", marker=markers[strat], label=strat)
  ax.set_xlabel("decoder calls saved vs greedy (×)")
  ax.set_ylabel("Kathleen test WER (%)")
  ax.legend(fontsize=7, ncol=2)
  ax.grid(alpha=0.3)
  return fig


# ----------------------------------------------------------------------------
# What one decoder call costs.

def render_step_cost(path, data, ctx: Context) -> Section:
  """bench/step_cost.py: one loop iteration of each strategy against greedy's."""
  rows = data.get("rows") or []
  strategies = data.get("strategies") or ["greedy", "verify"]
  table = [[fmt(r.get("config")), fmt(r.get("batch")), fmt(r.get("decoder_params")),
            fmt(r.get("prefill_ms"))]
           + [fmt(r.get(f"{s}_step_ms")) for s in strategies]
           + [fmt(r.get(f"{s}_ratio", r.get("break_even_reduction") if s == "verify" else None),
                  "x") for s in strategies[1:]]
           + [fmt(r.get("compile_s"), "s")] for r in rows]
  body = [caption(data, path, "python bench/step_cost.py"), "",
          md_table(["config", "batch", "decoder params", "prefill ms"]
                   + [f"{s} iteration ms" for s in strategies]
                   + [f"{s} / greedy" for s in strategies[1:]] + ["compile"], table), "",
          "*strategy / greedy* = the cost of one loop iteration (decoder call, acceptance, "
          "emission, bookkeeping) relative to greedy's: the decoder-call reduction the "
          "strategy needs before it is faster than greedy on this machine."]
  widths = [r for r in rows if r.get("call_ms_by_width")]
  if widths:
    ts = sorted({t for r in widths for t in r["call_ms_by_width"]}, key=int)

    def cell(r, t):
      ms = r["call_ms_by_width"]
      return f"{ms[t]:.3f} ({ms[t] / ms[ts[0]]:.2f}×)" if t in ms else "–"
    body += ["", "Bare decoder call (head 1 at every position) by tokens fed per row, ms "
             "(× the 1-token call):", "",
             md_table(["config", "batch"] + [f"T={t}" for t in ts],
                      [[fmt(r.get("config")), fmt(r.get("batch"))] + [cell(r, t) for t in ts]
                       for r in widths])]
  return Section(f"Decoder-call cost ({ctx.name(path)})", "\n".join(body))


def render_unembed_layout(path, data, ctx: Context) -> Section:
  """bench/unembed_layout.py: the vocabulary projection alone, by layout and argmax."""
  table = [[fmt(r.get("rows")), fmt(r.get("xEt_ms")), fmt(r.get("xW_ms")),
            fmt(r.get("layout_speedup"), "x"), fmt(r.get("xW_argmax_ms")),
            fmt(r.get("xW_two_reductions_argmax_ms"))] for r in data.get("rows") or []]
  body = [caption(data, path, "python bench/unembed_layout.py"), "",
          f"[M, {fmt(data.get('d_model'))}] rows times the unembedding of "
          f"{fmt(data.get('vocab'))} tokens, median ms:", "",
          md_table(["M rows", "x @ E^T (E [V, d])", "x @ W (W [d, V])", "layout speedup",
                    "+ jnp.argmax", "+ max, first index"], table)]
  passes = data.get("passes") or []
  if passes:
    body += ["", "One multi-token call's vocabulary work in one matmul of M rows or two of "
             "M/4 (`mtp_jax.decode.common.ONE_PASS_MAX_ROWS`): "
             + "; ".join(f"M={p['rows']}: {fmt(p['one_pass_ms'])} vs {fmt(p['two_passes_ms'])} ms"
                         for p in passes) + "."]
  return Section(f"Vocabulary projection ({ctx.name(path)})", "\n".join(body))


def render_kernels(path, data, ctx: Context) -> Section:
  """bench/kernels.py: Pallas kernels vs their XLA references."""
  table = []
  for r in data.get("rows") or []:
    shape = ", ".join(f"{k}={v}" for k, v in r.items()
                      if k in ("v", "b", "n_tok", "n") and v is not None)
    if r.get("skipped"):
      table.append([fmt(r.get("op")), shape, "–", "–", "–", "–", f"skipped: {fmt(r['skipped'])}"])
      continue
    check = r.get("argmax_match", r.get("group_index_match"))
    table.append([fmt(r.get("op")), shape, fmt(get(r, "reference", "median_ms"), "ms"),
                  fmt(get(r, "kernel", "median_ms"), "ms"), fmt(r.get("speedup"), "x"),
                  fmt(get(r, "kernel", "compile_s"), "s"),
                  f"match {fmt(check)}" if check is not None else ""])
  mode = data.get("kernel_mode")
  body = [caption(data, path, "python bench/kernels.py"),
          "" if not mode else f"\nKernel mode: {mode}"
          + (" (interpret mode on CPU: timings check plumbing, not kernel speed)"
             if mode == "interpret" else "") + f", dtype {data.get('dtype', '?')}.", "",
          md_table(["op", "shape", "reference (median)", "kernel (median)", "speedup",
                    "kernel compile", "check vs reference"], table)]
  return Section(f"Pallas kernels ({ctx.name(path)})", "\n".join(body))


def render_peer_decode(path, data, ctx: Context) -> Section:
  """bench/peer_decode.py: mtp_jax vs Hugging Face generate on the same decoder."""
  table = []
  for r in data.get("results") or []:
    for m, v in (r.get("methods") or {}).items():
      table.append([fmt(r.get("scenario")), fmt(r.get("batch")), m, fmt(v.get("tokens_per_s")),
                    fmt(v.get("calls_per_token")), fmt(v.get("compile_s"), "s"),
                    fmt(v.get("match_hf_greedy"), "pct")])
  ratios = [f"{r.get('scenario')} batch {r.get('batch')}: mtp greedy / HF greedy "
            f"{fmt(r.get('mtp_greedy_vs_hf_greedy'), 'x')}, mtp verify / best HF "
            f"{fmt(r.get('mtp_verify_vs_best_hf'), 'x')}" for r in data.get("results") or []]
  cfg = get(data, "machine", "config")
  default = "python bench/peer_decode.py" + (f" --config {cfg}" if cfg else "") + (
      f" --new_tokens {get(data, 'machine', 'new_tokens')}"
      if get(data, "machine", "new_tokens") else "")
  body = [caption(data, path, default), "",
          md_table(["scenario", "batch", "method", "tokens/s", "calls/token", "compile",
                    "same tokens as HF greedy"], table)]
  if ratios:
    body += ["", "Side-by-side ratios: " + "; ".join(ratios) + "."]
  return Section(f"mtp_jax vs Hugging Face generate ({ctx.name(path)})", "\n".join(body))

