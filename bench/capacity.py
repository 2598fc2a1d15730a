"""Capacity: searched per-bucket batch sizes vs one fixed batch size, same memory budget.

  python bench/capacity.py --config configs/tiny.py --num_utts 96 --memory_budget_gb 0.04
  python bench/capacity.py --config configs/demo_conformer.py --memory_budget_gb 0.5 --num_utts 192 \
      --manifest ../shared/data/fsdd/train.jsonl,../shared/data/kathleen/train.jsonl,<ljsynth>/train.jsonl

Both arms train the same model from the same init on the same utterances under the
same per-device memory budget (compiled-step memory, `mtp_jax.tools.batch_search`):

  * searched: 2-D buckets, each with the largest batch that fits the budget at its
    shape (`batch_search.search_buckets`, compile-only memory on CPU);
  * fixed / 2-D: the same buckets, all with ONE batch size: the largest that fits
    the budget at the envelope of every bucket shape (max S, max L), i.e. the
    largest fixed size that is safe for every batch (the honest baseline);
  * fixed / random: that batch size with random batching (every batch padded to
    the envelope shape), the usual fixed-batch setup.

Per arm: mean batch size, audio padding, steps and audio-seconds/s (real audio)
over one epoch, steady state after one untimed step per executable; compile time
is reported apart. Batches are read up front (real Kathleen audio, never zeros).
The parameter-shift pair is measured on trained models by bench/decode.py (see
configs/shift/deep_decoder.py).
Writes bench/results/capacity.json.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from mtp_jax.config import load_config_file  # noqa: E402
from mtp_jax.data import bucketing  # noqa: E402
from mtp_jax.data import pipeline  # noqa: E402
from mtp_jax.data import tokenizer as tok_lib  # noqa: E402
from mtp_jax.tools import batch_search as bs  # noqa: E402
from mtp_jax.train import step as step_lib  # noqa: E402
from mtp_jax.data.manifest import write_subset  # noqa: E402

flags.DEFINE_string("config", str(ROOT / "configs" / "tiny.py"), "Config file[:arg].")
flags.DEFINE_string("manifest", str(ROOT.parent / "shared" / "data" / "kathleen" / "train.jsonl"),
                    "Training manifest(s), comma-separated; --num_utts is split evenly "
                    "across them (a mix of short and long speech is where per-bucket "
                    "batch sizes matter).")
flags.DEFINE_integer("num_utts", 96, "Utterances taken from the manifest (first N).")
flags.DEFINE_float("memory_budget_gb", 0.04, "Per-device budget (GiB) for BOTH arms.")
flags.DEFINE_integer("num_duration_bins", 2, "2-D bucketing duration bins.")
flags.DEFINE_integer("num_token_bins", 2, "2-D bucketing token bins per duration bin.")
flags.DEFINE_integer("max_steps", 24, "Timed steps per arm at most (one epoch otherwise).")
flags.DEFINE_string("out", str(ROOT / "bench" / "results"), "Output directory.")
F = flags.FLAGS


def _key(b: dict) -> tuple[int, int, int]:
  return b["audio"].shape[0], b["audio"].shape[1], b["text"].shape[1]


def run_arm(name: str, data_cfg, config, tokenizer, prober: bs.StepProber) -> dict:
  """Trains one epoch (at most --max_steps) with a data config; returns timings."""
  data = pipeline.make_train_iterator(data_cfg, tokenizer, seed=0)
  t = time.perf_counter()
  exes = {shape: prober.compile(*shape) for shape in data.batch_shapes}
  compile_s = time.perf_counter() - t
  n = min(F.max_steps, data.batches_per_epoch)
  batches = [next(data) for _ in range(n)]
  data.close()
  sr = float(data_cfg.sample_rate)
  state = prober.setup.create_state(int(config.seed))
  dev = [step_lib.device_batch(b, prober.mesh, prober.rules) for b in batches]
  warm = {}
  for b, d in zip(batches, dev):
    warm.setdefault(_key(b), d)
  for k, d in warm.items():  # one untimed step per executable
    state, m = exes[k](state, d)
  jax.block_until_ready((state, dev))
  t = time.perf_counter()
  for b, d in zip(batches, dev):
    state, m = exes[_key(b)](state, d)
  jax.block_until_ready(state)
  dt = time.perf_counter() - t
  real = sum(float(np.sum(b["audio_len"])) for b in batches) / sr
  padded = sum(b["audio"].size for b in batches) / sr
  return {"arm": name, "num_shapes": len(exes), "compile_s": compile_s, "steps": n,
          "batches_per_epoch": data.batches_per_epoch, "steady_s": dt,
          "audio_s_per_s": real / dt, "steps_per_s": n / dt,
          "mean_batch_size": float(np.mean([_key(b)[0] for b in batches])),
          "audio_padding": 1 - real / padded, "real_audio_s": real,
          "batch_sizes": {bucketing.bucket_key(s, l): bb for bb, s, l in exes},
          "final_loss": float(m["loss"])}


def main(argv):
  del argv
  config = load_config_file(F.config)
  config.data.update(num_duration_bins=F.num_duration_bins, num_token_bins=F.num_token_bins)
  config.train.warmup_steps = 2
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_capacity_"))
  sources = [m for m in F.manifest.split(",") if m]
  per_source = -(-F.num_utts // len(sources))
  config.data.train_manifests = ",".join(
      write_subset(m, tmp / f"subset{i}.jsonl", per_source) for i, m in enumerate(sources))
  tokenizer = tok_lib.get_tokenizer(config.data, tmp)
  budget = int(F.memory_budget_gb * bs.GIB)
  prober = bs.StepProber(config, budget_bytes=budget, run_steps=0)
  multiple = bs.data_parallel_multiple(config)
  buckets = bs.build_buckets(config, tokenizer)
  s_max = max(b.max_samples for b in buckets)
  l_max = max(b.max_tokens for b in buckets)

  t0 = time.perf_counter()
  print(f"envelope shape S={s_max} L={l_max} (fixed batch size search)", flush=True)
  fixed_b, _, _ = bs.search_shape(prober, s_max, l_max, multiple=multiple,
                                  max_batch_size=F.num_utts)
  envelope = bs.BucketResult(bucketing.bucket_key(s_max, l_max), s_max, l_max, F.num_utts,
                             fixed_b, False, [])
  results = bs.search_buckets(prober, buckets, multiple=multiple, cap_to_bucket=True,
                              dominating=[envelope])
  search_s = time.perf_counter() - t0
  searched_file = tmp / "batch_sizes.json"
  bs.write_batch_sizes(searched_file, results, budget_bytes=budget)
  fixed_file = tmp / "fixed_batch_sizes.json"
  fixed_file.write_text(json.dumps({"batch_sizes": {r.key: fixed_b for r in results}}))

  arms = []
  for name, overrides, batching in (("searched/2d", searched_file, "2d"),
                                    ("fixed/2d", fixed_file, "2d"),
                                    ("fixed/random", "", "random")):
    d = config.data.copy_and_resolve_references()
    d.update(bucket_batch_sizes=str(overrides), batching=batching, batch_size=fixed_b)
    print(f"arm {name} ...", flush=True)
    arms.append(run_arm(name, d, config, tokenizer, prober))
  print(f"{'arm':<14}{'shapes':>7}{'compile s':>10}{'steps':>6}{'batch':>7}{'pad':>7}"
        f"{'steps/s':>9}{'audio-s/s':>10}")
  for a in arms:
    print(f"{a['arm']:<14}{a['num_shapes']:>7}{a['compile_s']:>10.1f}{a['steps']:>6}"
          f"{a['mean_batch_size']:>7.1f}{a['audio_padding']:>7.3f}{a['steps_per_s']:>9.3f}"
          f"{a['audio_s_per_s']:>10.1f}")
  ratios = {f"searched_over_{a['arm'].replace('/', '_')}":
            arms[0]["audio_s_per_s"] / a["audio_s_per_s"] for a in arms[1:]}
  for k, v in ratios.items():
    print(f"audio-seconds/s {k}: {v:.2f}x")
  result = {
      "benchmark": "capacity", "config": F.config, "manifest": F.manifest,
      "num_utts": F.num_utts, "memory_budget_gb": F.memory_budget_gb,
      "memory_measure": "compiled step args+outputs-aliases+temps per device (compile-only)",
      "bucketing": {"num_duration_bins": F.num_duration_bins,
                    "num_token_bins": F.num_token_bins},
      "fixed_batch_size": fixed_b, "envelope_shape": [s_max, l_max],
      "searched_batch_sizes": {r.key: r.batch_size for r in results},
      "search_s": search_s, "arms": arms, "audio_s_per_s_ratios": ratios,
      "machine": {"platform": jax.default_backend(),
                  "device_kind": jax.devices()[0].device_kind,
                  "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
                  "python": platform.python_version(), "jax": jax.__version__,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}}
  os.makedirs(F.out, exist_ok=True)
  path = os.path.join(F.out, "capacity.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
