"""Fused verification kernel (interpret mode) vs the pure-JAX reference.

Exactness: the "dyadic" inputs are small multiples of 1/4 and 1/2, so every
logit is exactly representable and any summation order gives the same
float32 value.  argmax / accepted / correction must then match exactly,
including ties (lowest id wins).  With Gaussian inputs the kernel's tiles sum
in a different order, so we require exact equality only where the float64
top-1/top-2 gap is far above float32 rounding, and elsewhere that the chosen
token's exact logit is within that rounding bound of the maximum.
"""
import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import dispatch
from pallas_kernels import verify

_SETTINGS = dict(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Tile configs that leave a vocab tail; GPU also uses >1 vocab split.
_CONFIGS = {
    "gpu": dict(platform="gpu", block_v=64, block_d=16, num_v_splits=2),
    "tpu": dict(platform="tpu", block_v=128),
}


def _dyadic_inputs(rng, b, k, d, v, dtype):
  """Exactly representable inputs with many exact ties in the logits.

  A third of the vocab columns are copies of other columns, so the row
  maximum is often shared by tokens in different tiles / vocab splits.
  """
  h = rng.integers(-4, 5, (b, k + 1, d)) * 0.25
  w = rng.integers(-4, 5, (d, v)) * 0.5
  perm = rng.permutation(v)
  copies = v // 3
  w[:, perm[:copies]] = w[:, perm[copies:2 * copies]]
  return jnp.asarray(h, dtype), jnp.asarray(w, dtype)


def _drafts_with_all_lengths(rng, argmax, v):
  """Drafts accepting a random prefix length in [0, K] for every row."""
  argmax = np.asarray(argmax)
  b, k1 = argmax.shape
  k = k1 - 1
  drafts = rng.integers(0, v, (b, k))
  for row in range(b):
    keep = rng.integers(0, k + 1)
    drafts[row, :keep] = argmax[row, :keep]
    if keep < k:  # Guaranteed mismatch right after the accepted prefix.
      drafts[row, keep] = (argmax[row, keep] + 1 + rng.integers(0, v - 1)) % v
  return jnp.asarray(drafts, jnp.int32)


def _numpy_verify(h, w, drafts):
  """Brute force in float64: argmax (first max), accepted, correction, p."""
  logits = np.einsum("bkd,dv->bkv", np.asarray(h, np.float64),
                     np.asarray(w, np.float64))
  argmax = logits.argmax(-1)
  drafts = np.asarray(drafts)
  b, k = drafts.shape
  accepted = np.zeros(b, np.int64)
  for row in range(b):
    while accepted[row] < k and drafts[row, accepted[row]] == argmax[row, accepted[row]]:
      accepted[row] += 1
  correction = argmax[np.arange(b), accepted]
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return logits, argmax, accepted, correction, 1.0 / p.sum(-1)


def _assert_same(out, ref):
  np.testing.assert_array_equal(out.argmax, ref.argmax)
  np.testing.assert_array_equal(out.accepted, ref.accepted)
  np.testing.assert_array_equal(out.correction, ref.correction)
  assert out.argmax.dtype == out.accepted.dtype == out.correction.dtype == jnp.int32


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@hypothesis.settings(max_examples=5, **_SETTINGS)
@hypothesis.given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 5),
    k=st.integers(1, 8),
    d=st.sampled_from([16, 24, 40]),
    v=st.integers(65, 400).filter(lambda v: v % 64),
    dtype=st.sampled_from(sorted(_DTYPES)),
)
def test_kernel_matches_reference_exactly(platform, seed, b, k, d, v, dtype):
  rng = np.random.default_rng(seed)
  h, w = _dyadic_inputs(rng, b, k, d, v, _DTYPES[dtype])
  first = verify.verify_reference(h, w, jnp.zeros((b, k), jnp.int32))
  drafts = _drafts_with_all_lengths(rng, first.argmax, v)
  ref = verify.verify_reference(h, w, drafts, return_max_prob=True)
  out = verify.verify_kernel(h, w, drafts, return_max_prob=True,
                             interpret=True, **_CONFIGS[platform])
  _assert_same(out, ref)
  # Same exact logits; only the order of the exp-sum differs (float32).
  np.testing.assert_allclose(out.max_prob, ref.max_prob, rtol=1e-5)


