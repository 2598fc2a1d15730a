"""Turns the JSON of every benchmark present into the README's results section.

Reads what the bench scripts wrote (missing files are skipped with a note):

  bench/results/decode*.json          bench/decode.py        head type x strategy
  bench/results/fastadasp.json        bench/fastadasp.py     method x schedule x FLOPs
  bench/results/data_padding.json     bench/data_padding.py  random vs 1-D vs 2-D batching
  bench/results/train_throughput*.json  bench/train_throughput.py
  bench/results/kernels*.json         bench/kernels.py
  bench/results/peer_decode.json      bench/peer_decode.py
  bench/results/recipe_eval.json      bench/recipe_eval.py   real-speech recipe WER
  runs/demo/demo_results.json         python -m mtp_jax.demo
  any other bench/results/*.json      (e.g. mwer.json, capacity.json) as generic tables

and renders markdown tables plus PNG plots under bench/results/plots/ (matplotlib,
Agg backend). Every table and plot names the machine and date it was measured on
(the JSON's machine/date fields; the file's modification time when absent) and the
command that reproduces it (the JSON's `command`/`argv`/`args` when present). Results
from randomly initialized models (`"trained": false`, `random_init: true`) have their
WER columns labelled "random init (latency only)".

  python bench/report.py                  # print the full results
  python bench/report.py --write_readme   # docs/results.md + README.md's headline

`--write_readme` writes every table and plot to docs/results.md and puts one headline
table (the race against faster-whisper: WER and RTFx side by side) with a link to it
between README.md's `<!-- results:start -->` and `<!-- results:end -->` markers
(appended at the end when absent); re-running with the same JSON gives the same files.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import sys
from typing import Any, Callable, Iterable, Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
RANDOM_LABEL = "random init (latency only)"
HEAD_TYPES = ("independent", "latent", "sequential")


# ----------------------------------------------------------------------------
# Small helpers: loading, labels, formatting.

def load_json(path: str | os.PathLike) -> dict | None:
  """Returns the parsed JSON object at `path`, or None when absent or unreadable."""
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return data if isinstance(data, dict) else {"rows": data}


def _get(d: Any, *keys, default=None):
  for k in keys:
    if not isinstance(d, dict) or k not in d:
      return default
    d = d[k]
  return d


def measured_on(data: dict, path: str | os.PathLike) -> str:
  """`machine, date` from the JSON's machine/date fields (file mtime as fallback)."""
  m = data.get("machine") if isinstance(data.get("machine"), dict) else {}
  date = data.get("date") or m.get("date")
  if isinstance(date, str) and date:
    date = date[:10]
  else:
    try:
      mtime = os.path.getmtime(path)
      date = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).date().isoformat()
      date += " (file date)"
    except OSError:
      date = "date unknown"
  parts = []
  kind = data.get("device_kind") or m.get("device_kind")
  backend = data.get("backend") or m.get("backend")
  if kind and str(kind).lower() != "cpu":
    parts.append(str(kind))
  cpu = m.get("cpu") or m.get("processor")
  if cpu:
    parts.append(str(cpu))
  if m.get("cpu_count"):
    parts.append(f"{m['cpu_count']} CPU cores")
  if not parts:
    for key in ("platform",):
      if m.get(key):
        parts.append(str(m[key]))
  if backend and not any(str(backend).lower() in p.lower() for p in parts):
    parts.append(f"backend {backend}")
  jax_v = m.get("jax") or m.get("jax_version") or data.get("jax_version")
  if jax_v:
    parts.append(f"jax {jax_v}")
  machine = ", ".join(parts) if parts else "machine unknown"
  return f"{machine}; {date}"


def portable(cmd: str) -> str:
  """A recorded command without this machine's paths: the repository's own absolute
  prefix dropped, a sibling `shared/` data folder written as `../shared/`, scratch
  outputs under /tmp/ written under the repository's `runs/` (where commands put them)."""
  repo = f"{ROOT}/"
  cmd = re.sub(r"(?<![\w.])/\S*?/shared/data/", "../shared/data/", cmd.replace(repo, ""))
  return re.sub(r"(?<![\w.])/tmp/", "runs/", cmd)


def command_of(data: dict, default: str) -> str:
  """The command that reproduces `data` (its `command`, `argv` or `args`, else
  `default`), made `portable`."""
  return portable(_command_of(data, default))


def _command_of(data: dict, default: str) -> str:
  cmd = data.get("command") or _get(data, "machine", "command")
  if isinstance(cmd, list):
    cmd = " ".join(map(str, cmd))
  if isinstance(cmd, str) and cmd:
    return cmd if cmd.startswith("python") else f"python {cmd}"
  argv = data.get("argv") or _get(data, "machine", "argv")
  if isinstance(argv, list) and argv:
    return "python " + " ".join(map(str, argv))
  args = data.get("args")
  script = default.split()[:2]
  if isinstance(args, dict) and args and len(script) == 2 and script[1].endswith(".py"):
    flags = [f"--{k} {v}" for k, v in args.items()
             if v is not None and v is not False and k != "out"]
    flags = [f.replace(" True", "") for f in flags]
    return " ".join(script + flags)
  return default


def is_random(data: dict) -> bool:
  """True when the JSON says its model was not trained."""
  return (data.get("trained") is False or bool(data.get("random_init"))
          or bool(_get(data, "machine", "random_init")))


def fmt(v: Any, kind: str = "") -> str:
  """Formats one table cell; `kind` in {"pct", "x", "s", "ms", ""}."""
  if v is None or (isinstance(v, float) and v != v):
    return "–"
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, (int, float)):
    if kind == "pct":
      return f"{100 * v:.1f}%"
    if kind == "x":
      return f"{v:.2f}×"
    if kind in ("s", "ms"):
      return f"{v:.3g} {kind}"
    if isinstance(v, int):
      return str(v)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
  if isinstance(v, (list, tuple)):
    return "/".join(fmt(x) for x in v)
  return str(v).replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """A GitHub markdown table."""
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def _caption(data: dict, path, default_cmd: str) -> str:
  return (f"*Measured on {measured_on(data, path)}. Reproduce: "
          f"`{command_of(data, default_cmd)}`*")


