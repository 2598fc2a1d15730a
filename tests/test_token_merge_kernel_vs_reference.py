"""Token-merging kernels (interpret mode) vs the pure-JAX reference.

Keys are small integers, so dot products and squared norms are exact and the
cosine (one sqrt per norm, one multiply, one divide) rounds identically in
every implementation: the merge plan (group_index, merged_valid) must match
exactly, ties included.  Merged values are float32 sums in a different order
(kernel: one-hot matmul per block; reference: segment_sum), compared at
float32 rounding level, or at one bfloat16 ulp for bfloat16 outputs.

With a per-row ``quota`` (FastAdaSP's tiered selection) the reference must
equal a brute-force oracle, and the kernels must equal the reference, under the
same rules.  (The reference is also the model's merge with kernels off,
``mtp_jax.model.reduction_ops``.)
"""
import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import dispatch
from pallas_kernels import token_merge as tm

_SETTINGS = dict(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_CONFIGS = {
    "gpu": dict(platform="gpu", block_groups=16, block_tokens=16, block_d=16,
                block_k=16),
    "tpu": dict(platform="tpu", block_groups=8),
}


def _inputs(rng, b, n_tok, d, dk, dtype, lengths=None):
  x = jnp.asarray(rng.normal(size=(b, n_tok, d)), dtype)
  keys = jnp.asarray(rng.integers(-2, 3, (b, n_tok, dk)), dtype)
  weights = rng.uniform(0.0, 2.0, (b, n_tok)) * (rng.uniform(size=(b, n_tok)) > 0.3)
  weights[rng.uniform(size=b) < 0.2] = 0.0  # Some rows with all-zero weights.
  if lengths is None:
    lengths = rng.integers(0, n_tok + 1, b)
  valid = np.arange(n_tok)[None] < np.asarray(lengths)[:, None]
  positions = np.arange(n_tok)[None] + rng.integers(0, 100, (b, 1))
  return (x, keys, jnp.asarray(weights, jnp.float32), jnp.asarray(valid),
          jnp.asarray(positions, jnp.float32))


def _numpy_merge(x, keys, weights, valid, n, positions, quota=None):
  """Brute force: explicit sorted edge list, group walk, float64 means.

  With ``quota``: tier A = the quota[b] best valid-valid edges by an explicit
  sort, then padding-padding, boundary, remaining valid-valid (module doc).
  """
  x = np.asarray(x, np.float64)
  k = np.asarray(keys, np.float32)
  weights, valid = np.asarray(weights, np.float64), np.asarray(valid)
  positions = np.asarray(positions, np.float64)
  b, n_tok, d = x.shape
  g_total = n_tok - n
  out = np.zeros((b, g_total, d))
  out_valid = np.zeros((b, g_total), bool)
  out_w = np.zeros((b, g_total))
  out_pos = np.zeros((b, g_total))
  gid = np.zeros((b, n_tok), np.int64)
  eps2 = np.float32(tm.EPS * tm.EPS)
  for row in range(b):
    edges = []
    for i in range(n_tok - 1):
      va, vb = valid[row, i], valid[row, i + 1]
      if va and vb:
        ka, kb = k[row, i], k[row, i + 1]
        # float32 math in the reference's order (exact dot/norms here).
        dot = np.float32(np.dot(ka.astype(np.float64), kb))
        den = (np.sqrt(np.maximum(np.float32(np.dot(ka, ka)), eps2)) *
               np.sqrt(np.maximum(np.float32(np.dot(kb, kb)), eps2)))
        prio = float(min(max(np.float32(dot / den), -1.0), 1.0))
      elif va or vb:
        prio = tm.BOUNDARY_PRIORITY
      else:
        prio = tm.PAD_PAD_PRIORITY
      edges.append((-prio, i))
    if quota is None:
      chosen = {i for _, i in sorted(edges)[:n]}
    else:
      q = min(max(int(quota[row]), 0), n)
      pair = [(p, i) for p, i in edges if valid[row, i] and valid[row, i + 1]]
      chosen = {i for _, i in sorted(pair)[:q]}
      tier = {tm.PAD_PAD_PRIORITY: -3.0, tm.BOUNDARY_PRIORITY: -2.0}
      rest = sorted((tier.get(-p, p), i) for p, i in edges if i not in chosen)
      chosen |= {i for _, i in rest[:n - len(chosen)]}
    assert len(chosen) == n
    groups, current = [], [0]
    for j in range(1, n_tok):
      if j - 1 in chosen:
        current.append(j)
      else:
        groups.append(current)
        current = [j]
    groups.append(current)
    assert len(groups) == g_total
    for g, members in enumerate(groups):
      gid[row, members] = g
      vm = [j for j in members if valid[row, j]]
      wsum = sum(weights[row, j] for j in vm)
      if wsum > 0:
        coef = {j: weights[row, j] / wsum for j in vm}
      elif vm:
        coef = {j: 1.0 / len(vm) for j in vm}
      else:
        coef = {j: 1.0 / len(members) for j in members}
      out[row, g] = sum(c * x[row, j] for j, c in coef.items())
      out_pos[row, g] = sum(c * positions[row, j] for j, c in coef.items())
      out_valid[row, g] = bool(vm)
      out_w[row, g] = wsum
  return out, out_valid, out_w, gid, out_pos


def _assert_plan_equal(out, ref):
  np.testing.assert_array_equal(out.group_index, ref.group_index)
  np.testing.assert_array_equal(out.merged_valid, ref.merged_valid)
  assert out.group_index.dtype == jnp.int32
  assert out.merged_valid.dtype == jnp.bool_


def _assert_values_close(out, ref, dtype):
  assert out.merged.dtype == ref.merged.dtype == dtype
  if dtype == jnp.bfloat16:
    # Both round a float32 value to bfloat16: at most one ulp (2**-7 rel).
    rtol, atol = 2.0**-7, 1e-6
  else:
    rtol, atol = 1e-5, 1e-6
  np.testing.assert_allclose(np.asarray(out.merged, np.float32),
                             np.asarray(ref.merged, np.float32),
                             rtol=rtol, atol=atol)
  np.testing.assert_allclose(out.merged_weights, ref.merged_weights,
                             rtol=1e-5, atol=1e-6)
  if ref.merged_positions is not None:
    np.testing.assert_allclose(out.merged_positions, ref.merged_positions,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@hypothesis.settings(max_examples=4, **_SETTINGS)
@hypothesis.given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 5),
    n_tok=st.integers(2, 70),
    frac=st.floats(0.0, 1.0),
    d=st.sampled_from([8, 24, 40]),
    dk=st.sampled_from([4, 20]),
    dtype=st.sampled_from(sorted(_DTYPES)),
    with_positions=st.booleans(),
)
def test_kernel_matches_reference(platform, seed, b, n_tok, frac, d, dk, dtype,
                                  with_positions):
  n = int(round(frac * (n_tok - 1)))
  rng = np.random.default_rng(seed)
  x, keys, weights, valid, pos = _inputs(rng, b, n_tok, d, dk, _DTYPES[dtype])
  pos = pos if with_positions else None
  ref = tm.merge_reference(x, keys, weights, valid, n, pos)
  out = tm.merge_kernel(x, keys, weights, valid, n, pos, interpret=True,
                        **_CONFIGS[platform])
  _assert_plan_equal(out, ref)
  _assert_values_close(out, ref, _DTYPES[dtype])
  assert (out.merged_positions is None) == (pos is None)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_kernel_default_blocks(platform):
  rng = np.random.default_rng(3)
  x, keys, weights, valid, pos = _inputs(rng, 3, 100, 64, 16, jnp.float32,
                                         lengths=[100, 61, 5])
  ref = tm.merge_reference(x, keys, weights, valid, 30, pos)
  out = tm.merge_kernel(x, keys, weights, valid, 30, pos, platform=platform,
                        interpret=True)
  _assert_plan_equal(out, ref)
  _assert_values_close(out, ref, jnp.float32)


