"""FastAdaSP-style merging of adjacent audio tokens.

Semantics (``merge_reference`` is the definition; the kernels match it):

1. Edge i in [0, N-1) joins tokens i and i+1.  Its similarity is the cosine
   of their keys, ``dot / (max(|k_i|, eps) * max(|k_i+1|, eps))`` in float32.
2. Edges get a selection priority in three tiers:
   * valid-valid edges: the cosine, clipped to [-1, 1] (NaN -> -1, -0 -> +0);
   * padding-padding edges: -2 (these are the "-inf similarity" edges that
     are used only once no valid-valid edge is left);
   * valid-padding boundary edges: -3 (last resort; needed only when
     n > (#valid - 1) + (#padding - 1), e.g. n = N-1 with padding present).
   The n edges of highest priority are merged; equal priorities go to the
   lower edge index (as ``lax.top_k``).  So a row with fewer than n+1 valid
   tokens first merges all its valid tokens into one group and then merges
   padding tokens together, from the lowest index up; padding stays behind
   the valid tokens and output shapes are always [B, N-n, ...].
   With a per-row ``quota`` ([B] int, clipped to [0, n]) the selection is
   tiered instead (``select_items``; the model's token eviction applies the
   same rule to tokens):
   * tier A: the min(quota[b], #valid-valid) valid-valid edges of highest
     cosine (ties to the lower index);
   * then the rest of the n merges go to padding-padding edges (lower index
     first), then boundary edges (lower index first), then the remaining
     valid-valid edges by cosine (ties to the lower index).
   Equivalently: the n highest of the priorities A = 4, padding-padding = 3,
   boundary = 2, other valid-valid = the cosine.  So a row removes exactly
   quota[b] of its valid tokens whenever it can (its result does not depend on
   how much padding the batch gives it); ``quota = n`` for every row selects
   the same edges as ``quota=None``.
3. A chain of chosen edges forms one group of consecutive tokens; groups are
   numbered left to right, ``group_index[b, j]`` is token j's output slot.
4. A group's output is the weighted mean of its valid members with weights
   ``weights`` (non-negative).  If those weights sum to 0 it is the plain
   mean of its valid members; a group without valid members (padding only)
   is the plain mean of its members.  Padding never contributes to a group
   that holds a valid token.
5. ``merged_weights`` = sum of the valid members' weights (0 for padding
   groups), so merging can be repeated layer after layer;
   ``merged_valid`` = the group holds a valid token.  ``merged_positions``
   (when ``positions`` is given) is the same weighted mean of positions.

Kernels: a "plan" kernel per row (similarity, top-n selection via a 32-step
bit-wise bisection for the n-th largest priority plus a prefix count for
ties; with a quota an earlier such selection picks tier A; group ids via a
prefix count) and a "combine" kernel per (row, block of
groups) doing the weighted segment sum as a one-hot matmul over only the
tokens of those groups.  "gpu" bodies target Triton, "tpu" bodies Mosaic.
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

EPS = 1e-6
PAD_PAD_PRIORITY = -2.0
BOUNDARY_PRIORITY = -3.0
# Tiered selection (with a quota): tier A > padding-padding > boundary > the
# remaining valid-valid edges (their cosine, in [-1, 1]).
TIER_A_PRIORITY = 4.0
TIER_PAD_PAD_PRIORITY = 3.0
TIER_BOUNDARY_PRIORITY = 2.0
_NEG_INF = float("-inf")
_INT_MIN = -(2 ** 31)
_HIGHEST = lax.Precision.HIGHEST


class MergeOutput(NamedTuple):
  """Result of token merging (G = N - n groups per row).

  Attributes:
    merged: [B, G, d] merged hidden states, dtype of x.
    merged_valid: [B, G] bool, the group holds a valid token.
    merged_weights: [B, G] float32, sum of the valid members' weights.
    group_index: [B, N] int32, output slot of every input token.
    merged_positions: [B, G] float32 weighted mean positions, or None.
  """
  merged: jax.Array
  merged_valid: jax.Array
  merged_weights: jax.Array
  group_index: jax.Array
  merged_positions: jax.Array | None


def _check_inputs(x, keys, weights, valid, n, positions, quota=None):
  """Validates shapes/dtypes and n (and quota); returns (B, N, d, dk)."""
  if x.ndim != 3:
    raise ValueError(f"x must be [B, N, d], got shape {x.shape}")
  b, n_tok, d = x.shape
  if keys.ndim != 3 or keys.shape[:2] != (b, n_tok):
    raise ValueError(f"keys must be [B={b}, N={n_tok}, dk], got {keys.shape}")
  if weights.shape != (b, n_tok):
    raise ValueError(f"weights must be [B={b}, N={n_tok}], got "
                     f"{weights.shape}")
  if valid.shape != (b, n_tok):
    raise ValueError(f"valid must be [B={b}, N={n_tok}], got {valid.shape}")
  if positions is not None and positions.shape != (b, n_tok):
    raise ValueError(f"positions must be [B={b}, N={n_tok}], got "
                     f"{positions.shape}")
  for name, arr in (("x", x), ("keys", keys), ("weights", weights)):
    if not jnp.issubdtype(arr.dtype, jnp.floating):
      raise ValueError(f"{name} must be floating point, got {arr.dtype}")
  if valid.dtype != jnp.bool_:
    raise ValueError(f"valid must be bool, got {valid.dtype}")
  if not isinstance(n, int) or isinstance(n, bool):
    raise ValueError(f"n must be a static Python int, got {type(n).__name__}")
  if not 0 <= n <= n_tok - 1:
    raise ValueError(f"n must be in [0, N-1={n_tok - 1}], got {n}")
  if quota is not None:
    if quota.shape != (b,):
      raise ValueError(f"quota must be [B={b}], got {quota.shape}")
    if not jnp.issubdtype(quota.dtype, jnp.integer):
      raise ValueError(f"quota must be integer, got {quota.dtype}")
  return b, n_tok, d, keys.shape[2]


def edge_priority(dot, sq_a, sq_b, valid_a, valid_b):
  """Selection priority of edges (elementwise; see module docstring).

  Args:
    dot: <k_a, k_b> in float32.
    sq_a, sq_b: squared norms |k_a|^2, |k_b|^2 in float32.
    valid_a, valid_b: bool validity of the two tokens.

  Returns:
    float32 priority, same shape as ``dot``.
  """
  denom = (jnp.sqrt(jnp.maximum(sq_a, EPS * EPS)) *
           jnp.sqrt(jnp.maximum(sq_b, EPS * EPS)))
  cos = dot / denom
  cos = jnp.where(cos > -1.0, jnp.minimum(cos, 1.0), -1.0)  # NaN -> -1.
  cos = jnp.where(cos == 0.0, 0.0, cos)  # -0.0 -> +0.0 for the int order.
  return jnp.where(valid_a & valid_b, cos,
                   jnp.where(valid_a | valid_b, BOUNDARY_PRIORITY,
                             PAD_PAD_PRIORITY))


def tiered_priority(prio, valid_a, valid_b, tier_a):
  """Selection priority of edges under a quota (elementwise; module docstring).

  Args:
    prio: ``edge_priority`` of the edges (the cosine on valid-valid edges).
    valid_a, valid_b: bool validity of the two tokens.
    tier_a: bool, the edge is one of the row's tier-A (quota) edges.

  Returns:
    float32 priority, same shape as ``prio``.
  """
  return jnp.where(
      tier_a, TIER_A_PRIORITY,
      jnp.where(~valid_a & ~valid_b, TIER_PAD_PAD_PRIORITY,
                jnp.where(valid_a & valid_b, prio, TIER_BOUNDARY_PRIORITY)))


def group_scales(w_sum, valid_count, count):
  """Per-group coefficient scales (sa, sb, sc) from group statistics.

  A member j of group g gets coefficient
  ``(sa[g] * vw_j + sb[g] * valid_j) + sc[g]`` where vw_j = valid_j * w_j.

  Args:
    w_sum: sum of valid members' weights per group.
    valid_count: number of valid members per group (float).
    count: number of members per group (float, >= 1 for real groups).

  Returns:
    (sa, sb, sc), each shaped like ``w_sum``.
  """
  case_a = w_sum > 0
  case_b = ~case_a & (valid_count > 0)
  case_c = ~case_a & ~case_b
  sa = jnp.where(case_a, 1.0 / jnp.where(case_a, w_sum, 1.0), 0.0)
  sb = jnp.where(case_b, 1.0 / jnp.where(case_b, valid_count, 1.0), 0.0)
  sc = jnp.where(case_c, 1.0 / jnp.maximum(count, 1.0), 0.0)
  return sa, sb, sc


def _segment_sum(data, gid, num_groups):
  """Row-wise segment sum: data [B, N, ...], gid [B, N] -> [B, G, ...]."""
  b, n_tok = gid.shape
  seg = (gid + num_groups * jnp.arange(b, dtype=jnp.int32)[:, None]).reshape(-1)
  out = jax.ops.segment_sum(data.reshape(b * n_tok, *data.shape[2:]), seg,
                            num_segments=b * num_groups,
                            indices_are_sorted=True)
  return out.reshape(b, num_groups, *data.shape[2:])


def edge_priorities(keys, valid):
  """``edge_priority`` of every adjacent pair: [B, N, dk], [B, N] -> [B, N-1].

  Args:
    keys: [B, N, dk] keys (any float dtype; the math is float32).
    valid: [B, N] bool.

  Returns:
    [B, N-1] float32: the key cosine on valid-valid edges, the padding
    priorities elsewhere.
  """
  k = keys.astype(jnp.float32)
  sq = jnp.sum(k * k, axis=-1)
  dot = jnp.sum(k[:, :-1] * k[:, 1:], axis=-1)
  return edge_priority(dot, sq[:, :-1], sq[:, 1:], valid[:, :-1], valid[:, 1:])


def top_n_mask(prio, n, take):
  """Marks each row's ``take[b]`` (<= n) highest finite entries.

  Args:
    prio: [B, M] float32 priorities (-inf: never marked).
    n: static bound on ``take``.
    take: [B] int, entries to mark per row (values past [0, n] are clipped).

  Returns:
    [B, M] bool; equal priorities go to the lower index (as ``lax.top_k``).
  """
  vals, idx = lax.top_k(prio, n)
  ok = (jnp.arange(n)[None] < take[:, None]) & jnp.isfinite(vals)
  rows = jnp.arange(prio.shape[0])[:, None]
  return jnp.zeros(prio.shape, jnp.bool_).at[rows, idx].max(ok)


def select_items(prio, valid_a, valid_b, n, quota=None, eligible=None):
  """The n items each row chooses (rule 2 of the module docstring).

  An item joins tokens a and b: an edge (a = i, b = i+1) to merge, or a token
  to evict (a = b = the token, so its tiers are valid / padding).

  Args:
    prio: [B, M] float32 scores.  quota=None: the full priority (for edges,
      ``edge_priorities``); with a quota only the valid-valid entries are
      read, any scores in [-1, 1] (higher = chosen first).
    valid_a, valid_b: [B, M] bool validity of each item's two tokens.
    n: static number of items per row (at most the eligible ones).
    quota: optional [B] int valid-valid items per row (tier A); None: the n
      highest ``prio``.
    eligible: optional [B, M] bool, the items that may be chosen at all
      (A-ToMe: the even edges); default all.

  Returns:
    [B, M] bool with n True per row.
  """
  ok = True if eligible is None else eligible
  if quota is not None:
    tier_a = top_n_mask(jnp.where(valid_a & valid_b & ok, prio, _NEG_INF), n,
                        quota)
    prio = tiered_priority(prio, valid_a, valid_b, tier_a)
  return top_n_mask(jnp.where(ok, prio, _NEG_INF), n,
                    jnp.full(prio.shape[:1], n, jnp.int32))


def group_index_from_edges(chosen):
  """Group ids from chosen edges.

  Args:
    chosen: [B, N-1] bool, edge i merges tokens i and i+1.

  Returns:
    [B, N] int32, token j -> j - (number of chosen edges left of j).
  """
  b = chosen.shape[0]
  before = jnp.concatenate(
      [jnp.zeros((b, 1), jnp.int32),
       jnp.cumsum(chosen.astype(jnp.int32), axis=1)], axis=1)
  return jnp.arange(before.shape[1], dtype=jnp.int32)[None] - before


def merge_positions(group_index, weights, valid, positions, num_groups):
  """Weighted mean position of every group (same rule as the hidden states).

  Args:
    group_index: [B, N] int32 from a merge.
    weights: [B, N] non-negative token weights used for that merge.
    valid: [B, N] bool.
    positions: [B, N] token positions (any real dtype).
    num_groups: static G = N - n.

  Returns:
    [B, G] float32 merged positions.
  """
  coef = _token_coefficients(group_index, weights, valid, num_groups)[0]
  return _segment_sum(coef * positions.astype(jnp.float32), group_index,
                      num_groups)


def _token_coefficients(gid, weights, valid, num_groups):
  """Per-token coefficients plus group stats (w_sum, valid_count)."""
  vf = valid.astype(jnp.float32)
  vw = jnp.where(valid, weights.astype(jnp.float32), 0.0)
  w_sum = _segment_sum(vw, gid, num_groups)
  valid_count = _segment_sum(vf, gid, num_groups)
  count = _segment_sum(jnp.ones_like(vf), gid, num_groups)
  sa, sb, sc = group_scales(w_sum, valid_count, count)
  take = lambda s: jnp.take_along_axis(s, gid, axis=1)
  coef = (take(sa) * vw + take(sb) * vf) + take(sc)
  return coef, w_sum, valid_count


def merge_edges(x, weights, valid, chosen, n: int, positions=None) -> MergeOutput:
  """Merges along chosen edges (rules 3-5 of the module docstring).

  Args:
    x: [B, N, d]; weights: [B, N] non-negative; valid: [B, N] bool.
    chosen: [B, N-1] bool with n True per row (``select_items``).
    n: static number of chosen edges per row.
    positions: optional [B, N] token positions.

  Returns:
    MergeOutput with G = N - n groups per row.
  """
  num_groups = x.shape[1] - n
  gid = group_index_from_edges(chosen)
  coef, w_sum, valid_count = _token_coefficients(gid, weights, valid,
                                                 num_groups)
  merged = _segment_sum(coef[..., None] * x.astype(jnp.float32), gid,
                        num_groups).astype(x.dtype)
  pos = None
  if positions is not None:
    pos = _segment_sum(coef * positions.astype(jnp.float32), gid, num_groups)
  return MergeOutput(merged, valid_count > 0, w_sum, gid, pos)


@functools.partial(jax.jit, static_argnames=("n",))
def merge_reference(x: jax.Array, keys: jax.Array, weights: jax.Array,
                    valid: jax.Array, n: int,
                    positions: jax.Array | None = None,
                    quota: jax.Array | None = None) -> MergeOutput:
  """Pure-JAX token merging: the definition of the semantics, and the merge
  the model runs with the kernel off (``mtp_jax.model.reduction_ops``).

  Args:
    x: [B, N, d] hidden states of the audio tokens.
    keys: [B, N, dk] attention keys averaged over heads.
    weights: [B, N] non-negative attention received by each token.
    valid: [B, N] bool; padding (False) sits at the end of each row.
    n: static number of merges per row, 0 <= n <= N-1.
    positions: optional [B, N] token positions.
    quota: optional [B] int valid-valid merges per row (tiered selection, see
      the module docstring; values are clipped to [0, n]); None: the plain
      top-n selection.

  Returns:
    MergeOutput with G = N - n groups per row.
  """
  _check_inputs(x, keys, weights, valid, n, positions, quota)
  chosen = select_items(edge_priorities(keys, valid), valid[:, :-1],
                        valid[:, 1:], n, quota)
  return merge_edges(x, weights, valid, chosen, n, positions)


# ----------------------------------------------------------------- kernels --


def _ordered_int(prio):
  """Maps float32 to int32 with the same order (for -0.0-free inputs)."""
  bits = lax.bitcast_convert_type(prio, jnp.int32)
  return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _select_top(prio, n, exclusive_prefix):
  """Marks the n highest priorities, ties to the lower index.

  Args:
    prio: [L] or [1, L] float32 priorities (padding lanes -inf, at least n
      finite entries).
    n: number to select: a static int, or a float32 count per row (shape
      broadcastable against ``prio``'s row sums, e.g. [1] or [1, 1]).
    exclusive_prefix: fn(float32 0/1 vector) -> exclusive prefix sums.

  Returns:
    bool, shaped like ``prio``.
  """
  ikey = _ordered_int(prio)

  def count(mask):
    return jnp.sum(mask.astype(jnp.float32), axis=-1, keepdims=True)

  # Largest threshold T with count(ikey >= T) >= n, built bit by bit.
  thr = jnp.where(count(ikey >= 0) >= n, jnp.int32(0), jnp.int32(_INT_MIN))

  def bit_step(i, thr):
    cand = thr | jnp.left_shift(jnp.int32(1), 30 - i)
    return jnp.where(count(ikey >= cand) >= n, cand, thr)

  thr = lax.fori_loop(0, 31, bit_step, thr)
  above = ikey > thr
  tie = ikey == thr
  need = n - count(above)
  rank = exclusive_prefix(tie.astype(jnp.float32))
  return above | (tie & (rank < need))


def _cumsum_exclusive(v):
  return jnp.cumsum(v, axis=-1) - v


def _matmul_exclusive(v):
  """Exclusive prefix sum of a [1, L] row via a triangular 0/1 matmul."""
  size = v.shape[-1]
  upper = (lax.broadcasted_iota(jnp.int32, (size, size), 0) <
           lax.broadcasted_iota(jnp.int32, (size, size), 1))
  return jnp.dot(v.astype(jnp.bfloat16), upper.astype(jnp.bfloat16),
                 preferred_element_type=jnp.float32)


def _quota_chosen(prio, pair_valid, quota, exclusive_prefix):
  """Tier A of a row: its min(quota, #valid-valid) best valid-valid edges.

  Args:
    prio: [L] or [1, L] ``edge_priority`` (lanes past the last edge -inf).
    pair_valid: bool like ``prio``, the edge is valid-valid (and real).
    quota: float32 quota of the row, shaped like a row sum ([1] / [1, 1]).
    exclusive_prefix: as in ``_select_top``.

  Returns:
    bool like ``prio``.
  """
  cos = jnp.where(pair_valid, prio, _NEG_INF)
  have = jnp.sum(pair_valid.astype(jnp.float32), axis=-1, keepdims=True)
  return _select_top(cos, jnp.minimum(quota, have), exclusive_prefix)


def _plan_gpu_kernel(keys_ref, valid_ref, *refs, n_merge, n_tok, dk,
                     block_tokens, block_k, with_quota):
  """Triton plan body (one row): keys [N, dk], valid [N] i32 (, quota [N]
  f32, the row's quota in every lane) -> gid [N]."""
  if with_quota:
    quota_ref, gid_ref = refs
  else:
    (gid_ref,) = refs
  r = lax.broadcasted_iota(jnp.int32, (block_tokens,), 0)
  in_a, in_b = r < n_tok, r + 1 < n_tok
  kcol = lax.broadcasted_iota(jnp.int32, (1, block_k), 1)

  def k_body(c, carry):
    dot, sq_a, sq_b = carry
    cols = c * block_k + kcol
    col_ok = cols < dk
    a = plgpu.load(keys_ref.at[r[:, None], cols], mask=in_a[:, None] & col_ok,
                   other=0.0).astype(jnp.float32)
    b = plgpu.load(keys_ref.at[r[:, None] + 1, cols],
                   mask=in_b[:, None] & col_ok, other=0.0).astype(jnp.float32)
    return (dot + jnp.sum(a * b, axis=1), sq_a + jnp.sum(a * a, axis=1),
            sq_b + jnp.sum(b * b, axis=1))

  zeros = jnp.zeros((block_tokens,), jnp.float32)
  dot, sq_a, sq_b = lax.fori_loop(0, pl.cdiv(dk, block_k), k_body,
                                  (zeros, zeros, zeros))
  va = plgpu.load(valid_ref.at[r], mask=in_a, other=0) > 0
  vb = plgpu.load(valid_ref.at[r + 1], mask=in_b, other=0) > 0
  edge = r < n_tok - 1
  prio = jnp.where(edge, edge_priority(dot, sq_a, sq_b, va, vb), _NEG_INF)
  if with_quota:
    quota = jnp.max(plgpu.load(quota_ref.at[r], mask=in_a, other=0.0),
                    keepdims=True)
    tier_a = _quota_chosen(prio, edge & va & vb, quota, _cumsum_exclusive)
    prio = jnp.where(edge, tiered_priority(prio, va, vb, tier_a), _NEG_INF)
  chosen = _select_top(prio, n_merge, _cumsum_exclusive)
  before = _cumsum_exclusive(chosen.astype(jnp.int32))
  plgpu.store(gid_ref.at[r], r - before, mask=in_a)


def _plan_tpu_kernel(keyst_ref, valid_ref, *refs, n_merge, n_tok, with_quota):
  """Mosaic plan body (one row), lane-dense rows of length L (128-aligned).

  keyst_ref: [dk, L] transposed keys; valid_ref: [1, L] f32; (quota_ref:
  [1, L] f32, the row's quota in every lane;) gid_ref: [1, L].
  """
  if with_quota:
    quota_ref, gid_ref = refs
  else:
    (gid_ref,) = refs
  size = keyst_ref.shape[-1]
  k = keyst_ref[...].astype(jnp.float32)
  k_next = pltpu.roll(k, size - 1, 1)  # k_next[:, i] = k[:, i + 1]
  dot = jnp.sum(k * k_next, axis=0, keepdims=True)
  sq_a = jnp.sum(k * k, axis=0, keepdims=True)
  sq_b = pltpu.roll(sq_a, size - 1, 1)
  v = valid_ref[...]
  vb = pltpu.roll(v, size - 1, 1)
  r = lax.broadcasted_iota(jnp.int32, (1, size), 1)
  edge = r < n_tok - 1
  va, vb = v > 0, vb > 0
  prio = jnp.where(edge, edge_priority(dot, sq_a, sq_b, va, vb), _NEG_INF)
  if with_quota:
    quota = jnp.max(quota_ref[...], axis=1, keepdims=True)
    tier_a = _quota_chosen(prio, edge & va & vb, quota, _matmul_exclusive)
    prio = jnp.where(edge, tiered_priority(prio, va, vb, tier_a), _NEG_INF)
  chosen = _select_top(prio, n_merge, _matmul_exclusive)
  before = _matmul_exclusive(chosen.astype(jnp.float32))
  gid_ref[...] = r - before.astype(jnp.int32)


def _combine_gpu_kernel(gid_ref, vw_ref, vf_ref, x_ref, *refs, n_tok,
                        n_groups, dim, block_g, block_n, block_d, row_size,
                        with_pos):
  """Triton combine body: one (row, block of groups) per program.

  gid_ref/vw_ref/vf_ref (/pos_ref): [N]; x_ref: [N, d].
  Outputs: merged [G, d], w_sum [G], valid_count [G] (, positions [G]).
  """
  if with_pos:
    pos_ref, out_ref, wsum_ref, vcnt_ref, pos_out_ref = refs
  else:
    out_ref, wsum_ref, vcnt_ref = refs
  g0 = pl.program_id(1) * block_g
  g = g0 + lax.broadcasted_iota(jnp.int32, (block_g,), 0)
  # Group ids are non-decreasing, so this block's tokens are contiguous.
  rr = lax.broadcasted_iota(jnp.int32, (row_size,), 0)
  gid_all = plgpu.load(gid_ref.at[rr], mask=rr < n_tok, other=2 ** 30)
  t_start = jnp.sum((gid_all < g0).astype(jnp.int32))
  t_end = jnp.sum((gid_all < g0 + block_g).astype(jnp.int32))
  n_chunks = pl.cdiv(t_end - t_start, block_n)
  tok = lax.broadcasted_iota(jnp.int32, (block_n,), 0)

  def load_chunk(c):
    j = t_start + c * block_n + tok
    ok = j < t_end
    gid = plgpu.load(gid_ref.at[j], mask=ok, other=-1)
    vw = plgpu.load(vw_ref.at[j], mask=ok, other=0.0)
    vf = plgpu.load(vf_ref.at[j], mask=ok, other=0.0)
    return j, ok, gid[None, :] == g[:, None], vw, vf

  def stats_body(c, carry):
    w_sum, v_cnt, cnt = carry
    _, _, onehot, vw, vf = load_chunk(c)
    return (w_sum + jnp.sum(jnp.where(onehot, vw[None, :], 0.0), axis=1),
            v_cnt + jnp.sum(jnp.where(onehot, vf[None, :], 0.0), axis=1),
            cnt + jnp.sum(onehot.astype(jnp.float32), axis=1))

  zeros = jnp.zeros((block_g,), jnp.float32)
  w_sum, v_cnt, cnt = lax.fori_loop(0, n_chunks, stats_body,
                                    (zeros, zeros, zeros))
  sa, sb, sc = group_scales(w_sum, v_cnt, cnt)

  def coef_chunk(c):
    j, ok, onehot, vw, vf = load_chunk(c)
    q = (sa[:, None] * vw[None, :] + sb[:, None] * vf[None, :]) + sc[:, None]
    return j, ok, jnp.where(onehot, q, 0.0)

  g_ok = g < n_groups
  plgpu.store(wsum_ref.at[g], w_sum, mask=g_ok)
  plgpu.store(vcnt_ref.at[g], v_cnt, mask=g_ok)
  if with_pos:
    def pos_body(c, acc):
      j, ok, q = coef_chunk(c)
      p = plgpu.load(pos_ref.at[j], mask=ok, other=0.0)
      return acc + jnp.sum(q * p[None, :], axis=1)
    plgpu.store(pos_out_ref.at[g], lax.fori_loop(0, n_chunks, pos_body, zeros),
                mask=g_ok)

  dcol = lax.broadcasted_iota(jnp.int32, (1, block_d), 1)

  def d_body(dc, _):
    cols = dc * block_d + dcol
    col_ok = cols < dim

    def tok_body(c, acc):
      j, ok, q = coef_chunk(c)
      xc = plgpu.load(x_ref.at[j[:, None], cols], mask=ok[:, None] & col_ok,
                      other=0.0).astype(jnp.float32)
      return acc + jnp.dot(q, xc, precision=_HIGHEST,
                           preferred_element_type=jnp.float32)

    acc = lax.fori_loop(0, n_chunks, tok_body,
                        jnp.zeros((block_g, block_d), jnp.float32))
    plgpu.store(out_ref.at[g[:, None], cols], acc.astype(out_ref.dtype),
                mask=g_ok[:, None] & col_ok)
    return 0

  lax.fori_loop(0, pl.cdiv(dim, block_d), d_body, 0)


def _combine_tpu_kernel(gid_ref, vw_ref, vf_ref, x_ref, *refs, block_g,
                        with_pos):
  """Mosaic combine body: one (row, block of groups) per program.

  gid_ref/vw_ref/vf_ref (/pos_ref): [1, N]; x_ref: [N, d] (whole row).
  Outputs: merged [bg, d], w_sum/valid_count (/positions) [bg, 1].
  """
  if with_pos:
    pos_ref, out_ref, wsum_ref, vcnt_ref, pos_out_ref = refs
  else:
    out_ref, wsum_ref, vcnt_ref = refs
  g = (pl.program_id(1) * block_g +
       lax.broadcasted_iota(jnp.int32, (block_g, 1), 0))
  onehot = gid_ref[...] == g  # [bg, N]
  vw, vf = vw_ref[...], vf_ref[...]
  w_sum = jnp.sum(jnp.where(onehot, vw, 0.0), axis=1, keepdims=True)
  v_cnt = jnp.sum(jnp.where(onehot, vf, 0.0), axis=1, keepdims=True)
  cnt = jnp.sum(onehot.astype(jnp.float32), axis=1, keepdims=True)
  sa, sb, sc = group_scales(w_sum, v_cnt, cnt)
  q = jnp.where(onehot, (sa * vw + sb * vf) + sc, 0.0)
  out_ref[...] = jnp.dot(q, x_ref[...].astype(jnp.float32), precision=_HIGHEST,
                         preferred_element_type=jnp.float32
                         ).astype(out_ref.dtype)
  wsum_ref[...] = w_sum
  vcnt_ref[...] = v_cnt
  if with_pos:
    pos_out_ref[...] = jnp.sum(q * pos_ref[...], axis=1, keepdims=True)


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _pow2_at_least(name, val, low=16):
  if val < low or val & (val - 1):
    raise ValueError(f"{name} must be a power of two >= {low} for the GPU "
                     f"kernel, got {val}")


def _merge_gpu(x, keys, vi, vw, vf, pos, qrow, n, *, block_groups,
               block_tokens, block_d, block_k, num_warps, interpret):
  b, n_tok, d = x.shape
  dk = keys.shape[2]
  g_total = n_tok - n
  row = max(16, pl.next_power_of_2(n_tok))
  bk = block_k or min(32, max(16, pl.next_power_of_2(dk)))
  bg = block_groups or 32
  bn = block_tokens or 32
  bd = block_d or 128
  for name, val in (("block_groups", bg), ("block_tokens", bn),
                    ("block_d", bd), ("block_k", bk)):
    _pow2_at_least(name, val)
  params = plgpu.CompilerParams(num_warps=num_warps, num_stages=1)
  # Triton masked stores skip masked lanes.  The Pallas interpreter instead
  # writes them back at clamped (duplicate) indices, which races with the
  # real lanes; so in interpret mode the outputs get room for every lane and
  # are sliced afterwards.  On hardware they keep their exact shapes.
  gid_alloc = row if interpret else n_tok
  g_alloc = _round_up(g_total, bg) if interpret else g_total
  d_alloc = _round_up(d, bd) if interpret else d
  with_quota = qrow is not None
  plan_row = pl.BlockSpec((None, n_tok), lambda i: (i, 0))
  gid = pl.pallas_call(
      functools.partial(_plan_gpu_kernel, n_merge=n, n_tok=n_tok, dk=dk,
                        block_tokens=row, block_k=bk, with_quota=with_quota),
      grid=(b,),
      in_specs=[pl.BlockSpec((None, n_tok, dk), lambda i: (i, 0, 0)),
                plan_row] + ([plan_row] if with_quota else []),
      out_specs=pl.BlockSpec((None, gid_alloc), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((b, gid_alloc), jnp.int32),
      compiler_params=params, interpret=interpret, name="merge_plan_gpu",
  )(keys, vi, *([qrow] if with_quota else []))[:, :n_tok]
  row_spec = pl.BlockSpec((None, n_tok), lambda i, j: (i, 0))
  grp_spec = pl.BlockSpec((None, g_alloc), lambda i, j: (i, 0))
  with_pos = pos is not None
  inputs = [gid, vw, vf, x] + ([pos] if with_pos else [])
  in_specs = [row_spec] * 3 + [
      pl.BlockSpec((None, n_tok, d), lambda i, j: (i, 0, 0))]
  in_specs += [row_spec] if with_pos else []
  grp_shape = jax.ShapeDtypeStruct((b, g_alloc), jnp.float32)
  outs = pl.pallas_call(
      functools.partial(_combine_gpu_kernel, n_tok=n_tok, n_groups=g_total,
                        dim=d, block_g=bg, block_n=bn, block_d=bd,
                        row_size=row, with_pos=with_pos),
      grid=(b, pl.cdiv(g_total, bg)),
      in_specs=in_specs,
      out_specs=[pl.BlockSpec((None, g_alloc, d_alloc),
                              lambda i, j: (i, 0, 0))] +
      [grp_spec] * (3 if with_pos else 2),
      out_shape=[jax.ShapeDtypeStruct((b, g_alloc, d_alloc), x.dtype)] +
      [grp_shape] * (3 if with_pos else 2),
      compiler_params=params, interpret=interpret, name="merge_combine_gpu",
  )(*inputs)
  return gid, [outs[0][:, :g_total, :d]] + [o[:, :g_total] for o in outs[1:]]


def _merge_tpu(x, keys, vi, vw, vf, pos, qrow, n, *, block_groups,
               interpret):
  b, n_tok, d = x.shape
  dk = keys.shape[2]
  g_total = n_tok - n
  lanes = _round_up(n_tok, 128)
  bg = block_groups or min(128, _round_up(g_total, 8))
  if bg % 8:
    raise ValueError(f"block_groups must be a multiple of 8 on TPU, got {bg}")
  keyst = jnp.pad(jnp.swapaxes(keys, 1, 2), ((0, 0), (0, 0),
                                             (0, lanes - n_tok)))
  lane_row = lambda a: jnp.pad(a, ((0, 0), (0, lanes - n_tok)))[:, None, :]
  plan_rows = [lane_row(vf)] + ([] if qrow is None else [lane_row(qrow)])
  lane_spec = pl.BlockSpec((None, 1, lanes), lambda i: (i, 0, 0))
  gid = pl.pallas_call(
      functools.partial(_plan_tpu_kernel, n_merge=n, n_tok=n_tok,
                        with_quota=qrow is not None),
      grid=(b,),
      in_specs=[pl.BlockSpec((None, dk, lanes), lambda i: (i, 0, 0))] +
      [lane_spec] * len(plan_rows),
      out_specs=lane_spec,
      out_shape=jax.ShapeDtypeStruct((b, 1, lanes), jnp.int32),
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
      interpret=interpret, name="merge_plan_tpu",
  )(keyst, *plan_rows)[:, 0, :n_tok]
  with_pos = pos is not None
  rows = [gid, vw, vf] + ([pos] if with_pos else [])
  rows = [r[:, None, :] for r in rows]
  row_spec = pl.BlockSpec((None, 1, n_tok), lambda i, j: (i, 0, 0))
  col_spec = pl.BlockSpec((None, bg, 1), lambda i, j: (i, j, 0))
  in_specs = [row_spec] * 3 + [
      pl.BlockSpec((None, n_tok, d), lambda i, j: (i, 0, 0))]
  in_specs += [row_spec] if with_pos else []
  inputs = rows[:3] + [x] + rows[3:]
  n_col = 3 if with_pos else 2
  outs = pl.pallas_call(
      functools.partial(_combine_tpu_kernel, block_g=bg, with_pos=with_pos),
      grid=(b, pl.cdiv(g_total, bg)),
      in_specs=in_specs,
      out_specs=[pl.BlockSpec((None, bg, d), lambda i, j: (i, j, 0))] +
      [col_spec] * n_col,
      out_shape=[jax.ShapeDtypeStruct((b, g_total, d), x.dtype)] +
      [jax.ShapeDtypeStruct((b, g_total, 1), jnp.float32)] * n_col,
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel")),
      interpret=interpret, name="merge_combine_tpu",
  )(*inputs)
  return gid, [outs[0]] + [o[..., 0] for o in outs[1:]]


@functools.partial(
    jax.jit,
    static_argnames=("n", "platform", "block_groups", "block_tokens",
                     "block_d", "block_k", "num_warps", "interpret"))
def merge_kernel(x: jax.Array, keys: jax.Array, weights: jax.Array,
                 valid: jax.Array, n: int,
                 positions: jax.Array | None = None,
                 quota: jax.Array | None = None, *,
                 platform: str | None = None,
                 block_groups: int | None = None,
                 block_tokens: int | None = None,
                 block_d: int | None = None,
                 block_k: int | None = None,
                 num_warps: int = 4,
                 interpret: bool = False) -> MergeOutput:
  """Pallas token merging, same semantics as ``merge_reference``.

  Args:
    x: [B, N, d] hidden states of the audio tokens.
    keys: [B, N, dk] attention keys averaged over heads.
    weights: [B, N] non-negative attention received by each token.
    valid: [B, N] bool; padding (False) sits at the end of each row.
    n: static number of merges per row, 0 <= n <= N-1.
    positions: optional [B, N] token positions.
    quota: optional [B] int valid-valid merges per row (tiered selection, as
      ``merge_reference``); None: the plain top-n selection.
    platform: "gpu" (Triton bodies) or "tpu" (Mosaic bodies); None picks by
      backend ("gpu" on CPU, for interpret mode).
    block_groups: output groups per combine program (GPU: power of two >= 16,
      default 32; TPU: multiple of 8, default min(128, G)).
    block_tokens: GPU only, tokens per inner chunk (power of two >= 16).
    block_d: GPU only, hidden-size chunk (power of two >= 16, default 128).
    block_k: GPU only, key-dim chunk of the plan kernel (power of two >= 16).
    num_warps: GPU only, Triton warps per program.
    interpret: run in the Pallas interpreter (CPU tests).

  Returns:
    MergeOutput with G = N - n groups per row.
  """
  b, n_tok, _, _ = _check_inputs(x, keys, weights, valid, n, positions, quota)
  platform = platform or ("tpu" if jax.default_backend() == "tpu" else "gpu")
  vi = valid.astype(jnp.int32)
  vf = valid.astype(jnp.float32)
  vw = jnp.where(valid, weights.astype(jnp.float32), 0.0)
  pos = None if positions is None else positions.astype(jnp.float32)
  # The row's quota in every lane (a float32 row like `vf`; exact, n < 2**24).
  qrow = None if quota is None else jnp.broadcast_to(
      jnp.clip(quota.astype(jnp.int32), 0, n).astype(jnp.float32)[:, None],
      (b, n_tok))
  if platform == "gpu":
    gid, outs = _merge_gpu(x, keys, vi, vw, vf, pos, qrow, n,
                           block_groups=block_groups,
                           block_tokens=block_tokens, block_d=block_d,
                           block_k=block_k, num_warps=num_warps,
                           interpret=interpret)
  elif platform == "tpu":
    gid, outs = _merge_tpu(x, keys, vi, vw, vf, pos, qrow, n,
                           block_groups=block_groups, interpret=interpret)
  else:
    raise ValueError(f"platform must be 'gpu' or 'tpu', got {platform!r}")
  merged, w_sum, v_cnt = outs[:3]
  return MergeOutput(merged, v_cnt > 0, w_sum, gid,
                     outs[3] if positions is not None else None)
