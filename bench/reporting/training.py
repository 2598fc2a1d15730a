"""Training throughput and bucketing: bench/data_padding.py, bench/train_throughput.py,
bench/capacity.py."""
from __future__ import annotations

import pathlib

from reporting.common import ROOT, Context, Section, caption, fmt, md_table, measured_on, rel


def render_padding(path, data, ctx: Context) -> Section:
  """bench/data_padding.py: random vs 1-D vs 2-D bucketing."""
  body = [caption(data, path, "python bench/data_padding.py")]
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
    def draw(plt):
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
      return fig
    img, png = ctx.plot(pathlib.Path(path).stem + ".png", draw, measured_on(data, path),
                        "padding: random vs 1-D vs 2-D")
    plots.append(png)
    body += ["", img]
  return Section(f"Batching and padding ({ctx.name(path)})", "\n".join(body), plots)


def render_train_throughput(path, data, ctx: Context) -> Section:
  """bench/train_throughput.py: 2-D bucketing vs random batching, or the feature cache vs
  the frozen encoder in every step, side by side in one run."""
  table = [[fmt(a.get("batching")), fmt(a.get("num_shapes")), fmt(a.get("compile_s"), "s"),
            fmt(a.get("steps_per_s")), fmt(a.get("audio_s_per_s")),
            fmt(a.get("padded_audio_fraction"), "pct"), fmt(a.get("tokens_per_s")),
            fmt(a.get("mean_batch_size")), fmt(a.get("model_tflops_per_s")),
            fmt(a.get("mfu"), "pct") if "mfu" in a else "–"] for a in data.get("arms") or []]
  cfg = data.get("config")
  default = "python bench/train_throughput.py" + (f" --config {rel(cfg, ROOT)}" if cfg else "")
  if data.get("compare"):
    default += f" --compare {data['compare']}"
  if data.get("manifest"):
    default += f" --manifest {data['manifest']}"
  for key in ("num_utts", "steps"):
    if data.get(key):
      default += f" --{key} {data[key]}"
  body = [caption(data, path, default), "",
          md_table(["arm", "shapes", "compile", "steps/s", "audio s/s", "padded audio",
                    "tokens/s", "mean batch", "model TFLOP/s", "MFU"], table)]
  ratio = data.get("audio_s_per_s_ratio_2d_over_random")
  if ratio is not None:
    body += ["", f"2-D bucketing / random batching, real audio seconds per second: "
             f"**{fmt(ratio, 'x')}** (side by side, same model and utterances)."]
  arms = {a.get("batching"): a for a in data.get("arms") or []}
  cache, enc = arms.get("feature_cache"), arms.get("encoder_in_step")
  if cache and enc and enc.get("audio_s_per_s"):
    body += ["", f"Feature cache / encoder in every step, real audio seconds per second: "
             f"**{fmt(cache['audio_s_per_s'] / enc['audio_s_per_s'], 'x')}**"
             + (f"; building the cache took {fmt(data['cache_build_s'], 's')}"
                if data.get("cache_build_s") is not None else "") + "."]
  return Section(f"Training throughput ({ctx.name(path)})", "\n".join(body))


def render_capacity(path, data, ctx: Context) -> Section:
  """bench/capacity.py: searched per-bucket batch sizes vs one fixed batch size."""
  table = [[fmt(a.get("arm")), fmt(a.get("num_shapes")), fmt(a.get("compile_s"), "s"),
            fmt(a.get("steps")), fmt(a.get("mean_batch_size")),
            fmt(a.get("audio_padding"), "pct"), fmt(a.get("steps_per_s")),
            fmt(a.get("audio_s_per_s"))] for a in data.get("arms") or []]
  default = "python bench/capacity.py" + "".join(
      f" --{k} {rel(data[k], ROOT) if k == 'config' else data[k]}"
      for k in ("config", "manifest", "num_utts", "memory_budget_gb") if data.get(k)) + "".join(
      f" --{k} {v}" for k, v in (data.get("bucketing") or {}).items())
  sizes = data.get("searched_batch_sizes") or {}
  body = [caption(data, path, default), "",
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
  return Section(f"Capacity: per-bucket batch sizes ({ctx.name(path)})", "\n".join(body))