def _rel(path: str | os.PathLike, root: pathlib.Path) -> str:
  try:
    return str(pathlib.Path(path).resolve().relative_to(root.resolve()))
  except ValueError:
    return str(path)


class Section:
  """One rendered benchmark: markdown text plus the plots it wrote."""

  def __init__(self, title: str, body: str = "", plots: Sequence[str] = ()):
    self.title, self.body, self.plots = title, body, list(plots)

  def markdown(self) -> str:
    return f"### {self.title}\n\n{self.body.rstrip()}\n"


# ----------------------------------------------------------------------------
# Plotting (matplotlib, Agg).

def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, plots_dir: pathlib.Path, name: str, label: str) -> pathlib.Path:
  fig.text(0.99, 0.005, label, ha="right", va="bottom", fontsize=7, color="0.35")
  plots_dir.mkdir(parents=True, exist_ok=True)
  path = plots_dir / name
  fig.savefig(path, dpi=110, metadata={"Software": None})
  _plt().close(fig)
  return path


def _img(path: pathlib.Path, root: pathlib.Path, alt: str) -> str:
  return f"![{alt}]({_rel(path, root)})"


# ----------------------------------------------------------------------------
# Benchmarks.

def _head_type(model: str, root: pathlib.Path = ROOT) -> str:
  """The MTP head type of a bench/decode.py `model`: its workdir's config, else its name."""
  for base in (pathlib.Path(str(model)), root / str(model)):
    cfg = load_json(base / "config.json") if str(model) else None
    head = _get(cfg, "model", "mtp", "head_type")
    if head:
      k = _get(cfg, "model", "mtp", "num_heads")
      return f"{head} (K={k})" if k else str(head)
  for h in HEAD_TYPES:
    if h in str(model):
      return h
  return str(model)


def render_decode(path, data, plots_dir, root) -> Section:
  """bench/decode.py: head type x strategy -> WER, calls/utt, reduction, speedup."""
  rows = data.get("rows") or []
  rnd = is_random(data) or any(r.get("random_init") for r in rows)
  wer_h = f"WER: {RANDOM_LABEL}" if rnd else "WER"
  loop = any("loop_speedup" in r for r in rows)
  table = []
  for r in rows:
    table.append([_head_type(r.get("model", "?"), root), fmt(r.get("model")),
                  fmt(r.get("batch_size")),
                  fmt(r.get("strategy")), "–" if rnd else fmt(r.get("wer"), "pct"),
                  fmt(r.get("calls_per_utt")), fmt(r.get("tokens_per_call")),
                  fmt(r.get("calls_reduction"), "x"), fmt(r.get("speedup"), "x")]
                 + ([fmt(r.get("loop_speedup"), "x")] if loop else []) + [fmt(r.get("rtfx"))])
  label = measured_on(data, path)
  body = [_caption(data, path, "python bench/decode.py --workdirs runs/ind,runs/lat,runs/seq"),
          "", md_table(["head type", "model", "batch", "strategy", wer_h, "calls/utt", "tokens/call",
                        "calls reduction", "speedup vs greedy"]
                       + (["loop speedup"] if loop else []) + ["RTFx"], table)]
  if loop:
    body += ["", "*Speedup vs greedy* is end to end; *loop speedup* leaves out the "
             "encoder + prefill time (a one-token greedy decode, timed apart), the part "
             "multi-token decoding cannot shorten."]
  plots = []
  if rows:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    ykey = "speedup" if rnd else "wer"
    markers = dict(zip(HEAD_TYPES, "osD"))
    strategies = sorted({r.get("strategy", "?") for r in rows})
    colors = {s: f"C{i}" for i, s in enumerate(strategies)}
    batch = max(int(r.get("batch_size") or 1) for r in rows)
    for r in rows:
      if int(r.get("batch_size") or 1) != batch or r.get(ykey) is None:
        continue
      y = r[ykey] * (1 if rnd else 100)
      ax.scatter(r.get("calls_per_utt", 0), y, color=colors[r.get("strategy", "?")],
                 marker=markers.get(_head_type(r.get("model", ""), root).split(" ")[0], "x"),
                 s=50)
    for s in strategies:
      ax.scatter([], [], color=colors[s], label=s)
    for h, mk in markers.items():
      if any(_head_type(r.get("model", ""), root).split(" ")[0] == h for r in rows):
        ax.scatter([], [], color="0.4", marker=mk, label=f"{h} heads")
    ax.set_xlabel("decoder calls per utterance")
    ax.set_ylabel("speedup vs greedy (×)" if rnd else "WER (%)")
    ax.set_title(f"Decoding strategies, batch {batch}" +
                 (f" — {RANDOM_LABEL}: speedup, not WER" if rnd else ": WER vs decoder calls"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    plots.append(_save(fig, plots_dir, pathlib.Path(path).stem + ".png", label))
    body += ["", _img(plots[-1], root, "WER vs decoder calls per strategy")]
  return Section(f"Decoding strategies ({pathlib.Path(path).name})", "\n".join(body), plots)


def render_fastadasp(path, data, plots_dir, root) -> Section:
  """bench/fastadasp.py: method x schedule x FLOPs reduction -> WER, prefill speedup."""
  rnd = is_random(data)
  label = measured_on(data, path)
  body = [_caption(data, path, "python bench/fastadasp.py --workdir runs/small")]
  if rnd:
    body.append(f"\nWER: {RANDOM_LABEL} (the model was randomly initialized).")
  if data.get("notes"):
    body.append(f"\nNote from the benchmark: {data['notes']}")
  plots = []
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
    full_wer = _get(s, "full", "wer")
    with_decode = any(r.get("decode_speedup_vs_full") is not None for r in rows)
    cell = lambda r: ("–" if r is None else  # noqa: E731
                      f"{'–' if rnd else fmt(r.get('wer'), 'pct')} / "
                      f"{fmt(r.get('prefill_speedup'), 'x')}"
                      + (f" / {fmt(r.get('decode_speedup_vs_full'), 'x')}" if with_decode else ""))
    table = [[fmt(m), fmt(sc)] + [cell(g.get(t)) for t in targets]
             for (m, sc), g in groups.items()]
    body += ["", f"**{set_name}** — cells: WER / decoder-prefill speedup vs full tokens"
             + (" / end-to-end decode speedup (tokens/s, encoder included)" if with_decode else "")
             + f"; full-token WER {'–' if rnd else fmt(full_wer, 'pct')}; planned FLOPs "
             f"reductions are within {100 * dev:.1f} points of the target.", "",
             md_table(["method", "schedule"] + [f"−{100 * t:.0f}% FLOPs" for t in targets], table)]
    if not rnd and full_wer:
      body += ["", _fastadasp_goals(groups.get(("fastadasp_dense", "decay"), {}), full_wer)]
    body += _sparse_lines(s.get("sparse_calibration"), rnd)
  if sets:
    plt = _plt()
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.8), squeeze=False)
    for ax, (set_name, s) in zip(axes[0], sets.items()):
      ykey = "prefill_speedup" if rnd else "wer"
      for i, ((m, sc), g) in enumerate(
          {(r.get("method"), r.get("schedule")): None for r in s.get("rows") or []}.items()):
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
    ncol = 3 if len(sets) == 1 else 5
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.03))
    fig.tight_layout(rect=(0, 0.2 if len(sets) == 1 else 0.14, 1, 1))
    plots.append(_save(fig, plots_dir, pathlib.Path(path).stem + ".png", label))
    body += ["", _img(plots[-1], root, "WER vs FLOPs reduction per method")]
  return Section("FastAdaSP audio-token reduction", "\n".join(body), plots)


