"""What FastAdaSP buys: bench/fastadasp.py's method x schedule x FLOPs-reduction tables."""
from __future__ import annotations

import pathlib

from reporting.common import (RANDOM_LABEL, Context, Section, caption, fmt, is_random, md_table,
                              measured_on)


def render_fastadasp(path, data, ctx: Context) -> Section:
  """bench/fastadasp.py: method x schedule x FLOPs reduction -> WER, prefill speedup."""
  rnd = is_random(data)
  body = [caption(data, path, "python bench/fastadasp.py --workdir runs/small")]
  if rnd:
    body.append(f"\nWER: {RANDOM_LABEL} (the model was randomly initialized).")
  if data.get("notes"):
    body.append(f"\nNote from the benchmark: {data['notes']}")
  sets = data.get("sets") or {}
  for set_name, s in sets.items():
    rows = s.get("rows") or []
    targets = sorted({r.get("target") for r in rows if r.get("target") is not None})
    groups: dict[tuple, dict] = {}
    dev = 0.0
    for r in rows:
      groups.setdefault((r.get("method"), r.get("schedule")), {})[r.get("target")] = r
      if r.get("flops_reduction") is not None and r.get("target") is not None:
        dev = max(dev, abs(r["flops_reduction"] - r["target"]))
    full_wer = (s.get("full") or {}).get("wer")
    with_decode = any(r.get("decode_speedup_vs_full") is not None for r in rows)

    def cell(r):
      if r is None:
        return "–"
      wer = "–" if rnd else fmt(r.get("wer"), "pct")
      if not rnd and full_wer and r.get("wer") is not None:
        wer += f" ({fmt(r['wer'] / full_wer, 'rel')})"
      return (f"{wer} / {fmt(r.get('prefill_speedup'), 'x')}"
              + (f" / {fmt(r.get('decode_speedup_vs_full'), 'x')}" if with_decode else ""))
    table = [[fmt(m), fmt(sc)] + [cell(g.get(t)) for t in targets] for (m, sc), g in groups.items()]
    body += ["", f"**{set_name}** — cells: WER"
             + ("" if rnd or not full_wer else " (relative change vs full tokens)")
             + " / decoder-prefill speedup vs full tokens"
             + (" / end-to-end decode speedup (tokens/s, encoder included)" if with_decode else "")
             + f"; full-token WER {'–' if rnd else fmt(full_wer, 'pct')}; planned FLOPs "
             f"reductions are within {100 * dev:.1f} points of the target.", "",
             md_table(["method", "schedule"] + [f"−{100 * t:.0f}% FLOPs" for t in targets], table)]
    body += _sparse_lines(s.get("sparse_calibration"), rnd)
  plots = []
  if sets:
    img, png = ctx.plot(pathlib.Path(path).stem + ".png", lambda plt: _draw(plt, sets, rnd),
                        measured_on(data, path), "WER vs FLOPs reduction per method")
    plots.append(png)
    body += ["", img]
  return Section(f"FastAdaSP audio-token reduction ({ctx.name(path)})", "\n".join(body), plots)


def _draw(plt, sets: dict, rnd: bool):
  fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.8), squeeze=False)
  for ax, (set_name, s) in zip(axes[0], sets.items()):
    ykey = "prefill_speedup" if rnd else "wer"
    methods = {(r.get("method"), r.get("schedule")): None for r in s.get("rows") or []}
    for i, (m, sc) in enumerate(methods):
      pts = sorted((r["flops_reduction"], r[ykey]) for r in s["rows"]
                   if (r.get("method"), r.get("schedule")) == (m, sc)
                   and r.get(ykey) is not None and r.get("flops_reduction") is not None)
      if pts:
        xs, ys = zip(*pts)
        ys = ys if rnd else [100 * y for y in ys]
        ax.plot([100 * x for x in xs], ys, marker="o", ms=4, color=f"C{i % 10}",
                ls="-" if sc != "constant" else "--",
                label=m if sc in (None, "-") else f"{m} ({sc})")
    full = (s.get("full") or {}).get("wer")
    if not rnd and full is not None:
      ax.axhline(100 * full, color="0.3", lw=1, ls=":", label="full tokens")
    ax.set_xlabel("decoder prefill FLOPs reduction (%)")
    ax.set_ylabel("prefill speedup vs full tokens (×)" if rnd else "WER (%)")
    ax.set_title(f"{set_name}" + (f" — {RANDOM_LABEL}" if rnd else ": WER vs FLOPs reduction"),
                 fontsize=10)
    ax.grid(alpha=0.3)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=3 if len(sets) == 1 else 5, fontsize=7,
             frameon=False, bbox_to_anchor=(0.5, 0.03))
  fig.tight_layout(rect=(0, 0.2 if len(sets) == 1 else 0.14, 1, 1))
  return fig


def _sparse_lines(sparse: dict | None, rnd: bool) -> list[str]:
  """The transfer-entropy layer ranking and, when scored, each compared layer's WER."""
  if not sparse:
    return []
  ranking = sparse.get("ranking") or sorted(
      (sparse.get("te_losses") or {}), key=lambda k: sparse["te_losses"][k])
  text = (f"Sparse FastAdaSP: transfer-entropy ranking of the layers where one merge reaches "
          f"−{100 * sparse.get('calib_target', 0):.0f}% FLOPs (least information loss first): "
          + " < ".join(f"layer {l}" for l in ranking) + f"; selected: layer {sparse.get('layer')}.")
  layer_wer = sparse.get("layer_wer") or {}
  if layer_wer and not rnd:
    text += (" WER with the single merge in each compared layer: "
             + ", ".join(f"layer {l}{' (selected)' if str(l) == str(sparse.get('layer')) else ''}"
                         f" {fmt(w, 'pct')}" for l, w in layer_wer.items()) + ".")
  return ["", text]
