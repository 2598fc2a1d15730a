"""LoRA in training: only the adapters (and what else trains) move, the optimizer keeps
state for them alone, they are saved and resumed exactly with the checkpoint, and the
inference restore folds them into the kernels."""
import json

import jax
import numpy as np

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.train import loop
from mtp_jax.train import lora as lora_lib
from train_helpers import micro_config, recording_transform, write_synthetic_manifest


def _config(manifest):
  c = micro_config(k=2)
  c.data.train_manifests = manifest
  c.data.batching = "random"
  c.data.batch_size = 4
  c.data.batch_size_multiple = 1
  c.train.update(steps=4, warmup_steps=1, checkpoint_every=2, log_every=2,
                 learning_rate=1e-2, frozen="^params/(encoder|embed|decoder|final_norm)/")
  c.train.lora.update(rank=2, alpha=4.0, targets=r"^params/decoder/.*/attn/(q|v)/kernel$")
  return c


def _run(config, workdir, **kw):
  order = []
  out = loop.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1],
                                batch_transform=recording_transform(order), **kw)
  return out, order


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_adapters_train_resume_exactly_and_merge_for_decoding(tmp_path):
  manifest = write_synthetic_manifest(tmp_path / "data")
  straight, order_a = _run(_config(manifest), tmp_path / "a")
  _run(_config(manifest), tmp_path / "b", stop_after=2)
  resumed, order_b = _run(_config(manifest), tmp_path / "b")
  assert straight["step"] == resumed["step"] == 4 and order_b == order_a[2:]
  pa, pb = ckpt_lib.load_params(tmp_path / "a"), ckpt_lib.load_params(tmp_path / "b")
  jax.tree.map(np.testing.assert_array_equal, pa, pb)  # resume == never stopping

  flat = _flat(pa)
  lora_b = [k for k in flat if k.endswith("['lora_b']")]
  assert lora_b and all(np.abs(flat[k]).max() > 0 for k in lora_b)  # adapters trained
  # Between steps 2 and 4 the frozen kernels stay as they are; the adapters move.
  at2 = _flat(ckpt_lib.load_params(tmp_path / "b", 2))
  for key, value in flat.items():
    if "['decoder']" in key and key.endswith("['kernel']"):
      np.testing.assert_array_equal(value, at2[key])
  assert any(not np.array_equal(flat[k], at2[k]) for k in lora_b)
  lines = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [2, 4]

  cfg = lora_lib.of(_config(manifest).train)
  _, params, _ = ckpt_lib.restore_for_inference(tmp_path / "a", decode_layout=False)
  assert not lora_lib.has_adapters(params)
  q = "['params']['decoder']['layer0']['attn']['q']"
  w = flat[q + "['kernel']"]
  expect = w + (flat[q + "['lora_a']"] @ flat[q + "['lora_b']"]).reshape(w.shape) * cfg.scale
  np.testing.assert_allclose(np.asarray(params["params"]["decoder"]["layer0"]["attn"]["q"]
                                        ["kernel"]), expect, rtol=1e-6, atol=1e-6)
  k = "['params']['decoder']['layer0']['attn']['k']['kernel']"
  np.testing.assert_array_equal(
      np.asarray(params["params"]["decoder"]["layer0"]["attn"]["k"]["kernel"]), flat[k])