# Issue 19's goals for dense decay: relative WER increase at 30% / 40% fewer prefill FLOPs.
FASTADASP_GOALS = {0.3: 0.03, 0.4: 0.15}


def _fastadasp_goals(dense_decay: dict, full_wer: float) -> str:
  """One sentence: dense decay's relative WER increase at each goal target vs the goal."""
  parts = []
  for target, goal in FASTADASP_GOALS.items():
    r = dense_decay.get(target)
    if r is None or r.get("wer") is None:
      parts.append(f"−{100 * target:.0f}%: not measured")
      continue
    rel = r["wer"] / full_wer - 1.0
    parts.append(f"−{100 * target:.0f}% FLOPs {100 * rel:+.1f}% relative WER (goal ≤ "
                 f"+{100 * goal:.0f}%: {'met' if rel <= goal else 'not met'})")
  return "Dense decay against the goals: " + "; ".join(parts) + "."


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


def render_padding(path, data, plots_dir, root) -> Section:
  """bench/data_padding.py: random vs 1-D vs 2-D bucketing."""
  label = measured_on(data, path)
  body = [_caption(data, path, "python bench/data_padding.py")]
  datasets = data.get("datasets") or {}
  for name, d in datasets.items():
    table = [[fmt(r.get("batching")), fmt(r.get("num_buckets")), fmt(r.get("num_shapes")),
              fmt(r.get("audio_padding"), "pct"), fmt(r.get("token_padding"), "pct"),
              fmt(r.get("batches_per_epoch")), fmt(r.get("audio_seconds_per_s"))]
             for r in d.get("rows") or []]
    hours = d.get("hours")
    body += ["", f"**{name}** ({fmt(d.get('utterances'))} utterances"
             + (f", {hours:.2f} h" if isinstance(hours, (int, float)) else "") + ")", "",
             md_table(["batching", "buckets", "shapes", "audio padding", "token padding",
                       "batches/epoch", "audio s/s (pipeline)"], table)]
  plots = []
  if datasets:
    plt = _plt()
    fig, axes = plt.subplots(len(datasets), 1, figsize=(9, 3.6 * len(datasets)), squeeze=False)
    for ax, (name, d) in zip(axes[:, 0], datasets.items()):
      rows = d.get("rows") or []
      xs = range(len(rows))
      ax.bar([x - 0.2 for x in xs], [100 * (r.get("audio_padding") or 0) for r in rows],
             0.4, label="audio padding")
      ax.bar([x + 0.2 for x in xs], [100 * (r.get("token_padding") or 0) for r in rows],
             0.4, label="token padding")
      ax.set_xticks(list(xs))
      ax.set_xticklabels([str(r.get("batching", "?")).replace(" (dynamic shapes)", "\n(dynamic)")
                          .replace(" min_padding", "\nmin_pad") for r in rows],
                         rotation=45, ha="right", fontsize=7)
      ax.set_ylabel("padding (%)")
      ax.set_title(f"Padding by batching strategy: {name}", fontsize=10)
      ax.grid(axis="y", alpha=0.3)
      ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    plots.append(_save(fig, plots_dir, "data_padding.png", label))
    body += ["", _img(plots[-1], root, "padding: random vs 1-D vs 2-D")]
  return Section("Batching and padding", "\n".join(body), plots)