@hypothesis.settings(max_examples=12, **_SETTINGS)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), b=st.sampled_from([1, 3]),
                  n_tok=st.sampled_from([1, 2, 9, 24]),
                  frac=st.sampled_from([0.0, 0.3, 0.6, 1.0]))
def test_reference_matches_numpy(seed, b, n_tok, frac):
  # Few distinct static shapes (compile reuse); data is fresh per example.
  n = int(round(frac * (n_tok - 1)))
  rng = np.random.default_rng(seed)
  x, keys, weights, valid, pos = _inputs(rng, b, n_tok, 6, 3, jnp.float32)
  ref = tm.merge_reference(x, keys, weights, valid, n, pos)
  merged, m_valid, m_w, gid, m_pos = _numpy_merge(x, keys, weights, valid, n,
                                                  pos)
  np.testing.assert_array_equal(ref.group_index, gid)
  np.testing.assert_array_equal(ref.merged_valid, m_valid)
  np.testing.assert_allclose(ref.merged, merged, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ref.merged_weights, m_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ref.merged_positions, m_pos, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(
      tm.merge_positions(ref.group_index, weights, valid, pos, n_tok - n),
      ref.merged_positions, rtol=1e-6)


def test_reference_by_hand():
  # Keys: tokens 0,1 identical direction, 2,3 identical, 1-2 orthogonal.
  keys = jnp.asarray([[[1, 0], [2, 0], [0, 1], [0, 3], [1, 1], [5, 5]]],
                     jnp.float32)
  x = jnp.asarray([[[1.0], [3.0], [10.0], [20.0], [7.0], [100.0]]])
  weights = jnp.asarray([[1.0, 3.0, 0.0, 0.0, 2.0, 9.0]])
  valid = jnp.asarray([[True, True, True, True, True, False]])
  # Edges: (0,1) cos 1, (1,2) 0, (2,3) 1, (3,4) 0.707, (4,5) boundary.
  out = tm.merge_reference(x, keys, weights, valid, 2)
  np.testing.assert_array_equal(out.group_index, [[0, 0, 1, 1, 2, 3]])
  # Group 0: (1*1 + 3*3)/4; group 1: zero weights -> mean; pad stays alone.
  np.testing.assert_allclose(out.merged[0, :, 0], [2.5, 15.0, 7.0, 100.0])
  np.testing.assert_array_equal(out.merged_valid, [[True, True, True, False]])
  np.testing.assert_allclose(out.merged_weights, [[4.0, 0.0, 2.0, 0.0]])


def test_padding_rules_by_hand():
  """Few valid tokens: valid merge first, then padding from the left."""
  keys = jnp.ones((1, 6, 2), jnp.float32)
  x = jnp.arange(6, dtype=jnp.float32).reshape(1, 6, 1)
  weights = jnp.asarray([[1.0, 3.0, 5.0, 5.0, 5.0, 5.0]])
  valid = jnp.asarray([[True, True, False, False, False, False]])
  expect = {
      1: ([0, 0, 1, 2, 3, 4], [0.75, 2, 3, 4, 5]),
      2: ([0, 0, 1, 1, 2, 3], [0.75, 2.5, 4, 5]),
      4: ([0, 0, 1, 1, 1, 1], [0.75, 3.5]),
      # n = N-1 needs the boundary edge: padding is excluded from the mean.
      5: ([0, 0, 0, 0, 0, 0], [0.75]),
  }
  kernel = functools.partial(tm.merge_kernel, interpret=True,
                             **_CONFIGS["gpu"])
  for n, (gid, merged) in expect.items():
    for fn in (tm.merge_reference,) + ((kernel,) if n in (2, 5) else ()):
      out = fn(x, keys, weights, valid, n)
      np.testing.assert_array_equal(out.group_index[0], gid)
      np.testing.assert_allclose(out.merged[0, :, 0], merged, rtol=1e-6)
      np.testing.assert_array_equal(out.merged_valid[0],
                                    [True] + [False] * (5 - n))
      np.testing.assert_allclose(out.merged_weights[0],
                                 [4.0] + [0.0] * (5 - n))


def _quota_case(rng, b, n_tok, n):
  """Row lengths (a full row, a short padded row, random) and quotas in [0, n]
  (n and 0 included when b >= 2)."""
  lengths = rng.integers(0, n_tok + 1, b)
  lengths[0] = n_tok
  if b >= 3:
    lengths[1] = rng.integers(0, 4)
  quota = rng.integers(0, n + 1, b)
  quota[0] = n
  if b >= 2:
    quota[-1] = 0
  return lengths, jnp.asarray(quota, jnp.int32)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@hypothesis.settings(max_examples=4, **_SETTINGS)
@hypothesis.given(
    seed=st.integers(0, 2**31 - 1),
    b=st.sampled_from([3, 5]),
    n_tok=st.sampled_from([23, 37]),
    frac=st.sampled_from([0.3, 0.7, 1.0]),
    dtype=st.sampled_from(sorted(_DTYPES)),
)
def test_kernel_matches_reference_with_quota(platform, seed, b, n_tok, frac,
                                             dtype):
  # Odd B, N not a multiple of any block; fresh data every example.
  n = int(round(frac * (n_tok - 1)))
  rng = np.random.default_rng(seed)
  lengths, quota = _quota_case(rng, b, n_tok, n)
  x, keys, weights, valid, pos = _inputs(rng, b, n_tok, 24, 20, _DTYPES[dtype],
                                         lengths=lengths)
  ref = tm.merge_reference(x, keys, weights, valid, n, pos, quota)
  out = tm.merge_kernel(x, keys, weights, valid, n, pos, quota, interpret=True,
                        **_CONFIGS[platform])
  _assert_plan_equal(out, ref)
  _assert_values_close(out, ref, _DTYPES[dtype])
  assert out.merged_positions.dtype == jnp.float32


@hypothesis.settings(max_examples=10, **_SETTINGS)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), b=st.sampled_from([1, 3]),
                  n_tok=st.sampled_from([2, 9, 24]),
                  frac=st.sampled_from([0.0, 0.4, 1.0]),
                  integer_keys=st.booleans())
