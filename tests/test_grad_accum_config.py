"""train.grad_accum that does not divide the batch size is refused before anything is
compiled, with an error naming the fields and their values."""
import jax
import pytest

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.config import ConfigError
from mtp_jax.train import loop
from mtp_jax.train.config import RunConfig
from train_helpers import micro_config, write_synthetic_manifest


def _config(manifest="", **data):
  c = micro_config(k=2)
  c.data.train_manifests = manifest
  c.data.update(batching="random", batch_size=4)
  c.data.update(**data)
  return c


@pytest.mark.parametrize("data,accum,message", [
    (dict(), 3, "train.grad_accum=3: must divide the batch size, data.batch_size=4"),
    (dict(batch_size=6, batch_size_multiple=4), 3,
     "train.grad_accum=3: must divide the batch size, data.batch_size=6 (rounded down to "
     "data.batch_size_multiple=4: 4)"),
    (dict(text_corpus="lines.txt", batch_size=10), 4,
     "train.grad_accum=4: must divide the batch size, data.batch_size=10"),
])
def test_refused_at_config_time(data, accum, message):
  c = _config(**data)
  c.train.grad_accum = accum
  with pytest.raises(ConfigError) as e:
    RunConfig.from_config(c)
  assert str(e.value) == message


@pytest.mark.parametrize("data,accum", [(dict(batching="random", batch_size=4), 2),
                                        (dict(batching="2d", batch_size_multiple=3), 5)])
def test_accepted_at_config_time(data, accum):
  c = _config(**data)
  c.train.grad_accum = accum  # bucket sizes are known once the data is read
  RunConfig.from_config(c)


def test_batches_the_device_count_makes_are_refused_before_compiling(tmp_path):
  manifest = write_synthetic_manifest(tmp_path / "data", n=16)
  # batch_size 6 divides by 3, but with batch_size_multiple=0 the rows are rounded
  # down to the device count (8 here): 8 rows.
  c = _config(manifest, batch_size=6, batch_size_multiple=0)
  c.train.grad_accum = 3
  RunConfig.from_config(c)
  n = jax.device_count()
  with pytest.raises(ConfigError,
                     match=rf"train.grad_accum=3: must divide every batch size, but "
                           rf"data.batch_size=6 rounded down to a multiple of {n} \(data."
                           rf"batch_size_multiple=0, 0 = the device count\) gives {n} rows; "
                           rf"set data.batch_size_multiple={3 * n} \(a multiple of both\)"):
    loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "config.json").exists()
  assert not ckpt_lib.has_checkpoints(tmp_path / "run")


def test_bucket_batch_sizes_are_checked_before_compiling(tmp_path):
  manifest = write_synthetic_manifest(tmp_path / "data", n=16)
  c = _config(manifest, batching="2d", batch_size_multiple=2, num_duration_bins=2)
  c.train.grad_accum = 64
  with pytest.raises(ConfigError,
                     match=r"train.grad_accum=64: must divide every batch size, but "
                           r"data.batching='2d' gives bucket batch sizes \[\d+.*\] "
                           r"\(multiples of 2: data.batch_size_multiple=2\); set "
                           r"data.batch_size_multiple=64"):
    loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "config.json").exists()