def render_train_throughput(path, data, plots_dir, root) -> Section:
  """bench/train_throughput.py: 2-D bucketing vs random batching in one run."""
  del plots_dir, root
  table = [[fmt(a.get("batching")), fmt(a.get("num_shapes")), fmt(a.get("compile_s"), "s"),
            fmt(a.get("steps_per_s")), fmt(a.get("audio_s_per_s")),
            fmt(a.get("padded_audio_fraction"), "pct"), fmt(a.get("tokens_per_s")),
            fmt(a.get("mean_batch_size")), fmt(a.get("model_tflops_per_s")),
            fmt(a.get("mfu"), "pct") if "mfu" in a else "–"] for a in data.get("arms") or []]
  cfg = data.get("config")
  default = "python bench/train_throughput.py" + (
      f" --config {_rel(cfg, ROOT)}" if cfg else "")
  if data.get("manifest"):
    default += f" --manifest {data['manifest']}"
  for key in ("num_utts", "steps"):
    if data.get(key):
      default += f" --{key} {data[key]}"
  body = [_caption(data, path, default), "",
          md_table(["batching", "shapes", "compile", "steps/s", "audio s/s", "padded audio",
                    "tokens/s", "mean batch", "model TFLOP/s", "MFU"], table)]
  ratio = data.get("audio_s_per_s_ratio_2d_over_random")
  if ratio is not None:
    body += ["", f"2-D bucketing / random batching, real audio seconds per second: "
             f"**{fmt(ratio, 'x')}** (side by side, same model and utterances)."]
  return Section(f"Training throughput ({pathlib.Path(path).name})", "\n".join(body))


def render_capacity(path, data, plots_dir, root) -> Section:
  """bench/capacity.py: searched per-bucket batch sizes vs one fixed batch size."""
  del plots_dir, root
  table = [[fmt(a.get("arm")), fmt(a.get("num_shapes")), fmt(a.get("compile_s"), "s"),
            fmt(a.get("steps")), fmt(a.get("mean_batch_size")),
            fmt(a.get("audio_padding"), "pct"), fmt(a.get("steps_per_s")),
            fmt(a.get("audio_s_per_s"))] for a in data.get("arms") or []]
  default = "python bench/capacity.py" + "".join(
      f" --{k} {_rel(data[k], ROOT) if k == 'config' else data[k]}"
      for k in ("config", "manifest", "num_utts", "memory_budget_gb") if data.get(k)) + "".join(
      f" --{k} {v}" for k, v in (data.get("bucketing") or {}).items())
  sizes = data.get("searched_batch_sizes") or {}
  body = [_caption(data, path, default), "",
          f"Per-device memory budget {fmt(data.get('memory_budget_gb'))} GiB "
          f"({data.get('memory_measure', 'compiled-step memory')}). Fixed batch size "
          f"{fmt(data.get('fixed_batch_size'))} (the largest that fits the envelope shape "
          f"{data.get('envelope_shape')}); searched per bucket (samples x tokens: batch): "
          + ", ".join(f"{k}: {v}" for k, v in sizes.items()) + ".", "",
          md_table(["arm", "shapes", "compile", "steps", "mean batch", "audio padding",
                    "steps/s", "audio s/s"], table)]
  ratios = data.get("audio_s_per_s_ratios") or {}
  if ratios:
    body += ["", "Real audio seconds per second, side by side in one run: " + "; ".join(
        f"{k.replace('searched_over_', 'searched / ').replace('_', '/', 1)} "
        f"**{fmt(v, 'x')}**" for k, v in ratios.items()) + "."]
  return Section(f"Capacity: per-bucket batch sizes ({pathlib.Path(path).name})",
                 "\n".join(body))


def render_step_cost(path, data, plots_dir, root) -> Section:
  """bench/step_cost.py: one loop iteration of each strategy against greedy's."""
  del plots_dir, root
  rows = data.get("rows") or []
  strategies = data.get("strategies") or ["greedy", "verify"]
  table = [[fmt(r.get("config")), fmt(r.get("batch")), fmt(r.get("decoder_params")),
            fmt(r.get("prefill_ms"))]
           + [fmt(r.get(f"{s}_step_ms")) for s in strategies]
           + [fmt(r.get(f"{s}_ratio", r.get("break_even_reduction") if s == "verify" else None),
                  "x") for s in strategies[1:]]
           + [fmt(r.get("compile_s"), "s")] for r in rows]
  body = [_caption(data, path, "python bench/step_cost.py"), "",
          md_table(["config", "batch", "decoder params", "prefill ms"]
                   + [f"{s} iteration ms" for s in strategies]
                   + [f"{s} / greedy" for s in strategies[1:]] + ["compile"], table), "",
          "*strategy / greedy* = the cost of one loop iteration (decoder call, acceptance, "
          "emission, bookkeeping) relative to greedy's: the decoder-call reduction the "
          "strategy needs before it is faster than greedy on this machine."]
  widths = [r for r in rows if r.get("call_ms_by_width")]
  if widths:
    ts = sorted({t for r in widths for t in r["call_ms_by_width"]}, key=int)
    body += ["", "Bare decoder call (head 1 at every position) by tokens fed per row, ms "
             "(× the 1-token call):", "",
             md_table(["config", "batch"] + [f"T={t}" for t in ts],
                      [[fmt(r.get("config")), fmt(r.get("batch"))]
                       + [f"{r['call_ms_by_width'][t]:.3f} ({r['call_ms_by_width'][t] / r['call_ms_by_width'][ts[0]]:.2f}×)"
                          if t in r["call_ms_by_width"] else "–" for t in ts] for r in widths])]
  return Section(f"Decoder-call cost ({pathlib.Path(path).name})", "\n".join(body))