def test_reference_with_quota_matches_numpy(seed, b, n_tok, frac,
                                                          integer_keys):
  n = int(round(frac * (n_tok - 1)))
  rng = np.random.default_rng(seed)
  lengths, quota = _quota_case(rng, b, n_tok, n)
  x, keys, weights, valid, pos = _inputs(rng, b, n_tok, 6, 3, jnp.float32,
                                         lengths=lengths)
  if not integer_keys:
    keys = jnp.asarray(rng.normal(size=keys.shape), jnp.float32)
  ref = tm.merge_reference(x, keys, weights, valid, n, pos, quota)
  merged, m_valid, m_w, gid, m_pos = _numpy_merge(x, keys, weights, valid, n,
                                                  pos, np.asarray(quota))
  np.testing.assert_array_equal(ref.group_index, gid)
  np.testing.assert_array_equal(ref.merged_valid, m_valid)
  np.testing.assert_allclose(ref.merged, merged, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ref.merged_weights, m_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ref.merged_positions, m_pos, rtol=1e-5, atol=1e-4)
  # A full quota (every row n) selects exactly what quota=None selects.
  full = tm.merge_reference(x, keys, weights, valid, n, pos,
                            jnp.full((b,), n, jnp.int32))
  plain = tm.merge_reference(x, keys, weights, valid, n, pos)
  for a, c in zip(full, plain):
    np.testing.assert_array_equal(a, c)


