"""Exact resume, incomplete and damaged checkpoints, refused re-runs, changed data,
metrics after a kill, and non-finite steps, on a synthetic manifest.

All runs share one step HLO (same config apart from host-side fields), so a
persistent compilation cache in tmp makes every run after the first skip XLA.
"""
import json
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.config import ConfigError
from mtp_jax.data.errors import NoDataError
from mtp_jax.model.heads import DECODE
from mtp_jax.train import loop
from mtp_jax.train import workdir as workdir_lib
from train_helpers import micro_config, recording_transform, write_synthetic_manifest

DEVICES = 2  # A 2-device data mesh: sharded, yet cheap to compile.


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("resume")
  old = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir",
                                          "jax_persistent_cache_min_compile_time_secs")}
  jax.config.update("jax_compilation_cache_dir", str(root / "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield root, write_synthetic_manifest(root / "data")
  for k, v in old.items():
    jax.config.update(k, v)


def _config(manifest, **train):
  c = micro_config(k=2)
  c.data.train_manifests = manifest
  c.data.batching = "random"
  c.data.batch_size = 4
  c.data.batch_size_multiple = DEVICES
  c.train.update(steps=6, warmup_steps=2, checkpoint_every=3, log_every=3)
  c.train.update(**train)
  return c


def _run(config, workdir, nan_steps=(), **kw):
  """Trains; returns (last metrics, [(step, utt_ids)] of the batches trained on)."""
  order = []
  out = loop.train_and_evaluate(config, str(workdir), devices=jax.devices()[:DEVICES],
                                batch_transform=recording_transform(order, nan_steps), **kw)
  return out, order


def test_resume_is_exact(env):
  root, manifest = env
  straight, order_a = _run(_config(manifest), root / "a")
  part1, order_b1 = _run(_config(manifest), root / "b", stop_after=3)
  assert part1["step"] == 3
  assert ckpt_lib.Checkpointer(root / "b").latest_step() == 3
  part2, order_b2 = _run(_config(manifest), root / "b")
  assert part2["step"] == 6 == straight["step"]
  assert order_a == order_b1 + order_b2          # same batches, same order
  assert [s for s, _ in order_b2] == [3, 4, 5]
  pa = ckpt_lib.load_params(root / "a")
  pb = ckpt_lib.load_params(root / "b")
  jax.tree.map(np.testing.assert_array_equal, pa, pb)
  assert part2["train/loss"] == straight["train/loss"]
  lines = [json.loads(l) for l in open(root / "b" / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [3, 6]
  assert {"train/loss_head2", "train/acc_head2", "perf/steps_per_s"} <= set(lines[-1])
  assert os.listdir(root / "b" / "tb")

  # decode.py's entry point sees the same run.
  config, params, tok = ckpt_lib.restore_for_inference(root / "b")
  assert config.model.mtp.num_heads == 2 and tok.vocab_size <= 48
  layout = params.pop(DECODE)  # the decoding copy of the tied unembedding, [d, V]
  jax.tree.map(np.testing.assert_array_equal, params, pb)
  np.testing.assert_array_equal(layout["unembed"]["kernel"],
                                np.asarray(pb["params"]["embed"]["embedding"]).T)
  _, plain, _ = ckpt_lib.restore_for_inference(root / "b", decode_layout=False)
  assert DECODE not in plain


def test_incomplete_checkpoint_is_ignored(env):
  root, manifest = env
  work = root / "b"
  if not (work / "checkpoints").exists():
    pytest.skip("needs test_resume_is_exact's run")
  # A write killed before orbax's atomic rename leaves a temporary step directory.
  tmp = work / "checkpoints" / "9.orbax-checkpoint-tmp-1234567"
  (tmp / "params").mkdir(parents=True)
  (tmp / "params" / "garbage").write_text("partial")
  assert ckpt_lib.Checkpointer(work).latest_step() == 6
  out, order = _run(_config(manifest), work)  # resumes from 6 (done), not 9
  assert order == [] and out["step"] == 6


def test_nonfinite_steps_are_skipped(env):
  root, manifest = env
  out, _ = _run(_config(manifest), root / "nan1", nan_steps=(1,))
  assert out["train/nonfinite_total"] == 1 and out["step"] == 6
  params = ckpt_lib.load_params(root / "nan1")
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_repeated_nonfinite_stops_with_last_good_checkpoint(env):
  root, manifest = env
  cfg = _config(manifest, max_consecutive_nonfinite=3, checkpoint_every=2)
  with pytest.raises(loop.NonFiniteError,
                     match="3 consecutive non-finite.*last good checkpoint: step 4"):
    _run(cfg, root / "nan3", nan_steps=(3, 4, 5))
  ck = ckpt_lib.Checkpointer(root / "nan3")
  assert ck.all_steps() == [2, 4]
  params = ckpt_lib.load_params(root / "nan3")
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  # Step 4's checkpoint holds step 3's params (the NaN batch at step 3 was skipped).
  p2 = ckpt_lib.load_params(root / "nan3", step=2)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                       jax.tree.leaves(p2)))


# --- re-running a workdir: refusals leave it intact, damage and data changes -------

@pytest.fixture(scope="module")
def base_run(env):
  """A finished 6-step run (checkpoints 3 and 6); tests work on copies of it."""
  root, manifest = env
  _run(_config(manifest), root / "base")
  return root / "base"


def _copy(base, dest):
  shutil.copytree(base, dest)
  return dest


def _snapshot(workdir):
  """Every file of the workdir with its bytes (what a refused re-run must not touch)."""
  return {str(p.relative_to(workdir)): p.read_bytes()
          for p in sorted(workdir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change,error", [
    (dict(ff_dim=96), r"model.decoder.ff_dim: 64 -> 96"),
    (dict(num_kv_heads=3), r"model.decoder.num_kv_heads=3: must divide"),
])
def test_changed_or_invalid_model_on_a_workdir_is_refused_untouched(env, base_run, tmp_path,
                                                                   change, error):
  root, manifest = env
  work = _copy(base_run, tmp_path / "w")
  before = _snapshot(work)
  cfg = _config(manifest)
  cfg.model.decoder.update(**change)
  with pytest.raises((ConfigError, workdir_lib.ResumeError), match=error):
    _run(cfg, work)
  assert _snapshot(work) == before
  config, _, _ = ckpt_lib.restore_for_inference(work)  # decode.py still reads the run
  assert config.model.decoder.ff_dim == 64


def test_invalid_train_value_writes_nothing(env, tmp_path):
  root, manifest = env
  with pytest.raises(ConfigError, match="train.steps=0: must be >= 1"):
    _run(_config(manifest, steps=0), tmp_path / "fresh")
  assert not (tmp_path / "fresh").exists()


def _damage(step_dir):
  for p in (step_dir / "params").rglob("*"):
    if p.is_file():
      p.write_bytes(b"garbage" * 7)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(env, base_run, tmp_path,
                                                                  capsys):
  root, manifest = env
  work = _copy(base_run, tmp_path / "w")
  _damage(work / "checkpoints" / "6")
  # Loading params (decode.py): the newest readable step, or one clear error.
  jax.tree.map(np.testing.assert_array_equal, ckpt_lib.load_params(work),
               ckpt_lib.load_params(base_run, step=3))
  with pytest.raises(ckpt_lib.CheckpointError, match=r"checkpoint step 6 in .* cannot be read"):
    ckpt_lib.load_params(work, step=6)
  capsys.readouterr()
  out, order = _run(_config(manifest), work)
  log = capsys.readouterr()
  assert [s for s, _ in order] == [3, 4, 5]  # resumed from step 3 and replayed 3..5
  assert out["step"] == 6
  assert re.search(r"checkpoint step 6 in .* cannot be read, skipped: \w+", log.out)
  assert "resumed from step 3" in log.out
  assert "Event loop is closed" not in log.err and "Traceback" not in log.err
  assert (work / "checkpoints_damaged" / "6").is_dir()
  assert ckpt_lib.Checkpointer(work).all_steps() == [3, 6]
  # The replay is exact: the rewritten step 6 equals the original run's.
  jax.tree.map(np.testing.assert_array_equal, ckpt_lib.load_params(work),
               ckpt_lib.load_params(base_run))
  steps = [json.loads(l)["step"] for l in open(work / "metrics.jsonl")]
  assert steps == [3, 6]


def test_no_readable_checkpoint_is_one_clear_error(env, base_run, tmp_path):
  root, manifest = env
  work = _copy(base_run, tmp_path / "w")
  before_config = (work / "config.json").read_bytes()
  for step in (3, 6):
    _damage(work / "checkpoints" / str(step))
  with pytest.raises(ckpt_lib.CheckpointError,
                     match=r"no readable checkpoint in .*step 6: .*; step 3: "):
    _run(_config(manifest), work)
  assert (work / "config.json").read_bytes() == before_config


def test_killed_run_metrics_hold_each_step_once(env, tmp_path):
  root, manifest = env
  work = tmp_path / "killed"

  def kill_at_4(step, batch):
    if step == 4:
      raise KeyboardInterrupt("killed")
    return batch

  cfg = _config(manifest, log_every=1)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(cfg, str(work), devices=jax.devices()[:DEVICES],
                            batch_transform=kill_at_4)
  steps = [json.loads(l)["step"] for l in open(work / "metrics.jsonl")]
  assert steps == [1, 2, 3, 4] and ckpt_lib.Checkpointer(work).all_steps() == [3]
  _run(cfg, work)  # resumes from 3: step 4 is replayed
  steps = [json.loads(l)["step"] for l in open(work / "metrics.jsonl")]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_changed_manifest_says_how_to_resume(env, base_run, tmp_path):
  root, manifest = env
  work = _copy(base_run, tmp_path / "w")
  lines = open(manifest).read().splitlines(keepends=True)
  edited = pathlib.Path(manifest).with_name("edited.jsonl")
  edited.write_text("".join(lines[:-1]))  # a "bad" line removed
  cfg = _config(str(edited), steps=7)
  before = _snapshot(work)
  with pytest.raises(workdir_lib.ResumeError,
                     match=r"(?s)fingerprint.*--config.train.reset_data_iterator=True"):
    _run(cfg, work)
  assert _snapshot(work) == before
  cfg.train.reset_data_iterator = True
  out, order = _run(cfg, work)
  assert out["step"] == 7 and [s for s, _ in order] == [6]
  assert ckpt_lib.load_config(work).data.train_manifests == str(edited)


def test_empty_manifest_is_a_clear_error(env, tmp_path):
  root, manifest = env
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  with pytest.raises(NoDataError, match=f"no utterance in {empty}"):
    _run(_config(str(empty)), tmp_path / "w")
  assert not (tmp_path / "w" / "config.json").exists()
