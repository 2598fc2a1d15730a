"""A failed save loses nothing: out of disk or an unwritable directory during a
checkpoint is a named error, the earlier checkpoints stay intact and resumable, and no
half-written step is left for a resume to trust."""
import errno
import os
import shutil
import subprocess

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint._src.path.async_path as orbax_async_path
import pytest

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.train import loop
from mtp_jax.train import workdir as workdir_lib
from train_helpers import micro_config, recording_transform, write_synthetic_manifest

DEVICES = 2


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("savefail")
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


def _run(config, workdir, transform=None):
  order = []
  record = recording_transform(order)

  def both(step, batch):
    if transform is not None:
      transform(step)
    return record(step, batch)

  out = loop.train_and_evaluate(config, str(workdir), devices=jax.devices()[:DEVICES],
                                batch_transform=both)
  return out, order


@pytest.fixture(scope="module")
def straight(env):
  root, manifest = env
  _, order = _run(_config(manifest), root / "straight")
  return root / "straight", order


def _leftovers(work):
  return [n for n in os.listdir(work / "checkpoints") if not n.isdigit()]


def _resume_equals_straight(manifest, work, straight, first_order):
  base, base_order = straight
  out, order = _run(_config(manifest), work)
  assert out["step"] == 6 and [s for s, _ in order] == [3, 4, 5]
  assert first_order[:3] + order == base_order
  jax.tree.map(np.testing.assert_array_equal, ckpt_lib.load_params(work),
               ckpt_lib.load_params(base))


@pytest.mark.parametrize("async_save", [True, False], ids=["async", "sync"])
def test_disk_full_mid_save_is_named_and_loses_nothing(env, straight, tmp_path, monkeypatch,
                                                      async_save):
  root, manifest = env
  real = ckpt_lib.DataStateHandler.save

  def full_disk_at_step_6(self, directory, args):  # params and train state in flight
    if f"{os.sep}6.orbax-checkpoint-tmp" in str(directory):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return real(self, directory, args)

  monkeypatch.setattr(ckpt_lib.DataStateHandler, "save", full_disk_at_step_6)
  work = tmp_path / "w"
  order = []
  with pytest.raises(ckpt_lib.CheckpointSaveError,
                     match=r"checkpoint step 6 could not be written to .*checkpoints: "
                           r"OSError: \[Errno 28\] No space left on device.*\. "
                           r"Nothing of step 6 is kept; the earlier checkpoints are "
                           r"intact \(steps \[3\]\); a re-run of the same command "
                           r"resumes from step 3"):
    loop.train_and_evaluate(_config(manifest, async_checkpointing=async_save), str(work),
                            devices=jax.devices()[:DEVICES],
                            batch_transform=recording_transform(order))
  assert ckpt_lib.Checkpointer(work).all_steps() == [3]
  assert _leftovers(work) == []  # the half-written step is gone
  assert not (work / workdir_lib.LOCK_FILE).exists()
  assert issubclass(ckpt_lib.CheckpointSaveError, loop.USER_ERRORS)  # train.py: one line
  monkeypatch.setattr(ckpt_lib.DataStateHandler, "save", real)
  _resume_equals_straight(manifest, work, straight, order)


def _read_only(path):
  """Makes `path` unwritable (mode 555; as root, whom modes do not stop, the immutable
  attribute); returns the undo. Skips the test where neither works."""
  os.chmod(path, 0o555)
  undo = [lambda: os.chmod(path, 0o755)]

  def writable():
    try:
      (path / ".probe").touch()
    except OSError:
      return False
    (path / ".probe").unlink()
    return True

  if writable() and shutil.which("chattr"):
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
      undo.insert(0, lambda: subprocess.run(["chattr", "-i", str(path)], check=True))
  if writable():
    for u in undo:
      u()
    pytest.skip("cannot make a directory read-only here")
  return lambda: [u() for u in undo]