def test_quota_tiers_by_hand():
  """4 valid tokens + 4 padding, n = 4: the quota decides the valid merges."""
  # Valid edges: e0 cos 1, e1 cos 0, e2 cos 0.707; e3 boundary; e4-e6 pad-pad.
  keys = jnp.asarray([[[1, 0], [1, 0], [0, 1], [1, 1]] + [[1, 0]] * 4] * 4,
                     jnp.float32)
  x = jnp.arange(32, dtype=jnp.float32).reshape(4, 8, 1)
  weights = jnp.ones((4, 8))
  valid = jnp.asarray([[True] * 4 + [False] * 4] * 4)
  quota = jnp.asarray([1, 0, 3, 4], jnp.int32)
  expect = [[0, 0, 1, 2, 3, 3, 3, 3],   # A = {e0}, then all pad-pad.
            [0, 1, 2, 3, 3, 3, 3, 3],   # pad-pad, then the boundary e3.
            [0, 0, 0, 0, 1, 1, 2, 3],   # A = every valid edge, then e4.
            [0, 0, 0, 0, 1, 1, 2, 3]]   # quota > #valid edges: as quota=None.
  kernels = [functools.partial(tm.merge_kernel, interpret=True, **_CONFIGS[p])
             for p in ("gpu", "tpu")]
  plain = tm.merge_reference(x, keys, weights, valid, 4)
  np.testing.assert_array_equal(plain.group_index[0], expect[3])
  for fn in [tm.merge_reference] + kernels:
    out = fn(x, keys, weights, valid, 4, None, quota)
    np.testing.assert_array_equal(out.group_index, expect)
    np.testing.assert_array_equal(out.merged_valid.sum(1), 4 - np.minimum(quota, 3))
    # Row 1's last group holds valid token 3 and padding: padding is left out.
    assert float(out.merged[1, 3, 0]) == 11.0


