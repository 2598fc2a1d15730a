"""One train step on (data=4, tensor=2) and (fsdp=8) equals the one-device step."""
import jax
import numpy as np
import pytest

from mtp_jax import sharding as sharding_lib
from mtp_jax.train import step as step_lib
from mtp_jax.train.setup import make_train_setup
from train_helpers import micro_config


def _batch(b=8, s=3200, l=8, seed=0):
  rng = np.random.default_rng(seed)
  audio_len = rng.integers(s // 2, s + 1, b).astype(np.int32)
  audio_len[-1] = 0  # a batch-padding row
  audio = (0.1 * rng.standard_normal((b, s))).astype(np.float32)
  audio *= np.arange(s)[None] < audio_len[:, None]
  text_len = rng.integers(1, l, b).astype(np.int32)
  text_len[-1] = 0
  text = rng.integers(4, 48, (b, l)).astype(np.int32)
  text *= np.arange(l)[None] < text_len[:, None]
  return {"audio": audio, "audio_len": audio_len, "text": text, "text_len": text_len}


def _run(config, devices, mesh_cfg):
  mesh = sharding_lib.make_mesh(mesh_cfg, devices)
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  setup = make_train_setup(config, mesh, rules)
  state, jitted = setup.create_state(seed=0), setup.jit_step()
  with step_lib.trace_context(mesh, rules):
    new, metrics = jitted(state, step_lib.device_batch(_batch(), mesh, rules))
  # The optimizer moments are sharded like their parameters.
  specs = {str(x.sharding.spec) for x in jax.tree.leaves(new.opt_state)}
  param_specs = {str(x.sharding.spec) for x in jax.tree.leaves(new.params)}
  assert param_specs <= specs | {"PartitionSpec()"}
  leaf = jax.tree.leaves(new.params)[0]
  return jax.device_get(new.params), jax.device_get(metrics), leaf.sharding


def _matches_single_device(mesh_cfgs):
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    config = micro_config(k=2)
    config.train.warmup_steps = 0
    config.train.learning_rate = 1e-2
    # A large Adam eps keeps the first update ~ lr * g / eps, i.e. linear in the
    # gradient: with the default eps an element whose gradient is at rounding-noise
    # level (~1e-8) still moves by a full +-lr, so reduction-order noise would be
    # amplified into O(lr) parameter differences that say nothing about sharding.
    config.train.eps = 1e-3
    ref_params, ref_m, _ = _run(config, jax.devices()[:1], {"data": 1})
    assert np.isfinite(ref_m["loss"])
    for mesh_cfg in mesh_cfgs:
      params, m, sharding = _run(config, jax.devices(), mesh_cfg)
      assert len(sharding.device_set) == 8
      np.testing.assert_allclose(m["loss"], ref_m["loss"], rtol=1e-5)
      np.testing.assert_allclose(m["loss_k"], ref_m["loss_k"], rtol=1e-5)
      np.testing.assert_allclose(m["grad_norm"], ref_m["grad_norm"], rtol=1e-4)
      # Parameters are O(0.1) and moved by O(lr = 1e-2); float32 gradient sums in a
      # different order differ by ~1e-6 absolute (1e-4 of a step), near-zero
      # parameters included, hence an absolute tolerance at that scale.
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                   params, ref_params)
  finally:
    jax.config.update("jax_default_matmul_precision", None)


def test_sharded_step_matches_single_device():
  _matches_single_device(({"data": 4, "tensor": 2}, {"data": 1, "fsdp": 8}))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "known defect (session 12): on a mesh with all three axes (data=2, fsdp=2, tensor=2) "
    "and K >= 2 heads the loss matches one device but the gradients do not (grad norm "
    "8.03 vs 8.29); K=1 and the (data, tensor), (data, fsdp), (fsdp, tensor) meshes match"))
def test_sharded_step_on_a_three_axis_mesh_matches_single_device():
  _matches_single_device(({"data": 2, "fsdp": 2, "tensor": 2},))
