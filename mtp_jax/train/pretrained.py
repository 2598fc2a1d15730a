"""Pretrained encoders in training: weight import (`train.encoder_init`) and the frozen
encoder's feature cache (`data.feature_cache`).

Build a cache for a config's train manifests (then train with
`--config.data.feature_cache=DIR`):

  python -m mtp_jax.train.pretrained --config configs/recipes/whisper_tiny_cpu.py \
      --out runs/whisper_tiny/features

On SIGTERM or SIGINT the build writes what it has encoded and exits with status 75
(`preemption.PREEMPTED_EXIT_CODE`); re-running the command resumes it.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp

from mtp_jax.config import ModelConfig
from mtp_jax.data import feature_cache as cache_lib
from mtp_jax.data import manifest as manifest_lib
from mtp_jax.interop import whisper as whisper_io
from mtp_jax.model import encoders
from mtp_jax.train import optimizer as opt_lib


def load_encoder_params(source: str, mcfg: ModelConfig) -> dict:
  """Encoder params from `source` (see `interop.whisper.load_encoder`), checked
  against `model.encoder` / `model.frontend` (an error names the differing fields)."""
  shp, params = whisper_io.load_encoder(source)
  shp.check(mcfg.encoder, mcfg.frontend.num_mels, str(source))
  return params


def with_encoder(params: Any, encoder_params: dict, mcfg: ModelConfig) -> Any:
  """`params` with params["params"]["encoder"] replaced (shapes and dtypes kept)."""
  old = params["params"]["encoder"]
  flat_old = dict(jax.tree_util.tree_flatten_with_path(old)[0])
  flat_new = dict(jax.tree_util.tree_flatten_with_path(encoder_params)[0])
  if set(flat_old) != set(flat_new):
    missing = sorted(jax.tree_util.keystr(k) for k in set(flat_old) - set(flat_new))
    extra = sorted(jax.tree_util.keystr(k) for k in set(flat_new) - set(flat_old))
    raise ValueError(f"pretrained encoder does not fit model.encoder: missing {missing[:5]}, "
                     f"unexpected {extra[:5]}")
  new = {}
  for k, v in flat_old.items():
    w = flat_new[k]
    if tuple(w.shape) != tuple(v.shape):
      raise ValueError(f"pretrained encoder {jax.tree_util.keystr(k)}: shape {w.shape}, "
                       f"model has {v.shape}")
    new[k] = jax.device_put(jnp.asarray(w, v.dtype), v.sharding)
  tree = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(old),
                                      [new[k] for k in flat_old])
  return {**params, "params": {**params["params"], "encoder": tree}}


def encoder_is_frozen(params: Any, tcfg) -> bool:
  """Whether train.trainable / train.frozen freeze every encoder parameter."""
  if not opt_lib.freezes_anything(tcfg):
    return False
  labels = opt_lib.trainable_labels(params, tcfg)
  return all(l == "freeze" for l in jax.tree.leaves(labels["params"]["encoder"]))


def frames_for(num_samples: int, mcfg: ModelConfig) -> int:
  return int(encoders.encoder_frames(int(num_samples), mcfg))


def open_cache(directory: str, params: Any, mcfg: ModelConfig, tcfg):
  """Opens `data.feature_cache` for training: the encoder must be frozen and the
  cache built from these very encoder weights. Returns (cache, frames_for)."""
  if not encoder_is_frozen(params, tcfg):
    raise ValueError(f"data.feature_cache={directory!r} needs a frozen encoder "
                     "(e.g. --config.train.frozen='^params/encoder/'): cached frames "
                     "cannot train it")
  cache = cache_lib.FeatureCache(directory)
  cache.check(cache_lib.fingerprint(mcfg, params["params"]["encoder"]))
  return cache, functools.partial(frames_for, mcfg=mcfg)


def encode_fn(model, params):
  """A jitted `(audio, audio_len) -> (frames, len)` over the model's encoder."""
  @jax.jit
  def f(audio, audio_len):
    return model.apply(params, audio, audio_len, method="encode_frames")
  return f


def build_cache(config, out_dir: str, manifests: str | None = None, log=print,
                **build_kw) -> dict:
  """Builds the feature cache of `config`'s encoder (random init + train.encoder_init)
  over `manifests` (default: data.train_manifests); `build_kw` go to
  `feature_cache.build`. SIGTERM / SIGINT stop it after the encoder batch in flight,
  with what was encoded written (the result's "stopped" is then True)."""
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  from mtp_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  mcfg = ModelConfig.from_config(config.model)
  model = SpeechLLaMA(mcfg)
  params = jax.jit(lambda k: model.init(k, *state_lib.dummy_inputs(mcfg)))(
      jax.random.PRNGKey(int(config.seed)))
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  params = nn.unbox(params)
  if config.train.encoder_init:
    params = with_encoder(params, load_encoder_params(config.train.encoder_init, mcfg), mcfg)
  entries = manifest_lib.load_manifests(manifests or config.data.train_manifests)
  meta = {"fingerprint": cache_lib.fingerprint(mcfg, params["params"]["encoder"]),
          "encoder_init": str(config.train.encoder_init),
          "encoder_type": mcfg.encoder.type}
  from mtp_jax.train import preemption  # pylint: disable=g-import-not-at-top
  with preemption.StopSignals(log=log, process_count=1) as signals:
    return cache_lib.build(encode_fn(model, params), entries, out_dir, meta=meta,
                           sample_rate=int(config.data.sample_rate), log=log,
                           should_stop=lambda: signals.received is not None, **build_kw)


def main(argv) -> None:
  del argv
  res = build_cache(_FLAGS.config, _FLAGS.out, _FLAGS.manifests or None)
  res["skipped_count"] = len(res["skipped"])
  print(json.dumps(res))
  if res["stopped"]:
    from mtp_jax.train import preemption  # pylint: disable=g-import-not-at-top
    raise SystemExit(preemption.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                  lock_config=True)
  absl_flags.DEFINE_string("out", None, "Cache directory.")
  absl_flags.DEFINE_string("manifests", "", "Comma-separated manifests (default: the "
                           "config's data.train_manifests).")
  absl_flags.mark_flags_as_required(["config", "out"])
  _FLAGS = absl_flags.FLAGS
  from mtp_jax.config import parse_flags_with_config  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=parse_flags_with_config)
