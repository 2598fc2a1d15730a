"""Tests of the pure-numpy bucketing logic."""
import itertools
import json

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from mtp_jax.data import bucketing as bk

RATE = 16000


def _lengths(n, seed=0):
  """Speech-like lengths: log-normal durations, tokens roughly proportional."""
  rng = np.random.default_rng(seed)
  seconds = np.clip(rng.lognormal(np.log(4.0), 0.5, n), 0.3, 20.0)
  samples = np.ceil(seconds * RATE).astype(np.int64)
  tokens = np.maximum(1, (seconds * 3 + rng.normal(0, 2, n)).astype(np.int64))
  return samples, tokens


_durations = st.lists(st.floats(0.05, 20.0), min_size=1, max_size=300)


@hypothesis.given(
    durations=_durations, data=st.data(),
    k=st.integers(1, 10), m=st.integers(1, 5),
    audio_budget=st.floats(5.0, 300.0), token_budget=st.integers(64, 8192),
    multiple=st.sampled_from([1, 2, 8]), extra=st.integers(0, 2),
    binning=st.sampled_from(bk.BINNINGS))
@hypothesis.settings(max_examples=80, deadline=None)
def test_buckets_respect_limits(durations, data, k, m, audio_budget,
                                token_budget, multiple, extra, binning):
  n = len(durations)
  samples = np.ceil(np.array(durations) * RATE).astype(np.int64)
  tokens = np.array(data.draw(st.lists(st.integers(1, 200), min_size=n,
                                       max_size=n)))
  buckets = bk.make_buckets(
      samples, tokens, num_duration_bins=k, num_token_bins=m, sample_rate=RATE,
      audio_seconds_per_batch=audio_budget, tokens_per_batch=token_budget,
      audio_pad_multiple=1280, token_pad_multiple=8, text_pad_extra=extra,
      batch_size_multiple=multiple, binning=binning)
  # Every utterance in exactly one bucket; at most k * m shapes.
  members = np.concatenate([b.members for b in buckets])
  assert sorted(members.tolist()) == list(range(n))
  assert len(buckets) <= k * m
  for b in buckets:
    assert len(b.members) > 0
    assert b.max_samples % 1280 == 0 and b.max_tokens % 8 == 0
    assert samples[b.members].max() <= b.max_samples
    assert (tokens[b.members] + extra).max() <= b.max_tokens
    assert b.batch_size % multiple == 0 and b.batch_size >= multiple
    if b.batch_size > multiple:  # The minimum batch may exceed a budget.
      assert b.batch_size * b.max_samples <= audio_budget * RATE
      assert b.batch_size * b.max_tokens <= token_budget
  # Every planned batch has its bucket's batch size and only its members.
  for remainder in bk.REMAINDER_MODES:
    plan = bk.plan_epoch(buckets, seed=1, epoch=2, remainder=remainder)
    seen = []
    for index, rows in plan:
      bucket = buckets[index]
      assert len(rows) == bucket.batch_size
      real = rows[rows != bk.EMPTY_ROW]
      assert np.isin(real, bucket.members).all()
      seen += real.tolist()
    if remainder == "drop":
      assert len(seen) == len(set(seen))
    elif remainder == "pad":
      assert sorted(seen) == list(range(n))
    else:
      assert set(seen) == set(range(n))
      assert all((rows != bk.EMPTY_ROW).all() for _, rows in plan)


def test_equal_total_bins():
  values = np.random.default_rng(0).lognormal(1.0, 0.6, 5000)
  bins = bk.equal_total_bins(values, 8)
  totals = np.bincount(bins, weights=values)
  assert len(totals) == 8
  np.testing.assert_allclose(totals, values.sum() / 8, rtol=0.05)
  # Bins are value ranges, increasing with the bin id.
  maxima = [values[bins == b].max() for b in range(8)]
  minima = [values[bins == b].min() for b in range(8)]
  assert all(hi <= lo for hi, lo in zip(maxima[:-1], minima[1:]))
  assert (bk.equal_total_bins(values, 1) == 0).all()


def test_equal_total_bins_merges_outliers():
  values = np.array([24] * 50 + [32] * 30 + [40])
  bins = bk.equal_total_bins(values, 4)
  assert bins.max() == 1 and bins[-1] == bins[-2]  # The lone 40 is merged down.


def _padding(padded, real, bins):
  return sum((bins == b).sum() * padded[bins == b].max() - real[bins == b].sum()
             for b in np.unique(bins))


@hypothesis.given(real=st.lists(st.integers(1, 60), min_size=1, max_size=12),
                  num_bins=st.integers(1, 4))