def test_checkpoints_dir_made_read_only_during_a_run(env, straight, tmp_path):
  root, manifest = env
  work = tmp_path / "w"
  undo = []

  def lock_down(step):
    if step == 4:  # after checkpoint 3, before checkpoint 6
      undo.append(_read_only(work / "checkpoints"))

  try:
    with pytest.raises(ckpt_lib.CheckpointSaveError,
                       match=r"checkpoint step 6 could not be written to .*checkpoints: \w+"
                             r"Error: .*(Permission denied|Operation not permitted|"
                             r"Read-only).*intact \(steps \[3\]\)"):
      # Synchronous saves: checkpoint 3 is complete before the directory is locked.
      loop.train_and_evaluate(_config(manifest, async_checkpointing=False), str(work),
                              devices=jax.devices()[:DEVICES],
                              batch_transform=lambda s, b: (lock_down(s), b)[1])
  finally:
    for u in undo:
      u()
  assert ckpt_lib.Checkpointer(work).all_steps() == [3] and _leftovers(work) == []
  _resume_equals_straight(manifest, work, straight, straight[1])


def test_read_only_workdir_is_refused_before_anything(env, tmp_path):
  _, manifest = env
  work = tmp_path / "w"
  work.mkdir()
  undo = _read_only(work)
  try:
    with pytest.raises(workdir_lib.WorkdirWriteError,
                       match=rf"{work / workdir_lib.LOCK_FILE}: cannot write the workdir lock"):
      loop.train_and_evaluate(_config(manifest), str(work), devices=jax.devices()[:DEVICES])
  finally:
    undo()
  assert os.listdir(work) == []


# ------------------------------------------------------------------ the Checkpointer alone
@flax.struct.dataclass
class _State:
  step: jax.Array
  params: dict
  opt_state: dict
  rng: jax.Array
  nonfinite_total: jax.Array
  nonfinite_run: jax.Array


def _state(step: int) -> _State:
  return _State(step=jnp.int32(step), params={"w": jnp.full((8,), float(step))},
                opt_state={"m": jnp.zeros(8)}, rng=jax.random.PRNGKey(step),
                nonfinite_total=jnp.int32(0), nonfinite_run=jnp.int32(0))


def _saved_params(work, step=None):
  return float(ckpt_lib.load_params(work, step)["w"][0])


def test_failed_commit_rename_keeps_the_earlier_steps(tmp_path, monkeypatch):
  ck = ckpt_lib.Checkpointer(tmp_path, keep=2, async_save=True)
  ck.save(_state(1), {"pos": 1})
  ck.save(_state(2), {"pos": 2})
  ck.wait()
  real = orbax_async_path.rename

  async def full_disk(src, dst):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

  monkeypatch.setattr(orbax_async_path, "rename", full_disk)
  with pytest.raises(ckpt_lib.CheckpointSaveError,
                     match=r"checkpoint step 3 could not be written.*No space left on "
                           r"device.*intact \(steps \[1, 2\]\)") as e:
    ck.save(_state(3), {"pos": 3})
    ck.wait()  # an asynchronous save fails here
  assert e.value.step == 3 and e.value.intact_steps == [1, 2]
  ck.close()  # the failure was reported: closing does not raise it again
  monkeypatch.setattr(orbax_async_path, "rename", real)
  # keep=2 deleted nothing for the failed step; the newest readable is step 2.
  assert ckpt_lib.Checkpointer(tmp_path).all_steps() == [1, 2] and _leftovers(tmp_path) == []
  assert _saved_params(tmp_path) == 2.0
  ck = ckpt_lib.Checkpointer(tmp_path, keep=2, async_save=True)
  ck.save(_state(3), {"pos": 3})  # resumable: the same step written again
  ck.close()
  assert ckpt_lib.Checkpointer(tmp_path).all_steps() == [2, 3] and _saved_params(tmp_path) == 3


def test_read_only_checkpoints_dir_is_named_and_recoverable(tmp_path):
  ck = ckpt_lib.Checkpointer(tmp_path, async_save=False)
  ck.save(_state(1), {"pos": 1})
  undo = _read_only(tmp_path / "checkpoints")
  try:
    with pytest.raises(ckpt_lib.CheckpointSaveError,
                       match=r"checkpoint step 2 could not be written to "
                             rf"{tmp_path / 'checkpoints'}: .*intact \(steps \[1\]\).*the "
                             r"directory is writable again"):
      ck.save(_state(2), {"pos": 2})
  finally:
    undo()
  ck.close()
  assert ckpt_lib.Checkpointer(tmp_path).all_steps() == [1] and _saved_params(tmp_path) == 1
  ck = ckpt_lib.Checkpointer(tmp_path, async_save=False)
  ck.save(_state(2), {"pos": 2})
  ck.close()
  assert _saved_params(tmp_path) == 2