def render_unembed_layout(path, data, plots_dir, root) -> Section:
  """bench/unembed_layout.py: the vocabulary projection alone, by layout and argmax."""
  del plots_dir, root
  rows = data.get("rows") or []
  table = [[fmt(r.get("rows")), fmt(r.get("xEt_ms")), fmt(r.get("xW_ms")),
            fmt(r.get("layout_speedup"), "x"), fmt(r.get("xW_argmax_ms")),
            fmt(r.get("xW_two_reductions_argmax_ms"))] for r in rows]
  body = [_caption(data, path, "python bench/unembed_layout.py"), "",
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
  return Section(f"Vocabulary projection ({pathlib.Path(path).name})", "\n".join(body))


def render_kernels(path, data, plots_dir, root) -> Section:
  """bench/kernels.py: Pallas kernels vs their XLA references."""
  del plots_dir, root
  table = []
  for r in data.get("rows") or []:
    shape = ", ".join(f"{k}={v}" for k, v in r.items()
                      if k in ("v", "b", "n_tok", "n") and v is not None)
    if r.get("skipped"):
      table.append([fmt(r.get("op")), shape, "–", "–", "–", "–", f"skipped: {fmt(r['skipped'])}"])
      continue
    check = r.get("argmax_match", r.get("group_index_match"))
    table.append([fmt(r.get("op")), shape, fmt(_get(r, "reference", "median_ms"), "ms"),
                  fmt(_get(r, "kernel", "median_ms"), "ms"), fmt(r.get("speedup"), "x"),
                  fmt(_get(r, "kernel", "compile_s"), "s"),
                  f"match {fmt(check)}" if check is not None else ""])
  mode = data.get("kernel_mode")
  body = [_caption(data, path, "python bench/kernels.py"),
          "" if not mode else f"\nKernel mode: {mode}"
          + (" (interpret mode on CPU: timings check plumbing, not kernel speed)"
             if mode == "interpret" else "") + f", dtype {data.get('dtype', '?')}.", "",
          md_table(["op", "shape", "reference (median)", "kernel (median)", "speedup",
                    "kernel compile", "check vs reference"], table)]
  return Section(f"Pallas kernels ({pathlib.Path(path).name})", "\n".join(body))


def render_peer(path, data, plots_dir, root) -> Section:
  """bench/peer_decode.py: mtp_jax vs Hugging Face generate on the same decoder."""
  del plots_dir, root
  table = []
  for r in data.get("results") or []:
    for m, v in (r.get("methods") or {}).items():
      table.append([fmt(r.get("scenario")), fmt(r.get("batch")), m, fmt(v.get("tokens_per_s")),
                    fmt(v.get("calls_per_token")), fmt(v.get("compile_s"), "s"),
                    fmt(v.get("match_hf_greedy"), "pct")])
  ratios = [f"{r.get('scenario')} batch {r.get('batch')}: mtp greedy / HF greedy "
            f"{fmt(r.get('mtp_greedy_vs_hf_greedy'), 'x')}, mtp verify / best HF "
            f"{fmt(r.get('mtp_verify_vs_best_hf'), 'x')}" for r in data.get("results") or []]
  cfg = _get(data, "machine", "config")
  default = "python bench/peer_decode.py" + (f" --config {cfg}" if cfg else "") + (
      f" --new_tokens {_get(data, 'machine', 'new_tokens')}"
      if _get(data, "machine", "new_tokens") else "")
  body = [_caption(data, path, default), "",
          md_table(["scenario", "batch", "method", "tokens/s", "calls/token", "compile",
                    "same tokens as HF greedy"], table)]
  if ratios:
    body += ["", "Side-by-side ratios: " + "; ".join(ratios) + "."]
  return Section("mtp_jax vs Hugging Face generate", "\n".join(body))


def render_demo(path, data, plots_dir, root) -> Section:
  """runs/demo/demo_results.json from `python -m mtp_jax.demo`."""
  del plots_dir, root
  table = [[fmt(r.get("strategy")), fmt(r.get("utterances")), fmt(r.get("wer"), "pct"),
            fmt(r.get("calls_per_utt")), fmt(r.get("tokens_per_call")),
            fmt(r.get("calls_reduction"), "x"), fmt(r.get("speedup"), "x"), fmt(r.get("rtfx"))]
           for r in data.get("rows") or []]
  args = data.get("args") or {}
  default = "python -m mtp_jax.demo" + "".join(
      f" --{k} {v}" for k, v in args.items() if v is not None)
  if not args:
    default += " --out runs/demo"
  body = [_caption(data, path, default)]
  if data.get("total_minutes") is not None:
    body.append(f"\nTotal wall time: {data['total_minutes']:.1f} min (synthesis, training, decoding).")
  body += ["", md_table(["strategy", "utterances", "WER", "calls/utt", "tokens/call",
                         "calls reduction", "speedup vs greedy", "RTFx"], table)]
  return Section("Demo (synthetic speech, held-out test)", "\n".join(body))


def render_recipe(path, data, plots_dir, root) -> Section:
  """bench/recipe_eval.py: real-speech test sets x strategies."""
  del plots_dir, root
  rnd = is_random(data)
  table = []
  for r in data.get("rows") or []:
    table.append([fmt(r.get("test_set")), fmt(r.get("strategy")), fmt(r.get("utterances")),
                  "–" if rnd else fmt(r.get("wer"), "pct"), fmt(r.get("calls_per_utt")),
                  fmt(r.get("tokens_per_call")), fmt(r.get("calls_reduction"), "x"),
                  fmt(r.get("speedup"), "x"), fmt(r.get("rtfx"))])
  body = [_caption(data, path, "python bench/recipe_eval.py --workdir runs/realmix_cpu")]
  if data.get("workdir"):
    body.append(f"\nModel: `{data['workdir']}`" + (f" (step {data['step']})"
                                                  if data.get("step") is not None else "") + ".")
  body += ["", md_table(["test set", "strategy", "utterances",
                         f"WER: {RANDOM_LABEL}" if rnd else "WER", "calls/utt", "tokens/call",
                         "calls reduction", "speedup vs greedy", "RTFx"], table)]
  return Section("Real-speech recipe (synthetic + Kathleen training)", "\n".join(body))


def render_peer_whisper(path, data, plots_dir, root) -> Section:
  """bench/peer_whisper.py: faster-whisper tiny.en vs our Whisper-encoder model."""
  del plots_dir, root
  table = [[fmt(r.get("test_set")), fmt(r.get("system")), fmt(r.get("utterances")),
            fmt(r.get("skipped")), fmt(r.get("wer"), "pct"), fmt(r.get("calls_per_utt")),
            fmt(r.get("rtfx")), fmt(r.get("latency_p50_s")), fmt(r.get("latency_p90_s")),
            fmt(r.get("rtfx_vs_peer_fastest_greedy"), "x")] for r in data.get("rows") or []]
  body = [_caption(data, path, "python bench/peer_whisper.py --workdirs runs/wt/k4"), "",
          md_table(["test set", "system", "utterances", "skipped", "WER", "calls/utt", "RTFx",
                    "p50 s", "p90 s", "RTFx vs peer's fastest greedy"], table)]
  return Section(f"Race against faster-whisper ({pathlib.Path(path).name})", "\n".join(body))


HXS_RE = re.compile(r"^(?P<family>w?hxs)_(?P<label>.+?)_(?P<kind>b16|speed_b1|speed_b16)$")
# File prefix -> the trunk its heads × strategies table is about.
HXS_FAMILIES = {
    "hxs": "the Whisper-encoder recipe (from-scratch LLaMA decoder)",
    "whxs": "Whisper's own decoder (configs/recipes/whisper_tiny_decoder_cpu.py)",
}
DEPTH_STRATEGIES = ("greedy", "verify", "tree")


def _hxs_label_key(label: str):
  """Order: head type (HEAD_TYPES order), then K; decoder-depth labels last."""
  m = re.match(r"^(?:dec(?P<layers>\d+)_)?(?P<type>[a-z]+)_k(?P<k>\d+)$", label)
  if not m:
    return (9, 0, 0, label)
  t = HEAD_TYPES.index(m["type"]) if m["type"] in HEAD_TYPES else len(HEAD_TYPES)
  return (int(m["layers"] or 4), t, int(m["k"]), label)


def render_heads_x_strategies(items: dict, plots_dir, root, family: str = "hxs") -> Section:
  """bench/recipe_eval.py runs named <family>_<label>_{b16,speed_b1,speed_b16}.json (family
  `hxs` or `whxs`, see HXS_FAMILIES): one table of head type x strategy (the MTP paper's),
  one of decoder depth (labels dec<L>_<type>_k<K>; the recipe's 4-layer decoder is the
  label without a prefix)."""
  labels = sorted(items, key=_hxs_label_key)

  def rows_of(label, kind, test_set):
    data = items[label].get(kind, (None, {}))[1]
    return {r["strategy"]: r for r in data.get("rows") or [] if r.get("test_set") == test_set}

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
        out.append([label, strat, fmt(r.get("wer"), "pct"),
                    fmt((fsdd.get(strat) or {}).get("wer"), "pct"),
                    fmt((an4.get(strat) or {}).get("wer"), "pct"),
                    fmt(r.get("calls_per_utt")), fmt(r.get("calls_reduction"), "x"),
                    fmt(r.get("calls_reduction_ceiling"), "x"),
                    fmt(r.get("tokens_per_call")),
                    "/".join(f"{a:.2f}" for a in r.get("acceptance_per_head") or []) or "–",
                    fmt((b1.get(strat) or {}).get("rtfx")),
                    fmt((b1.get(strat) or {}).get("speedup"), "x"),
                    fmt((b16.get(strat) or {}).get("speedup"), "x")])
    return out, best

  headers = ["heads", "strategy", "Kathleen WER", "FSDD WER", "AN4 WER", "calls/utt",
             "calls reduction", "ceiling", "tokens/call", "acceptance per head", "RTFx B=1",
             "speedup B=1", "speedup B=16"]
  first = items[labels[0]].get("b16") or next(iter(items[labels[0]].values()))
  timed = any(k != "b16" for kinds in items.values() for k in kinds)
  body = [f"*Measured on {measured_on(first[1], first[0])}. WER, calls, tokens/call and "
          "acceptance: every utterance of each test set at batch 16 (calls and acceptance "
          "on Kathleen)"
          + ("; speed: Kathleen test's first 150 (batch 1) / 300 (batch 16) utterances, "
             "every other process paused, compile time apart" if timed else "")
          + ". Reproduce:*", ""]
  for label in labels:
    for kind in ("b16", "speed_b1", "speed_b16"):
      if kind in items[label]:
        body.append(f"* `{command_of(items[label][kind][1], 'python bench/recipe_eval.py')}`")
  heads = [l for l in labels if not l.startswith("dec")]
  depth = [l for l in labels if l.startswith("dec")]
  plots = []
  if heads:
    t, best = table(heads)
    body += ["", "**Head type × strategy** (K heads trained alone on the frozen K=1 trunk, "
             "unless the label says `joint`; greedy is that trunk's output)", "", md_table(headers, t)]
    plot = _plot_calls_vs_wer({l: rows_of(l, "b16", "kathleen_test") for l in heads},
                              plots_dir, f"{family}_calls_vs_wer.png",
                              measured_on(first[1], first[0]))
    if plot is not None:
      plots.append(plot)
      body += ["", _img(plot, root, "Kathleen-test WER against decoder calls saved")]
    if best:
      r, label, strat, ceiling = max(best, key=lambda b: b[:3])
      body.append(f"\nMost decoder calls saved at a Kathleen WER ≤ greedy's: **{r:.2f}×** "
                  f"({label}, {strat}); the goal is ≥ 3.5×"
                  + (f", and with every draft accepted this model's K and these "
                     f"transcripts' lengths allow at most {ceiling:.2f}×" if ceiling else "")
                  + ".")
    if any(row[7] != "–" for row in t):  # some exact multi-token row has a ceiling
      body.append("\n*ceiling*: the calls reduction of an exact strategy (verify, tree) if "
                  "every draft were accepted: the prefill emits one token and each later "
                  "call at most K, so an utterance greedy decodes in c calls needs at least "
                  "1 + ⌈(c − 1)/K⌉ (`mtp_jax.decode.summary.calls_ceiling`; files written "
                  "before it existed get it from their greedy hypotheses with "
                  "`python bench/recipe_eval.py --add_ceiling FILE`).")
  if depth:
    base = [l for l in heads if _hxs_label_key(l)[1:3] == _hxs_label_key(depth[0])[1:3]]
    t, _ = table(sorted(depth + base[:1], key=_hxs_label_key), DEPTH_STRATEGIES)
    body += ["", "**MTP vs a thinner decoder** (the same encoder and training with decoders of "
             "other depths; greedy = K=1, verify/tree = K=4 heads on that trunk; "
             "a label without `dec` is the recipe's 4-layer decoder)", "",
             md_table(headers, t)]
  return Section(f"Heads × strategies and decoder depth on {HXS_FAMILIES[family]}",
                 "\n".join(body), plots)


def _plot_calls_vs_wer(rows: dict, plots_dir, name: str, label: str) -> pathlib.Path | None:
  """One point per (heads label, strategy): decoder calls saved vs greedy (x) against
  Kathleen-test WER (y); a dashed line at each greedy WER. None when nothing to plot."""
  points = [(lab, strat, r["calls_reduction"], r["wer"]) for lab, by in rows.items()
            for strat, r in by.items()
            if r.get("calls_reduction") is not None and r.get("wer") is not None]
  if not points:
    return None
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  strategies = sorted({p[1].split(":")[0] for p in points})
  markers = dict(zip(strategies, "osD^v<>ph*"))
  for i, lab in enumerate(rows):
    color = f"C{i % 10}"
    mine = [p for p in points if p[0] == lab]
    for _, strat, x, y in mine:
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
  return _save(fig, pathlib.Path(plots_dir), name, label)


def _scalar(v) -> bool:
  return v is None or isinstance(v, (str, int, float, bool))


def render_generic(path, data, plots_dir, root) -> Section:
  """Any other JSON (e.g. bench/mwer.py, bench/capacity.py): its lists of flat records."""
  del plots_dir, root
  stem = pathlib.Path(path).stem
  body = [_caption(data, path, f"python bench/{re.sub(r'_[0-9-]+$', '', stem)}.py")]
  if is_random(data):
    body.append(f"\nModel: {RANDOM_LABEL}.")
  found = False
  for key, val in data.items():
    if isinstance(val, list) and val and all(isinstance(r, dict) for r in val):
      cols = [c for c in dict.fromkeys(k for r in val for k in r) if all(
          _scalar(r.get(c)) or (isinstance(r.get(c), list) and all(map(_scalar, r[c])))
          for r in val)][:10]
      body += ["", f"**{key}**", "", md_table(cols, [[fmt(r.get(c)) for c in cols] for r in val])]
      found = True
    elif isinstance(val, dict) and key != "machine" and any(_scalar(v) for v in val.values()):
      # A flat record such as bench/mwer.py's "finetune" (WER before/after).
      body += ["", f"**{key}**", "", md_table(["field", "value"], [
          [k, fmt(v)] for k, v in val.items() if _scalar(v)])]
      found = True
  if not found:
    flat = {k: v for k, v in data.items() if _scalar(v) and k not in ("command", "date")}
    body += ["", md_table(["field", "value"], [[k, fmt(v)] for k, v in flat.items()])]
  return Section(f"{stem} ({pathlib.Path(path).name})", "\n".join(body))


# ----------------------------------------------------------------------------
# Assembly.

# (title, glob patterns relative to results dir, renderer); order = README order.
KNOWN: list[tuple[str, tuple[str, ...], Callable]] = [
    ("Demo", (), render_demo),
    ("Decoding strategies", ("decode*.json",), render_decode),
    ("Real-speech recipe", ("recipe_eval*.json",), render_recipe),
    ("FastAdaSP", ("fastadasp*.json",), render_fastadasp),
    ("Batching and padding", ("data_padding*.json",), render_padding),
    ("Training throughput", ("train_throughput*.json",), render_train_throughput),
    ("Capacity", ("capacity*.json",), render_capacity),
    ("Decoder-call cost", ("step_cost*.json",), render_step_cost),
    ("Vocabulary projection", ("unembed_layout*.json",), render_unembed_layout),
    ("Pallas kernels", ("kernels*.json",), render_kernels),
    ("Peer decode", ("peer_decode*.json",), render_peer),
    ("Race against faster-whisper", ("peer_whisper*.json",), render_peer_whisper),
]


def build_sections(results_dir: str | os.PathLike, demo_json: str | os.PathLike | None,
                   plots_dir: str | os.PathLike, root: str | os.PathLike = ROOT
                   ) -> tuple[list[Section], list[str]]:
  """Renders every benchmark found; returns (sections, notes about skipped files)."""
  results_dir, plots_dir, root = (pathlib.Path(results_dir), pathlib.Path(plots_dir),
                                  pathlib.Path(root))
  sections, notes, used = [], [], set()
  for title, patterns, render in KNOWN:
    paths = ([pathlib.Path(demo_json)] if render is render_demo and demo_json else
             sorted(p for pat in patterns for p in results_dir.glob(pat)))
    paths = [p for p in paths if not p.name.endswith(".tmp")]
    if render is render_demo and demo_json and not paths[0].exists():
      paths = []
    if not paths:
      notes.append(f"{title}: no results ({_missing_hint(render, results_dir, demo_json, root)})")
      continue
    for p in paths:
      used.add(p.resolve())
      data = load_json(p)
      if data is None:
        notes.append(f"{title}: `{_rel(p, root)}` is not valid JSON, skipped")
        continue
      sections.append(render(p, data, plots_dir, root))
  for family in HXS_FAMILIES:
    groups: dict = {}
    for p in sorted(results_dir.glob(f"{family}_*.json")):
      m, data = HXS_RE.match(p.stem), load_json(p)
      if m and data is not None:
        groups.setdefault(m["label"], {})[m["kind"]] = (p, data)
        used.add(p.resolve())
    if groups:
      sections.append(render_heads_x_strategies(groups, plots_dir, root, family))
  for p in sorted(results_dir.glob("*.json")):
    if p.resolve() in used:
      continue
    data = load_json(p)
    if data is None:
      notes.append(f"`{_rel(p, root)}` is not valid JSON, skipped")
      continue
    sections.append(render_generic(p, data, plots_dir, root))
  return sections, notes


def _missing_hint(render, results_dir, demo_json, root) -> str:
  if render is render_demo:
    return f"`{_rel(demo_json, root) if demo_json else 'runs/demo/demo_results.json'}` missing"
  name = {render_decode: "decode_<date>.json", render_recipe: "recipe_eval.json",
          render_fastadasp: "fastadasp.json", render_padding: "data_padding.json",
          render_train_throughput: "train_throughput_<platform>.json",
          render_capacity: "capacity.json", render_step_cost: "step_cost_<backend>.json",
          render_unembed_layout: "unembed_layout_<backend>.json",
          render_kernels: "kernels.json",
          render_peer: "peer_decode.json",
          render_peer_whisper: "peer_whisper.json"}[render]
  return f"`{_rel(pathlib.Path(results_dir) / name, root)}` missing"


def render_markdown(sections: Sequence[Section], notes: Sequence[str]) -> str:
  """The full results section (without the markers)."""
  out = ["## Results", "",
         "Generated by `python bench/report.py --write_readme` from the JSON under "
         "`bench/results/`; each table names the machine and date it was measured on "
         "and the command that reproduces it.", ""]
  for s in sections:
    out.append(s.markdown())
  if notes:
    out += ["Not measured yet (skipped):", ""] + [f"* {n}" for n in notes] + [""]
  return "\n".join(out).rstrip() + "\n"


# The README's headline: the first pattern that matches a file (the best model's race
# first, then any race).
HEADLINE = (render_peer_whisper, ("peer_whisper_wdec.json", "peer_whisper*.json"))


def render_headline(results_dir: str | os.PathLike, root: str | os.PathLike,
                    docs_link: str) -> str:
  """README's results block: the headline table and a link to the full results."""
  render, patterns = HEADLINE
  results_dir = pathlib.Path(results_dir)
  paths = next((sorted(results_dir.glob(pat)) for pat in patterns
                if any(results_dir.glob(pat))), [])
  out = ["## Results", ""]
  data = load_json(paths[0]) if paths else None
  if data is not None:
    sec = render(paths[0], data, None, pathlib.Path(root))
    out += [f"Headline: {sec.title}.", "", sec.body.rstrip(), ""]
  else:
    out += ["No headline yet (`bench/results/peer_whisper.json` missing: run "
            "`python bench/peer_whisper.py`).", ""]
  out += [f"Every benchmark's tables and plots (decoding strategies, the real-speech recipe, "
          f"FastAdaSP, batching, throughput, decoder-call cost, kernels, MWER), each with its "
          f"machine, date and reproducing command: [{docs_link}]({docs_link}), generated by "
          "`python bench/report.py --write_readme` from the JSON under `bench/results/`.", ""]
  return "\n".join(out)


def replace_between_markers(text: str, section: str) -> str:
  """Puts `section` between the results markers of `text` (markers appended if absent).

  Everything outside the markers is returned unchanged.
  """
  block = f"{START}\n{section.rstrip()}\n{END}"
  i, j = text.find(START), text.find(END)
  if i >= 0 and j > i:
    return text[:i] + block + text[j + len(END):]
  if (i >= 0) != (j >= 0) or (i >= 0 and j < i):
    raise ValueError(f"README: found only one of {START!r} / {END!r} (or in the wrong order)")
  sep = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
  return text + sep + block + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--results_dir", default=str(ROOT / "bench" / "results"))
  p.add_argument("--demo_json", default=str(ROOT / "runs" / "demo" / "demo_results.json"))
  p.add_argument("--plots_dir", default=None, help="default: <results_dir>/plots")
  p.add_argument("--readme", default=str(ROOT / "README.md"))
  p.add_argument("--root", default=None, help="paths in the README are relative to this "
                 "(default: the README's folder)")
  p.add_argument("--docs", default=None, help="full results file (default: "
                 "<root>/docs/results.md)")
  p.add_argument("--write_readme", action="store_true",
                 help="write the full results to --docs and the headline between the "
                 "README's results markers, instead of printing")
  args = p.parse_args(argv)
  root = pathlib.Path(args.root or pathlib.Path(args.readme).resolve().parent)
  plots_dir = args.plots_dir or os.path.join(args.results_dir, "plots")
  sections, notes = build_sections(args.results_dir, args.demo_json, plots_dir, root)
  md = render_markdown(sections, notes)
  if not args.write_readme:
    print(md)
    return 0
  docs = pathlib.Path(args.docs or root / "docs" / "results.md")
  docs.parent.mkdir(parents=True, exist_ok=True)
  # Links in the docs file are relative to its folder; the text (commands, JSON names)
  # stays relative to the repository root, where commands are run.
  up = os.path.relpath(root, docs.parent.resolve())
  full = ("# Results\n\n" + md.split("\n", 1)[1].lstrip()).replace(
      "](bench/", f"]({up}/bench/" if up != "." else "](bench/")
  _write_if_changed(docs, full)
  with open(args.readme) as f:
    old = f.read()
  new = replace_between_markers(old, render_headline(args.results_dir, root,
                                                     _rel(docs, root)))
  _write_if_changed(pathlib.Path(args.readme), new, old)
  print(f"{docs} and {args.readme} written ({len(sections)} tables, "
        f"{sum(len(s.plots) for s in sections)} plots, {len(notes)} skipped)", file=sys.stderr)
  return 0


def _write_if_changed(path: pathlib.Path, text: str, old: str | None = None) -> None:
  if old is None:
    old = path.read_text() if path.exists() else None
  if text != old:
    path.write_text(text)


if __name__ == "__main__":
  sys.exit(main())