@hypothesis.settings(max_examples=100, deadline=None)
def test_min_padding_bins_is_optimal(real, num_bins):
  real = np.array(real)
  padded = bk.round_up(real, 8)
  bins = bk.min_padding_bins(padded, real, num_bins)
  order = np.argsort(padded, kind="stable")
  assert (np.diff(bins[order]) >= 0).all() and len(np.unique(bins)) <= num_bins
  values = np.unique(padded)
  best = min(  # Brute force over every set of cuts between distinct values.
      _padding(padded, real, np.searchsorted(values[list(cuts)], padded, "right"))
      for n in range(min(num_bins, len(values)))
      for cuts in itertools.combinations(range(1, len(values)), n))
  assert _padding(padded, real, bins) == best


def test_plan_is_seeded_per_epoch():
  samples, tokens = _lengths(500)
  buckets = bk.make_buckets(samples, tokens, num_duration_bins=4,
                            num_token_bins=2, sample_rate=RATE,
                            audio_seconds_per_batch=60, tokens_per_batch=2048)
  same = [bk.plan_epoch(buckets, seed=3, epoch=1) for _ in range(2)]
  other_epoch = bk.plan_epoch(buckets, seed=3, epoch=2)
  other_seed = bk.plan_epoch(buckets, seed=4, epoch=1)
  flat = lambda plan: np.concatenate([rows for _, rows in plan]).tolist()
  assert flat(same[0]) == flat(same[1])
  assert flat(same[0]) != flat(other_epoch) and flat(same[0]) != flat(other_seed)
  assert len(other_epoch) == len(same[0]) == sum(b.num_batches() for b in buckets)
  ordered = bk.plan_epoch(buckets, seed=3, epoch=1, shuffle=False)
  assert [i for i, _ in ordered] == sorted(i for i, _ in ordered)


def test_overrides(tmp_path):
  samples, tokens = _lengths(400)
  kw = dict(num_duration_bins=3, num_token_bins=1, sample_rate=RATE,
            audio_seconds_per_batch=60, tokens_per_batch=4096)
  buckets = bk.make_buckets(samples, tokens, **kw)
  key = buckets[1].shape_key
  path = tmp_path / "bs.json"
  path.write_text(json.dumps({"batch_sizes": {key: 3}}))
  overrides = bk.load_batch_size_overrides(path)
  again = bk.make_buckets(samples, tokens, batch_size_overrides=overrides, **kw)
  assert again[1].batch_size == 3
  assert [b.batch_size for b in again[::2]] == [b.batch_size for b in buckets[::2]]
  with pytest.raises(ValueError, match="not a multiple"):
    bk.make_buckets(samples, tokens, batch_size_overrides={key: 3},
                    batch_size_multiple=2, **kw)
  path.write_text(json.dumps({key: -1}))
  with pytest.raises(ValueError, match="bs.json"):
    bk.load_batch_size_overrides(path)


def test_padding_stats_hand_example():
  samples = np.array([100, 50, 80])
  tokens = np.array([8, 4, 2])
  stats = bk.padding_stats([[0, 1], [2, bk.EMPTY_ROW]], [(100, 8), (80, 8)],
                           samples, tokens)
  assert stats["audio_padding"] == pytest.approx(1 - 230 / 360)
  assert stats["token_padding"] == pytest.approx(1 - 14 / 32)
  assert stats["empty_rows"] == 0.25 and stats["num_shapes"] == 2


def test_two_d_bucketing_pads_far_less_than_random():
  samples, tokens = _lengths(20000)
  # The padding inside a duration bin falls with the number of bins.
  two_d = bk.make_buckets(samples, tokens, num_duration_bins=40,
                          num_token_bins=2, sample_rate=RATE,
                          audio_seconds_per_batch=160, tokens_per_batch=4096,
                          audio_pad_multiple=1280, text_pad_extra=0)
  min_padding = bk.make_buckets(samples, tokens, num_duration_bins=24,
                                num_token_bins=2, sample_rate=RATE,
                                audio_seconds_per_batch=160,
                                tokens_per_batch=4096, audio_pad_multiple=1280,
                                binning="min_padding")
  random = bk.make_random_bucket(samples, tokens, batch_size=32,
                                 audio_pad_multiple=1280)
  stats = {}
  for name, buckets in [("2d", two_d), ("2d_dp", min_padding),
                        ("random", random)]:
    plan = bk.plan_epoch(buckets, seed=0, epoch=0)
    stats[name] = bk.plan_padding_stats(buckets, plan, samples, tokens)
  assert stats["2d"]["audio_padding"] < 0.05
  assert stats["random"]["audio_padding"] > 0.40
  assert stats["2d"]["num_shapes"] <= 80
  # Minimum-padding cuts reach it with fewer bins, hence fewer shapes.
  assert stats["2d_dp"]["audio_padding"] < 0.05
  assert stats["2d_dp"]["num_shapes"] <= 48
  with pytest.raises(ValueError, match="binning"):
    bk.make_buckets(samples, tokens, num_duration_bins=2, num_token_bins=1,
                    sample_rate=RATE, audio_seconds_per_batch=10,
                    tokens_per_batch=100, binning="best")
