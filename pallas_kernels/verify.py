"""Fused draft verification: tiled unembedding + running argmax.

The verifier's final-normed hidden states ``h`` [B, K+1, d] are multiplied
by the unembedding ``w`` [d, V] one vocabulary tile at a time.  Each tile
updates a running (max, argmax) pair, and optionally an online-softmax sum,
so the [B, K+1, V] logits never exist in memory.  From the argmax tokens we
derive the accepted draft length and the correction token.

Two kernel bodies share the same math:

* ``"gpu"`` (Triton): grid = (row blocks, vocab splits).  Each program loops
  over its vocab range in ``block_v`` tiles and over ``d`` in ``block_d``
  chunks, with masked loads for the vocab/d tails.  Vocab splits keep the GPU
  busy at small batch (flash-decoding style); a tiny XLA epilogue combines
  the per-split partial results.
* ``"tpu"`` (Mosaic): grid = (row blocks, vocab tiles), the vocab axis is
  sequential ("arbitrary") and the running state lives in the revisited
  output block.

Both are exercised on CPU with ``interpret=True``.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

_NEG_INF = float("-inf")
# Token ids are tracked in float32 inside the kernels (exact below 2**24) so
# that the index reductions are plain float min-reductions on every backend.
_MAX_VOCAB = 1 << 24
_SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


class VerifyOutput(NamedTuple):
  """Result of draft verification.

  Attributes:
    argmax: [B, K+1] int32, greedy verifier token at every position.
    accepted: [B] int32, longest prefix with drafts[b, i] == argmax[b, i].
    correction: [B] int32, argmax[b, accepted[b]].
    max_prob: [B, K+1] float32 softmax probability of the argmax token, or
      None when not requested.
  """
  argmax: jax.Array
  accepted: jax.Array
  correction: jax.Array
  max_prob: jax.Array | None


def _check_inputs(h, w, drafts):
  """Validates shapes/dtypes; returns (B, K, d, V)."""
  if h.ndim != 3:
    raise ValueError(f"h must be [B, K+1, d], got shape {h.shape}")
  if w.ndim != 2:
    raise ValueError(f"w must be [d, V], got shape {w.shape}")
  if drafts.ndim != 2:
    raise ValueError(f"drafts must be [B, K], got shape {drafts.shape}")
  b, k1, d = h.shape
  if w.shape[0] != d:
    raise ValueError(f"w must be [d={d}, V], got shape {w.shape}")
  if drafts.shape != (b, k1 - 1):
    raise ValueError(
        f"drafts must be [B={b}, K={k1 - 1}] to match h {h.shape}, got "
        f"{drafts.shape}")
  if k1 < 2:
    raise ValueError(f"h must hold K+1 >= 2 positions, got {k1}")
  if not any(h.dtype == t for t in _SUPPORTED_DTYPES):
    raise ValueError(f"h must be float32/bfloat16/float16, got {h.dtype}")
  if w.dtype != h.dtype:
    raise ValueError(f"w dtype {w.dtype} must equal h dtype {h.dtype}")
  if not jnp.issubdtype(drafts.dtype, jnp.integer):
    raise ValueError(f"drafts must be an integer array, got {drafts.dtype}")
  v = w.shape[1]
  if v >= _MAX_VOCAB:
    raise ValueError(f"w vocab size {v} must be below {_MAX_VOCAB}")
  return b, k1 - 1, d, v


def prefix_count(match: jax.Array) -> jax.Array:
  """[B, K] bool -> [B] int32 length of the leading run of True."""
  return jnp.sum(jnp.cumprod(match.astype(jnp.int32), axis=1),
                 axis=1).astype(jnp.int32)


def acceptance(argmax: jax.Array, drafts: jax.Array,
               also: jax.Array | None = None):
  """Greedy acceptance from verifier tokens.

  The one acceptance rule: the kernel, ``verify_reference`` and the decoding
  loops' reference path (``mtp_jax.decode.verify.reference_accept``) all use it.

  Args:
    argmax: [B, K+1] int32 verifier tokens.
    drafts: [B, K] integer draft tokens; drafts[:, i] is checked against
      argmax[:, i].
    also: optional [B, K] bool, drafts accepted although they differ from the
      argmax (Medusa's typical acceptance).

  Returns:
    (accepted [B] int32 in [0, K], the leading run of accepted drafts;
    correction [B] int32 = argmax[b, accepted[b]]).
  """
  k = drafts.shape[1]
  match = drafts.astype(jnp.int32) == argmax[:, :k]
  if also is not None:
    match = match | also
  accepted = prefix_count(match)
  correction = jnp.take_along_axis(argmax, accepted[:, None], axis=1)[:, 0]
  return accepted, correction


@functools.partial(jax.jit, static_argnames=("return_max_prob", "precision"))
def verify_reference(h: jax.Array, w: jax.Array, drafts: jax.Array, *,
                     return_max_prob: bool = False,
                     precision=None) -> VerifyOutput:
  """Pure-JAX verification from the full logits.

  Args:
    h: [B, K+1, d] final-normed verifier hidden states (f32/bf16/f16).
    w: [d, V] unembedding, same dtype as ``h``.
    drafts: [B, K] integer draft tokens.
    return_max_prob: also return the softmax probability of the argmax.
    precision: ``lax.Precision`` for the matmul (None = backend default).

  Returns:
    VerifyOutput.
  """
  _check_inputs(h, w, drafts)
  logits = jnp.einsum("bkd,dv->bkv", h, w, precision=precision,
                      preferred_element_type=jnp.float32)
  argmax = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  accepted, correction = acceptance(argmax, drafts)
  max_prob = None
  if return_max_prob:
    m = jnp.max(logits, axis=-1, keepdims=True)
    max_prob = 1.0 / jnp.sum(jnp.exp(logits - m), axis=-1)
  return VerifyOutput(argmax, accepted, correction, max_prob)


def _online_update(logits, cols, run_max, run_idx, run_sum, *, keepdims):
  """Folds one masked logits tile into the running max/argmax/sum.

  Args:
    logits: [bm, bv] float32, masked columns already -inf.
    cols: [1, bv] float32 global token ids of the tile columns.
    run_max, run_idx: [bm] (or [bm, 1] with keepdims) running max / argmax.
    run_sum: same shape running sum of exp(logit - run_max), or None.
    keepdims: keep the reduced axis (TPU prefers 2-D values).

  Returns:
    (run_max, run_idx, run_sum) updated.
  """
  def bcast(v):
    return v if keepdims else v[:, None]

  tile_max = jnp.max(logits, axis=1, keepdims=keepdims)
  # Lowest id among the tile's maxima (same tie rule as jnp.argmax).
  tile_idx = jnp.min(jnp.where(logits == bcast(tile_max), cols, _MAX_VOCAB),
                     axis=1, keepdims=keepdims)
  # Strict '>' keeps the earlier (lower-id) tile on ties across tiles.
  run_idx = jnp.where(tile_max > run_max, tile_idx, run_idx)
  new_max = jnp.maximum(run_max, tile_max)
  if run_sum is not None:
    # `safe` avoids (-inf) - (-inf) while nothing finite has been seen.
    safe = jnp.where(new_max == _NEG_INF, 0.0, new_max)
    tile_sum = jnp.sum(jnp.exp(logits - bcast(safe)), axis=1,
                       keepdims=keepdims)
    run_sum = run_sum * jnp.exp(run_max - safe) + tile_sum
  return new_max, run_idx, run_sum


def _gpu_kernel(h_ref, w_ref, *out_refs, vocab, d_true, block_v, block_d,
                tiles_per_split, with_sum, precision):
  """Triton body: one (row block, vocab split) per program.

  h_ref: [bm, d_pad] rows of this block (zero padded along d).
  w_ref: [d, V] whole unembedding (read with masked gathers).
  out_refs: max, idx (and sum) blocks, each [bm].
  """
  bm, d_pad = h_ref.shape
  split = pl.program_id(1)
  first_tile = split * tiles_per_split
  n_tiles = jnp.clip(pl.cdiv(vocab - first_tile * block_v, block_v), 0,
                     tiles_per_split)
  d_rows = lax.broadcasted_iota(jnp.int32, (block_d, 1), 0)
  tile_cols = lax.broadcasted_iota(jnp.int32, (1, block_v), 1)

  def tile_body(t, carry):
    run_max, run_idx, run_sum = carry
    cols = (first_tile + t) * block_v + tile_cols
    col_ok = cols < vocab

    def d_body(c, acc):
      rows = c * block_d + d_rows
      h_chunk = h_ref[:, pl.ds(pl.multiple_of(c * block_d, block_d), block_d)]
      w_chunk = plgpu.load(w_ref.at[rows, cols], mask=(rows < d_true) & col_ok,
                           other=0.0)
      return acc + jnp.dot(h_chunk, w_chunk, precision=precision,
                           preferred_element_type=jnp.float32)

    acc = lax.fori_loop(0, d_pad // block_d, d_body,
                        jnp.zeros((bm, block_v), jnp.float32))
    logits = jnp.where(col_ok, acc, _NEG_INF)
    return _online_update(logits, cols.astype(jnp.float32), run_max, run_idx,
                          run_sum, keepdims=False)

  init = (jnp.full((bm,), _NEG_INF, jnp.float32), jnp.zeros((bm,), jnp.float32),
          jnp.zeros((bm,), jnp.float32) if with_sum else None)
  run_max, run_idx, run_sum = lax.fori_loop(0, n_tiles, tile_body, init)
  out_refs[0][...] = run_max
  out_refs[1][...] = run_idx
  if with_sum:
    out_refs[2][...] = run_sum


def _tpu_kernel(h_ref, w_ref, *out_refs, vocab, block_v, with_sum, precision):
  """Mosaic body: grid (row block i, vocab tile j); j is sequential.

  h_ref: [bm, d]; w_ref: [d, block_v] (the last tile may run past V).
  out_refs: max, idx (and sum) blocks [bm, 1], resident across j.
  """
  j = pl.program_id(1)
  max_ref, idx_ref = out_refs[0], out_refs[1]
  sum_ref = out_refs[2] if with_sum else None

  @pl.when(j == 0)
  def _init():
    max_ref[...] = jnp.full(max_ref.shape, _NEG_INF, jnp.float32)
    idx_ref[...] = jnp.zeros(idx_ref.shape, jnp.float32)
    if with_sum:
      sum_ref[...] = jnp.zeros(sum_ref.shape, jnp.float32)

  acc = jnp.dot(h_ref[...], w_ref[...], precision=precision,
                preferred_element_type=jnp.float32)
  cols = j * block_v + lax.broadcasted_iota(jnp.int32, (1, block_v), 1)
  logits = jnp.where(cols < vocab, acc, _NEG_INF)
  run_max, run_idx, run_sum = _online_update(
      logits, cols.astype(jnp.float32), max_ref[...], idx_ref[...],
      sum_ref[...] if with_sum else None, keepdims=True)
  max_ref[...] = run_max
  idx_ref[...] = run_idx
  if with_sum:
    sum_ref[...] = run_sum


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _is_pow2(x: int) -> bool:
  return x > 0 and (x & (x - 1)) == 0


def default_platform() -> str:
  """Kernel body for the current backend ("tpu" on TPU, else "gpu")."""
  return "tpu" if jax.default_backend() == "tpu" else "gpu"


def _verify_gpu(h2, w, *, with_sum, block_rows, block_v, block_d,
                num_v_splits, num_warps, num_stages, interpret, precision):
  """Runs the Triton body; returns per-row (max, idx, sum) [M_pad]."""
  m = h2.shape[0]
  d, v = w.shape
  bm = block_rows or min(64, max(16, pl.next_power_of_2(m)))
  bv = block_v or 128
  bd = block_d or 64
  for name, val in (("block_rows", bm), ("block_v", bv), ("block_d", bd)):
    if not _is_pow2(val) or val < 16:
      raise ValueError(f"{name} must be a power of two >= 16 for the GPU "
                       f"kernel, got {val}")
  m_pad, d_pad = _round_up(m, bm), _round_up(d, bd)
  h2 = jnp.pad(h2, ((0, m_pad - m), (0, d_pad - d)))
  row_blocks = m_pad // bm
  n_tiles = pl.cdiv(v, bv)
  if num_v_splits is None:
    # Aim for a few hundred programs so that every SM has work.
    num_v_splits = max(1, min(n_tiles, pl.cdiv(256, row_blocks)))
  if num_v_splits < 1:
    raise ValueError(f"num_v_splits must be >= 1, got {num_v_splits}")
  tiles_per_split = pl.cdiv(n_tiles, num_v_splits)
  splits = pl.cdiv(n_tiles, tiles_per_split)
  kernel = functools.partial(
      _gpu_kernel, vocab=v, d_true=d, block_v=bv, block_d=bd,
      tiles_per_split=tiles_per_split, with_sum=with_sum, precision=precision)
  n_out = 3 if with_sum else 2
  out_spec = pl.BlockSpec((None, bm), lambda i, s: (s, i))
  outs = pl.pallas_call(
      kernel,
      grid=(row_blocks, splits),
      in_specs=[pl.BlockSpec((bm, d_pad), lambda i, s: (i, 0)),
                pl.BlockSpec((d, v), lambda i, s: (0, 0))],
      out_specs=[out_spec] * n_out,
      out_shape=[jax.ShapeDtypeStruct((splits, m_pad), jnp.float32)] * n_out,
      compiler_params=plgpu.CompilerParams(num_warps=num_warps,
                                           num_stages=num_stages),
      interpret=interpret,
      name="fused_verify_gpu",
  )(h2, w)
  part_max, part_idx = outs[0], outs[1]
  # Combine splits: the first split holding the global max wins ties, and
  # earlier splits cover lower token ids, so the lowest id wins overall.
  best = jnp.argmax(part_max, axis=0)
  run_max = jnp.max(part_max, axis=0)
  run_idx = jnp.take_along_axis(part_idx, best[None], axis=0)[0]
  run_sum = None
  if with_sum:
    safe = jnp.where(run_max == _NEG_INF, 0.0, run_max)
    run_sum = jnp.sum(outs[2] * jnp.exp(part_max - safe), axis=0)
  return run_max, run_idx, run_sum


def _verify_tpu(h2, w, *, with_sum, block_rows, block_v, interpret, precision):
  """Runs the Mosaic body; returns per-row (max, idx, sum) [M_pad]."""
  m = h2.shape[0]
  d, v = w.shape
  sub = 16 if h2.dtype != jnp.float32 else 8
  bm = block_rows or min(256, _round_up(m, sub))
  bv = block_v or 512
  if bm % sub:
    raise ValueError(f"block_rows must be a multiple of {sub} on TPU, got {bm}")
  if bv % 128:
    raise ValueError(f"block_v must be a multiple of 128 on TPU, got {bv}")
  m_pad = _round_up(m, bm)
  h2 = jnp.pad(h2, ((0, m_pad - m), (0, 0)))
  kernel = functools.partial(_tpu_kernel, vocab=v, block_v=bv,
                             with_sum=with_sum, precision=precision)
  n_out = 3 if with_sum else 2
  out_spec = pl.BlockSpec((bm, 1), lambda i, j: (i, 0))
  outs = pl.pallas_call(
      kernel,
      grid=(m_pad // bm, pl.cdiv(v, bv)),
      in_specs=[pl.BlockSpec((bm, d), lambda i, j: (i, 0)),
                pl.BlockSpec((d, bv), lambda i, j: (0, j))],
      out_specs=[out_spec] * n_out,
      out_shape=[jax.ShapeDtypeStruct((m_pad, 1), jnp.float32)] * n_out,
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "arbitrary")),
      interpret=interpret,
      name="fused_verify_tpu",
  )(h2, w)
  return (outs[0][:, 0], outs[1][:, 0],
          outs[2][:, 0] if with_sum else None)


@functools.partial(
    jax.jit,
    static_argnames=("return_max_prob", "platform", "block_rows", "block_v",
                     "block_d", "num_v_splits", "num_warps", "num_stages",
                     "interpret", "precision"))
def verify_kernel(h: jax.Array, w: jax.Array, drafts: jax.Array, *,
                  return_max_prob: bool = False,
                  platform: str | None = None,
                  block_rows: int | None = None,
                  block_v: int | None = None,
                  block_d: int | None = None,
                  num_v_splits: int | None = None,
                  num_warps: int = 4,
                  num_stages: int = 2,
                  interpret: bool = False,
                  precision=None) -> VerifyOutput:
  """Fused Pallas verification (no [B, K+1, V] logits in memory).

  Args:
    h: [B, K+1, d] final-normed verifier hidden states (f32/bf16/f16).
    w: [d, V] unembedding, same dtype as ``h`` (V < 2**24).
    drafts: [B, K] integer draft tokens.
    return_max_prob: also return the argmax's softmax probability (online
      softmax: running max + running sum of exp).
    platform: "gpu" (Triton body) or "tpu" (Mosaic body); None picks by
      backend ("gpu" on CPU, for interpret mode).
    block_rows: rows of B*(K+1) per program (GPU: power of two >= 16;
      TPU: multiple of 8 (f32) / 16 (16-bit)).
    block_v: vocab tile (GPU: power of two >= 16, default 128; TPU: multiple
      of 128, default 512).
    block_d: GPU only, contraction chunk (power of two >= 16, default 64).
    num_v_splits: GPU only, vocab splits run in parallel (default: enough
      for ~256 programs).
    num_warps, num_stages: GPU only, Triton launch parameters.
    interpret: run the kernel in the Pallas interpreter (CPU tests).
    precision: ``lax.Precision`` of the in-kernel matmul.

  Returns:
    VerifyOutput; identical to ``verify_reference`` up to float summation
    order in the logits (exact when the logits are exactly representable).
  """
  b, k, d, v = _check_inputs(h, w, drafts)
  platform = platform or default_platform()
  h2 = h.reshape(b * (k + 1), d)
  if platform == "gpu":
    run_max, run_idx, run_sum = _verify_gpu(
        h2, w, with_sum=return_max_prob, block_rows=block_rows,
        block_v=block_v, block_d=block_d, num_v_splits=num_v_splits,
        num_warps=num_warps, num_stages=num_stages, interpret=interpret,
        precision=precision)
  elif platform == "tpu":
    run_max, run_idx, run_sum = _verify_tpu(
        h2, w, with_sum=return_max_prob, block_rows=block_rows,
        block_v=block_v, interpret=interpret, precision=precision)
  else:
    raise ValueError(f"platform must be 'gpu' or 'tpu', got {platform!r}")
  del run_max
  m = b * (k + 1)
  argmax = run_idx[:m].astype(jnp.int32).reshape(b, k + 1)
  accepted, correction = acceptance(argmax, drafts)
  max_prob = None
  if return_max_prob:
    max_prob = (1.0 / run_sum[:m]).reshape(b, k + 1)
  return VerifyOutput(argmax, accepted, correction, max_prob)
