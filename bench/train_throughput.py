"""Training throughput, side by side in one run: 2-D bucketing vs random batching
(`--compare bucketing`), or a frozen encoder run in every step vs read from the feature
cache (`--compare feature_cache`, the same 2-D batches, the cache build timed apart).

  python bench/train_throughput.py --config configs/small.py \
      --manifest ../shared/data/kathleen/train.jsonl --num_utts 96 --steps 12
  python bench/train_throughput.py --config configs/recipes/whisper_tiny_cpu.py \
      --compare feature_cache --num_utts 256 --steps 40 --audio_seconds_per_batch 120 \
      --num_duration_bins 3 --num_token_bins 1

Each executable runs once untimed before the timed steps. Both arms train the same model from the same init for the same number of steps on
the same utterances; compile time (one executable per batch shape) is reported
separately from the steady state. Audio-seconds/s counts real (unpadded) audio, so
the arms compare fairly although their batch sizes differ. On an accelerator the
script also reports MFU: model FLOPs from `mtp_jax.flops` (3x forward, padded
shapes) over the device's peak bf16 FLOP/s. Writes bench/results/train_throughput_<platform>.json.
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

from mtp_jax import flops as flops_lib  # noqa: E402
from mtp_jax import sharding as sharding_lib  # noqa: E402
from mtp_jax.config import ModelConfig, load_config_file  # noqa: E402
from mtp_jax.data import pipeline  # noqa: E402
from mtp_jax.data import tokenizer as tok_lib  # noqa: E402
from mtp_jax.model.speech_llama import audio_token_count  # noqa: E402
from mtp_jax.data import feature_cache as cache_lib  # noqa: E402
from mtp_jax.train import pretrained  # noqa: E402
from mtp_jax.train.setup import make_train_setup  # noqa: E402
from mtp_jax.train import step as step_lib  # noqa: E402
from mtp_jax.data.manifest import write_subset

flags.DEFINE_string("config", str(ROOT / "configs" / "small.py"), "Config file[:arg].")
flags.DEFINE_string("manifest", str(ROOT.parent / "shared" / "data" / "kathleen" / "train.jsonl"),
                    "Training manifest.")
flags.DEFINE_integer("num_utts", 96, "Utterances taken from the manifest (first N).")
flags.DEFINE_integer("steps", 16, "Timed steps per arm.")
flags.DEFINE_float("audio_seconds_per_batch", 40.0, "2-D bucketing padded-audio budget.")
flags.DEFINE_integer("num_duration_bins", 2, "2-D bucketing duration bins.")
flags.DEFINE_integer("num_token_bins", 2, "2-D bucketing token bins per duration bin.")
flags.DEFINE_string("out", str(ROOT / "bench" / "results"), "Output directory.")
flags.DEFINE_enum("compare", "bucketing", ["bucketing", "feature_cache"],
                  "bucketing: 2-D vs random; feature_cache: frozen encoder in the step vs "
                  "its cached frames (needs train.frozen covering the encoder).")
F = flags.FLAGS

# Peak dense bf16 FLOP/s per device, for MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
              "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12}


def peak_flops() -> float | None:
  kind = jax.devices()[0].device_kind
  for name, v in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return v
  return None


def train_flops(cfg: ModelConfig, b: int, s: int, l: int, encoder: bool = True) -> float:
  """~3x forward matmul FLOPs of one padded batch (encoder + decoder + K heads)."""
  p = int(audio_token_count(s, cfg))
  enc = flops_lib.encoder_flops_per_second(cfg) * s / cfg.frontend.sample_rate * encoder
  dec = sum(flops_lib.prefill_flops(cfg, p, l))
  ctx = p + l / 2
  heads = l * (flops_lib.decoder_token_flops(cfg, ctx) -
               cfg.decoder.num_layers * flops_lib.decoder_layer_flops(cfg, 1, ctx))
  return 3.0 * b * (enc + dec + heads)


def run_arm(config, tokenizer, mesh, rules, batching: str, batch_size: int,
            cache_dir: str = "", name: str = "") -> dict:
  c = config.copy_and_resolve_references()
  c.data.batching = batching
  c.data.batch_size = batch_size
  setup = make_train_setup(c, mesh, rules)
  mcfg = setup.model.cfg
  state = setup.create_state(seed=0)
  if c.train.get("encoder_init", ""):
    enc = pretrained.load_encoder_params(c.train.encoder_init, mcfg)
    state = state.replace(params=pretrained.with_encoder(state.params, enc, mcfg))
  cache, frames_for = (pretrained.open_cache(cache_dir, state.params, mcfg, c.train)
                       if cache_dir else (None, None))
  data = pipeline.make_train_iterator(c.data, tokenizer, seed=0, feature_cache=cache,
                                      frames_for=frames_for)
  shapes = [(b, s if frames_for is None else frames_for(s), l) for b, s, l in data.batch_shapes]
  t = time.perf_counter()
  compiled = setup.compile_step(shapes, log=lambda m: None,
                                frames_dim=cache.dim if cache is not None else 0)
  compile_s = time.perf_counter() - t
  key = step_lib.batch_shape
  warm = {}  # one untimed step per executable first (first runs allocate / warm caches)
  for _ in range(2 * data.batches_per_epoch):
    b = next(data)
    warm.setdefault(key(b), b)
    if len(warm) == len(compiled):
      break
  for k, b in warm.items():
    state, m = compiled[k](state, step_lib.device_batch(b, mesh, rules))
  jax.block_until_ready(state)
  batches = [next(data) for _ in range(F.steps)]  # read up front: time the steps only
  data.close()
  dev = [step_lib.device_batch(b, mesh, rules) for b in batches]
  jax.block_until_ready(dev)
  real = sum(float(np.sum(b["audio_len"])) for b in batches) / c.data.sample_rate
  padded = sum(b["frames"].shape[0] * b["frames"].shape[1] * c.data.sample_rate / frames_for(
      c.data.sample_rate) if cache is not None else b["audio"].size
               for b in batches) / c.data.sample_rate
  toks = sum(int(np.sum(b["text_len"])) for b in batches)
  fl = sum(train_flops(mcfg, b["text"].shape[0], key(b)[1] if cache is None else
                       int(key(b)[1] * c.data.sample_rate / frames_for(c.data.sample_rate)),
                       b["text"].shape[1], encoder=cache is None) for b in batches)
  t = time.perf_counter()
  for b, d in zip(batches, dev):
    state, m = compiled[key(b)](state, d)
  jax.block_until_ready(state)
  dt = time.perf_counter() - t
  peak = peak_flops()
  out = {"batching": name or batching, "num_shapes": len(compiled), "compile_s": compile_s,
         "steps": F.steps, "steady_s": dt, "steps_per_s": F.steps / dt,
         "audio_s_per_s": real / dt, "padded_audio_fraction": 1 - real / padded,
         "tokens_per_s": toks / dt, "mean_batch_size": float(np.mean(
             [b["text"].shape[0] for b in batches])),
         "final_loss": float(m["loss"]), "model_tflops_per_s": fl / dt / 1e12}
  if peak and jax.default_backend() != "cpu":
    out["mfu"] = fl / dt / (peak * jax.device_count())
  return out


def main(argv):
  del argv
  config = load_config_file(F.config)
  config.data.audio_seconds_per_batch = F.audio_seconds_per_batch
  config.data.num_duration_bins = F.num_duration_bins
  config.data.num_token_bins = F.num_token_bins
  config.train.warmup_steps = 2
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_train_"))
  manifest = write_subset(F.manifest, tmp / "subset.jsonl", F.num_utts)
  config.data.train_manifests = str(manifest)
  tokenizer = tok_lib.get_tokenizer(config.data, tmp)
  mesh = sharding_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.sharding_rules)

  extra = {}
  if F.compare == "feature_cache":
    t = time.perf_counter()
    built = pretrained.build_cache(config, str(tmp / "features"), log=lambda m: None)
    extra = {"cache_build_s": time.perf_counter() - t, "cache_utterances": built["utterances"]}
    two_d = run_arm(config, tokenizer, mesh, rules, "2d", 0, name="encoder_in_step")
    rand = run_arm(config, tokenizer, mesh, rules, "2d", 0, cache_dir=str(tmp / "features"),
                   name="feature_cache")
    arms = [rand, two_d]
  else:
    two_d = run_arm(config, tokenizer, mesh, rules, "2d", 0)
    bs = max(jax.device_count(), int(round(two_d["mean_batch_size"] / jax.device_count()))
             * jax.device_count())
    rand = run_arm(config, tokenizer, mesh, rules, "random", bs)
    arms = [two_d, rand]
  print(f"{'batching':<9}{'shapes':>7}{'compile s':>10}{'steps/s':>9}{'audio-s/s':>10}"
        f"{'pad frac':>9}{'batch':>7}{'TFLOP/s':>9}{'MFU':>7}")
  for a in arms:
    mfu = f"{a['mfu']:.3f}" if "mfu" in a else "-"
    print(f"{a['batching']:<9}{a['num_shapes']:>7}{a['compile_s']:>10.1f}{a['steps_per_s']:>9.3f}"
          f"{a['audio_s_per_s']:>10.1f}{a['padded_audio_fraction']:>9.3f}"
          f"{a['mean_batch_size']:>7.1f}{a['model_tflops_per_s']:>9.4f}{mfu:>7}")
  ratio = arms[0]["audio_s_per_s"] / arms[1]["audio_s_per_s"]
  print(f"{arms[0]['batching']} / {arms[1]['batching']}, audio-seconds/s: {ratio:.2f}x")
  if extra:
    print(f"cache build: {extra['cache_build_s']:.1f} s for {extra['cache_utterances']} "
          "utterances (once per encoder)")
  result = {
      "benchmark": "train_throughput", "compare": F.compare, **extra,
      "config": F.config, "manifest": F.manifest,
      "num_utts": F.num_utts, "steps": F.steps, "arms": arms,
      "bucketing": {"num_duration_bins": F.num_duration_bins,
                    "num_token_bins": F.num_token_bins,
                    "audio_seconds_per_batch": F.audio_seconds_per_batch},
      ("audio_s_per_s_ratio_2d_over_random" if F.compare == "bucketing"
       else "audio_s_per_s_ratio_cache_over_encoder"): ratio,
      "machine": {"platform": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
                  "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
                  "python": platform.python_version(), "jax": jax.__version__,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}}
  os.makedirs(F.out, exist_ok=True)
  suffix = "" if F.compare == "bucketing" else "_feature_cache"
  path = os.path.join(F.out, f"train_throughput{suffix}_{jax.default_backend()}.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
