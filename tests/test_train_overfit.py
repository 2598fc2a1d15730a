"""The tiny config overfits a few real Kathleen utterances (WER 0; MTP heads learn)."""
import json
import os

import jax
import numpy as np
import pytest

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.config import load_config_file
from mtp_jax.train.loop import train_and_evaluate
from train_helpers import ROOT


def _subset(shared_data, tmp_path, n):
  """The n shortest distinct-text Kathleen train utterances, as a manifest."""
  src = shared_data / "kathleen" / "train.jsonl"
  rows = [json.loads(l) for l in open(src, encoding="utf-8")]
  picked, seen = [], set()
  for r in sorted(rows, key=lambda r: r["duration"]):
    if r["text"] not in seen:
      seen.add(r["text"])
      picked.append(dict(r, audio_filepath=str(src.parent / r["audio_filepath"])))
    if len(picked) == n:
      break
  path = tmp_path / f"kathleen{n}.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in picked))
  return str(path)


def _config(manifest, n, k, steps, **train):
  c = load_config_file(ROOT / "configs" / "tiny.py", f"K={k}")
  c.data.train_manifests = c.data.dev_manifest = manifest
  c.data.update(batching="random", batch_size=n, batch_size_multiple=1)
  c.data.tokenizer.vocab_size = 64
  c.train.update(steps=steps, warmup_steps=20, learning_rate=3e-3, weight_decay=0.0,
                 log_every=50, checkpoint_every=10_000, eval_batch_size=n)
  c.train.update(**train)
  return c


def _train(config, workdir):
  return train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])


@pytest.mark.slow  # long; `-m slow` runs it
def test_tiny_k4_overfits_4_utterances(shared_data, tmp_path):
  n = 4
  out = _train(_config(_subset(shared_data, tmp_path, n), n, k=4, steps=120), tmp_path / "w")
  assert out["eval/wer"] == 0.0 and out["eval/num_utterances"] == n
  for k in (2, 3, 4):
    assert out[f"train/acc_head{k}"] >= 0.9, out


@pytest.mark.slow
def test_tiny_overfits_8_utterances_then_heads_only(shared_data, tmp_path):
  n = 8
  manifest = _subset(shared_data, tmp_path, n)
  base = _train(_config(manifest, n, k=1, steps=200), tmp_path / "base")
  assert base["eval/wer"] == 0.0 and base["eval/num_utterances"] == n
  # Heads-only: K=4 heads on the frozen K=1 base.
  cfg = _config(manifest, n, k=4, steps=150, mode="heads_only",
                init_from=str(tmp_path / "base"))
  cfg.data.tokenizer.path = str(tmp_path / "base" / "tokenizer.model")
  heads = _train(cfg, tmp_path / "heads")
  assert heads["eval/wer"] == 0.0
  for k in (2, 3, 4):
    assert heads[f"train/acc_head{k}"] >= 0.9, heads
  p1, p4 = ckpt_lib.load_params(tmp_path / "base"), ckpt_lib.load_params(tmp_path / "heads")
  flat1 = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(p1)[0]}
  flat4 = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(p4)[0]}
  assert set(flat1) < set(flat4)
  for key, v in flat1.items():
    np.testing.assert_array_equal(v, flat4[key], err_msg=key)  # base frozen
  assert any("mtp" in key for key in set(flat4) - set(flat1))
