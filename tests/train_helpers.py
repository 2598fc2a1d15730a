"""Shared helpers for the training tests: micro configs and synthetic manifests."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import soundfile as sf

from mtp_jax.config import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()


def micro_config(k: int = 2, head: str = "independent"):
  """Smaller than configs/tiny.py: 1 encoder + 1 decoder layer of width 32."""
  c = load_config_file(ROOT / "configs" / "tiny.py", f"K={k},head={head}")
  m = c.model
  m.encoder.update(d_model=32, num_layers=1, num_heads=2, ff_mult=2, conv_kernel=3,
                   subsampling_channels=8, dropout=0.0)
  m.frontend.num_mels = 32
  m.decoder.update(vocab_size=48, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2,
                   ff_dim=64, max_text_len=32)
  c.data.tokenizer.vocab_size = 48
  return c


def whisper_micro_config(k: int = 2, head: str = "independent"):
  """`micro_config` with a 1-layer Whisper encoder of width 32 (80 mels)."""
  c = micro_config(k=k, head=head)
  c.model.encoder.update(type="whisper", d_model=32, num_layers=1, num_heads=2, ff_mult=2,
                         max_positions=64, dropout=0.0)
  c.model.frontend.update(n_fft=400, num_mels=80, freq_masks=0, time_masks=0)
  c.model.projector.stack = 2
  c.data.max_duration = 1.2
  return c


def recording_transform(order: list, nan_steps=()):
  """A `train_and_evaluate` batch_transform that appends (step, utt_ids) to `order`
  and makes the audio (or cached frames) of the batches at `nan_steps` NaN."""
  nan_steps = set(nan_steps)

  def transform(step: int, batch: dict) -> dict:
    order.append((step, list(batch["utt_id"])))
    if step in nan_steps:
      key = "frames" if "frames" in batch else "audio"
      batch = dict(batch, **{key: np.full_like(batch[key], np.nan)})
    return batch
  return transform


def write_synthetic_manifest(directory: pathlib.Path, n: int = 16, seed: int = 0) -> str:
  """n short sine+noise FLACs with word transcripts; returns the manifest path."""
  rng = np.random.default_rng(seed)
  audio = directory / "audio"
  audio.mkdir(parents=True, exist_ok=True)
  path = directory / "train.jsonl"
  with open(path, "w", encoding="utf-8") as f:
    for i in range(n):
      samples = int(16000 * (0.4 + 0.1 * (i % 4)))
      t = np.arange(samples) / 16000
      x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(samples)
      sf.write(audio / f"u{i:02d}.flac", x.astype(np.float32), 16000)
      text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 3))
      f.write(json.dumps({"audio_filepath": f"audio/u{i:02d}.flac",
                          "duration": samples / 16000, "text": text}) + "\n")
  return str(path)


def init_workdir(workdir: pathlib.Path, config) -> pathlib.Path:
  """A run directory as train.py leaves one, with untrained params (fast: nothing is
  compiled but the init): config.json, the tokenizer (trained on
  config.data.train_manifests) and a checkpoint at step 0."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from mtp_jax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from mtp_jax import sharding  # pylint: disable=import-outside-toplevel
  from mtp_jax.config import ModelConfig  # pylint: disable=import-outside-toplevel
  from mtp_jax.data import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=import-outside-toplevel
  from mtp_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  workdir.mkdir(parents=True, exist_ok=True)
  tok_lib.get_tokenizer(config.data, workdir)
  ckpt_lib.save_config(workdir, config)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  state, _ = state_lib.create_train_state(model, optax.sgd(0.1), mesh,
                                          sharding.rules_from_config(config.sharding_rules),
                                          seed=0)
  ck = ckpt_lib.Checkpointer(workdir, async_save=False)
  ck.save(state)
  ck.close()
  return workdir