@hypothesis.settings(max_examples=4, **_SETTINGS)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 4),
                  k=st.integers(1, 8), v=st.integers(100, 300),
                  dtype=st.sampled_from(sorted(_DTYPES)))
def test_kernel_gaussian_inputs(seed, b, k, v, dtype):
  d = 32
  rng = np.random.default_rng(seed)
  h = jnp.asarray(rng.normal(size=(b, k + 1, d)), _DTYPES[dtype])
  w = jnp.asarray(rng.normal(size=(d, v)) / np.sqrt(d), _DTYPES[dtype])
  drafts = jnp.asarray(rng.integers(0, v, (b, k)), jnp.int32)
  out = verify.verify_kernel(h, w, drafts, interpret=True, **_CONFIGS["gpu"])
  logits = _numpy_verify(h, w, drafts)[0]  # Exact (float64) logits.
  # float32 accumulation error bound of a length-d dot product.
  bound = d * 2.0**-23 * np.einsum("bkd,dv->bkv", np.abs(np.asarray(h, np.float64)),
                                   np.abs(np.asarray(w, np.float64))).max()
  top2 = np.sort(logits, axis=-1)[..., -2:]
  chosen = np.take_along_axis(logits, np.asarray(out.argmax)[..., None], -1)[..., 0]
  assert np.all(chosen >= top2[..., 1] - 2 * bound)
  clear = top2[..., 1] - top2[..., 0] > 2 * bound
  np.testing.assert_array_equal(np.asarray(out.argmax)[clear],
                                logits.argmax(-1)[clear])
  accepted, correction = verify.acceptance(out.argmax, drafts)
  np.testing.assert_array_equal(out.accepted, accepted)
  np.testing.assert_array_equal(out.correction, correction)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_kernel_default_tiles_and_one_tile_vocab(platform):
  """Default block sizes; V smaller than one tile; K = 1; B = 1."""
  rng = np.random.default_rng(0)
  for b, k, d, v in [(1, 1, 16, 37), (3, 2, 64, 1000)]:
    h, w = _dyadic_inputs(rng, b, k, d, v, jnp.float32)
    drafts = jnp.asarray(rng.integers(0, v, (b, k)), jnp.int32)
    ref = verify.verify_reference(h, w, drafts)
    out = verify.verify_kernel(h, w, drafts, platform=platform, interpret=True)
    _assert_same(out, ref)
    assert out.max_prob is None


@hypothesis.settings(max_examples=15, **_SETTINGS)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), b=st.sampled_from([1, 3]),
                  k=st.sampled_from([1, 4, 8]), v=st.sampled_from([2, 7, 50]))
def test_reference_matches_numpy(seed, b, k, v):
  # Few distinct static shapes (compile reuse); data is fresh per example.
  rng = np.random.default_rng(seed)
  h, w = _dyadic_inputs(rng, b, k, 8, v, jnp.float32)
  first = verify.verify_reference(h, w, jnp.zeros((b, k), jnp.int32))
  drafts = _drafts_with_all_lengths(rng, first.argmax, v)
  ref = verify.verify_reference(h, w, drafts, return_max_prob=True)
  _, argmax, accepted, correction, max_prob = _numpy_verify(h, w, drafts)
  np.testing.assert_array_equal(ref.argmax, argmax)
  np.testing.assert_array_equal(ref.accepted, accepted)
  np.testing.assert_array_equal(ref.correction, correction)
  np.testing.assert_allclose(ref.max_prob, max_prob, rtol=1e-6)


def test_reference_ties_and_acceptance_by_hand():
  # Row 0 logits [1, 3, 3] (tie -> 1), row 1 [2, 0, 2] (tie -> 0).
  w = jnp.eye(3, dtype=jnp.float32)
  h = jnp.asarray([[[1, 3, 3], [5, 0, 0], [0, 0, 7]],
                   [[2, 0, 2], [0, 4, 1], [9, 9, 9]]], jnp.float32)
  drafts = jnp.asarray([[1, 0], [0, 2]], jnp.int32)
  for fn in (verify.verify_reference,
             functools.partial(verify.verify_kernel, interpret=True,
                               **_CONFIGS["gpu"])):
    out = fn(h, w, drafts)
    np.testing.assert_array_equal(out.argmax, [[1, 0, 2], [0, 1, 0]])
    np.testing.assert_array_equal(out.accepted, [2, 1])
    np.testing.assert_array_equal(out.correction, [2, 1])


