"""Per-bucket batch-size search (mtp_jax/tools/batch_search.py)."""
import json

import jax
import numpy as np
import pytest

from mtp_jax import sharding as sharding_lib
from mtp_jax.data import bucketing
from mtp_jax.data import pipeline
from mtp_jax.data import tokenizer as tok_lib
from mtp_jax.tools import batch_search as bs

from train_helpers import micro_config, write_synthetic_manifest


@pytest.mark.parametrize("limit,multiple,known", [(1, 1, 0), (37, 1, 0), (1000, 8, 0),
                                                  (203, 4, 40), (64, 2, 64)])
def test_search_batch_size_is_tight(limit, multiple, known):
  calls = []

  def fits(b):
    assert b % multiple == 0 and b > 0
    calls.append(b)
    return b <= limit

  b, capped = bs.search_batch_size(fits, multiple=multiple, known_fit=known)
  assert not capped and b <= limit and b % multiple == 0
  assert not fits(int(bucketing.round_up(int(b * 1.05) + multiple, multiple)))
  assert known not in calls  # a known fit is never probed again


def test_search_batch_size_cap_and_nothing_fits():
  assert bs.search_batch_size(lambda b: True, multiple=4, max_batch_size=50) == (48, True)
  assert bs.search_batch_size(lambda b: False, multiple=4) == (0, False)


class _AffineProber:
  """Stands in for StepProber: memory = a + c * B * S * L bytes (no compiling)."""

  def __init__(self, config, budget):
    self.config, self.budget_bytes, self.bytes = config, budget, {}

  def probe(self, b, s, l):
    n = 1000 + 3 * b * s * l
    self.bytes[(b, s, l)] = n
    return bs.Trial(b, n <= self.budget_bytes, "ok" if n <= self.budget_bytes else "budget",
                    n, 0.0)


def test_searched_file_is_read_back_by_the_pipeline(tmp_path):
  config = micro_config(k=2)
  config.data.train_manifests = write_synthetic_manifest(tmp_path, n=24)
  config.data.update(num_duration_bins=3, num_token_bins=2, batch_size_multiple=2,
                     validate_headers=False)
  tok = tok_lib.get_tokenizer(config.data, tmp_path)
  buckets = bs.build_buckets(config, tok)
  assert len(buckets) > 1
  budget = 3 * 9 * max(b.max_samples * b.max_tokens for b in buckets)  # ~9 rows of the largest
  prober = _AffineProber(config, budget)
  results = bs.search_buckets(prober, buckets, multiple=2, cap_to_bucket=False,
                              log=lambda _: None)
  assert len(results) == len(buckets)
  for r in results:
    fits = lambda b: 1000 + 3 * b * r.max_samples * r.max_tokens <= budget
    assert r.batch_size % 2 == 0 and fits(r.batch_size)
    assert not fits(int(bucketing.round_up(int(r.batch_size * 1.05) + 2, 2)))
  path = tmp_path / "run" / "batch_sizes.json"
  bs.write_batch_sizes(path, results, note="test")
  assert bucketing.load_batch_size_overrides(path) == {r.key: r.batch_size for r in results}
  config.data.bucket_batch_sizes = str(path)
  utts = pipeline.prepare_utterances(pipeline.load_entries(config.data.train_manifests,
                                                           config.data, pipeline.BadInputReport()),
                                     tok, config.data, pipeline.BadInputReport())
  used = pipeline.make_buckets_for(utts, config.data, batch_multiple=2)
  assert {b.shape_key: b.batch_size for b in used} == json.loads(path.read_text())["batch_sizes"]


@pytest.mark.slow  # ~70 s on the loaded 2-core CPU (three compiles of the real step)
def test_real_step_search_fits_budget_and_is_tight():
  """Compile-only search of the real sharded step (micro model, 2 devices)."""
  config = micro_config(k=2)
  mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:2])
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  s, l = 6400, 16
  prober = bs.StepProber(config, mesh, rules, budget_bytes=None, run_steps=0,
                         log=lambda _: None)
  base = prober.probe(4, s, l).bytes_per_device
  big = prober.probe(8, s, l).bytes_per_device
  assert base is not None and big > base  # memory grows with the batch
  prober.budget_bytes = base + 6 * (big - base) // 10  # between B=4 and B=8
  b, capped, trials = bs.search_shape(prober, s, l, multiple=2, known_fit=4,
                                      log=lambda _: None)
  assert not capped and 4 <= b < 8 and b % 2 == 0
  assert [t.batch_size for t in trials][0] == 8  # doubling from the known fit
  assert prober.bytes[(b, s, l)] <= prober.budget_bytes
  over = int(bucketing.round_up(int(b * 1.05) + 2, 2))
  assert not prober.probe(over, s, l).fits
  # Running the found size for real works (random non-zero data, finite loss).
  prober.run_steps = 1
  assert prober.probe(b, s, l).fits
  assert int(prober.state().step) == 1