def test_dispatch():
  rng = np.random.default_rng(5)
  x, keys, weights, valid, pos = _inputs(rng, 2, 20, 8, 4, jnp.float32)
  ref = tm.merge_reference(x, keys, weights, valid, 6, pos)
  out = dispatch.merge_tokens(x, keys, weights, valid, 6, positions=pos,
                              use_kernel=False)
  np.testing.assert_array_equal(out.merged, ref.merged)
  if jax.default_backend() == "cpu":
    with pytest.raises(ValueError, match="interpret=True"):
      dispatch.merge_tokens(x, keys, weights, valid, 6, use_kernel=True)
  out = dispatch.merge_tokens(x, keys, weights, valid, 6, positions=pos,
                              use_kernel=True, interpret=True)
  _assert_plan_equal(out, ref)
  _assert_values_close(out, ref, jnp.float32)
  quota = jnp.asarray([2, 0], jnp.int32)
  ref = tm.merge_reference(x, keys, weights, valid, 6, pos, quota)
  out = dispatch.merge_tokens(x, keys, weights, valid, 6, positions=pos,
                              quota=quota, use_kernel=False)
  np.testing.assert_array_equal(out.group_index, ref.group_index)
  np.testing.assert_array_equal(out.merged, ref.merged)
  out = dispatch.merge_tokens(x, keys, weights, valid, 6, positions=pos,
                              quota=quota, use_kernel=True, interpret=True)
  _assert_plan_equal(out, ref)
  _assert_values_close(out, ref, jnp.float32)


def test_bad_inputs():
  x = jnp.zeros((2, 10, 4))
  keys = jnp.zeros((2, 10, 3))
  w = jnp.zeros((2, 10))
  v = jnp.ones((2, 10), bool)
  cases = [
      ((jnp.zeros((2, 10)), keys, w, v, 3), "x must be"),
      ((x, jnp.zeros((2, 9, 3)), w, v, 3), "keys must be"),
      ((x, keys, jnp.zeros((2, 9)), v, 3), "weights must be"),
      ((x, keys, w, jnp.ones((2, 10)), 3), "valid must be bool"),
      ((x, keys, w, v, 10), "n must be in"),
      ((x, keys, w, v, -1), "n must be in"),
      ((x.astype(jnp.int32), keys, w, v, 3), "x must be floating"),
  ]
  for args, match in cases:
    for fn in (tm.merge_reference, tm.merge_kernel):
      with pytest.raises(ValueError, match=match):
        fn(*args)
  with pytest.raises(ValueError, match="positions must be"):
    tm.merge_reference(x, keys, w, v, 3, jnp.zeros((2, 3)))
  for fn in (tm.merge_reference, tm.merge_kernel):
    with pytest.raises(ValueError, match="quota must be \\[B=2\\]"):
      fn(x, keys, w, v, 3, None, jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match="quota must be integer"):
      fn(x, keys, w, v, 3, None, jnp.zeros((2,), jnp.float32))
  with pytest.raises(ValueError, match="block_groups must be a power of two"):
    tm.merge_kernel(x, keys, w, v, 3, platform="gpu", block_groups=24,
                    interpret=True)


@pytest.mark.parametrize("platform, lowering", [("gpu", "cuda"), ("tpu", "tpu")])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("with_quota", [False, True])
def test_kernel_lowers_for_hardware(platform, lowering, dtype, with_quota):
  """Triton / Mosaic lowering succeeds at benchmark shapes (no execution)."""
  b, n_tok, n = 4, 750, 225

  def fn(x, keys, weights, valid, positions, quota):
    return tm.merge_kernel(x, keys, weights, valid, n, positions,
                           quota if with_quota else None, platform=platform)

  args = (jax.ShapeDtypeStruct((b, n_tok, 768), dtype),
          jax.ShapeDtypeStruct((b, n_tok, 64), dtype),
          jax.ShapeDtypeStruct((b, n_tok), jnp.float32),
          jax.ShapeDtypeStruct((b, n_tok), jnp.bool_),
          jax.ShapeDtypeStruct((b, n_tok), jnp.float32),
          jax.ShapeDtypeStruct((b,), jnp.int32))
  text = jax.jit(fn).trace(*args).lower(lowering_platforms=(lowering,)).as_text()
  assert ("tpu_custom_call" if platform == "tpu" else "triton") in text


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_kernel_larger_shapes(platform):
  rng = np.random.default_rng(11)
  x, keys, weights, valid, pos = _inputs(rng, 3, 250, 128, 64, jnp.bfloat16,
                                         lengths=[250, 177, 40])
  ref = tm.merge_reference(x, keys, weights, valid, 75, pos)
  out = tm.merge_kernel(x, keys, weights, valid, 75, pos, platform=platform,
                        interpret=True)
  _assert_plan_equal(out, ref)
  _assert_values_close(out, ref, jnp.bfloat16)