def test_dispatch():
  rng = np.random.default_rng(1)
  h, w = _dyadic_inputs(rng, 3, 4, 16, 100, jnp.float32)
  drafts = jnp.asarray(rng.integers(0, 100, (3, 4)), jnp.int32)
  ref = verify.verify_reference(h, w, drafts)
  _assert_same(dispatch.fused_verify(h, w, drafts, use_kernel=False), ref)
  if jax.default_backend() == "cpu":
    _assert_same(dispatch.fused_verify(h, w, drafts), ref)  # Auto -> ref.
    with pytest.raises(ValueError, match="interpret=True"):
      dispatch.fused_verify(h, w, drafts, use_kernel=True)
  _assert_same(dispatch.fused_verify(h, w, drafts, use_kernel=True,
                                     interpret=True), ref)


@pytest.mark.parametrize("args, match", [
    (((2, 5, 16), (16, 50), (2, 4)), None),
    (((2, 5), (16, 50), (2, 4)), "h must be"),
    (((2, 5, 16), (8, 50), (2, 4)), "w must be"),
    (((2, 5, 16), (16, 50), (2, 3)), "drafts must be"),
    (((2, 1, 16), (16, 50), (2, 0)), "K\\+1 >= 2"),
])
def test_bad_shapes(args, match):
  hs, ws, ds = args
  h, w = jnp.zeros(hs, jnp.float32), jnp.zeros(ws, jnp.float32)
  drafts = jnp.zeros(ds, jnp.int32)
  if match is None:
    verify.verify_reference(h, w, drafts)
    return
  for fn in (verify.verify_reference, verify.verify_kernel):
    with pytest.raises(ValueError, match=match):
      fn(h, w, drafts)


def test_bad_dtypes_and_blocks():
  h = jnp.zeros((2, 3, 16), jnp.float32)
  with pytest.raises(ValueError, match="w dtype"):
    verify.verify_kernel(h, jnp.zeros((16, 40), jnp.bfloat16),
                         jnp.zeros((2, 2), jnp.int32))
  with pytest.raises(ValueError, match="drafts must be an integer"):
    verify.verify_reference(h, jnp.zeros((16, 40)), jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match="block_v must be a power of two"):
    verify.verify_kernel(h, jnp.zeros((16, 40)), jnp.zeros((2, 2), jnp.int32),
                         platform="gpu", block_v=48, interpret=True)
  with pytest.raises(ValueError, match="multiple of 128"):
    verify.verify_kernel(h, jnp.zeros((16, 40)), jnp.zeros((2, 2), jnp.int32),
                         platform="tpu", block_v=64, interpret=True)


@pytest.mark.parametrize("platform, lowering", [("gpu", "cuda"), ("tpu", "tpu")])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernel_lowers_for_hardware(platform, lowering, dtype):
  """Triton / Mosaic lowering succeeds at benchmark shapes (no execution)."""
  fn = functools.partial(verify.verify_kernel, platform=platform,
                         return_max_prob=True)
  args = (jax.ShapeDtypeStruct((16, 5, 768), dtype),
          jax.ShapeDtypeStruct((768, 32003), dtype),
          jax.ShapeDtypeStruct((16, 4), jnp.int32))
  text = jax.jit(fn).trace(*args).lower(lowering_platforms=(lowering,)).as_text()
  assert ("tpu_custom_call" if platform == "tpu" else "triton") in text


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_kernel_larger_shapes(platform):
  rng = np.random.default_rng(7)
  b, k, d, v = 9, 8, 128, 3001
  h, w = _dyadic_inputs(rng, b, k, d, v, jnp.bfloat16)
  first = verify.verify_reference(h, w, jnp.zeros((b, k), jnp.int32))
  drafts = _drafts_with_all_lengths(rng, first.argmax, v)
  ref = verify.verify_reference(h, w, drafts, return_max_prob=True)
  out = verify.verify_kernel(h, w, drafts, return_max_prob=True,
                             platform=platform, interpret=True)
  _assert_same(out, ref)
  np.testing.assert_allclose(out.max_prob, ref.max_prob, rtol=1e-5)
