"""Audio-token reduction, in-graph ops: FastAdaSP and baselines inside the prefill.

Where: in `SpeechLLaMA.prefill` only (never the training forward nor `decode_step`),
inside a chosen decoder layer after attention and before the MLP
(`mtp_jax.model.decoder.reduced_prefill`). Layer l removes `merges[l]` tokens from
the audio span of the sequence (the budgets come from
`mtp_jax.model.reduction_plan.make_plan`), so its MLP and every later layer run on
fewer tokens (static shapes per layer) and the KV cache of later layers holds fewer
valid audio slots.

Methods (`config.model.reduction.method`):
  * fastadasp_dense: at every layer of the schedule, cosine similarity of adjacent
    audio tokens' keys (that layer's pre-rotary keys, mean over kv heads); merge
    along the top-n most similar adjacent edges (chains form groups); each merged
    token is the attention-received-weighted mean of its group, the weight of token
    j being the attention probability it received from every query, summed over
    heads.
  * fastadasp_sparse: one weighted merge, at the layer chosen offline by
    `mtp_jax.model.reduction_calibrate.choose_sparse_layer` (transfer entropy).
  * random_merge: merge along n random adjacent edges (plain mean), same schedule.
  * random_evict: drop n random audio tokens, same schedule.
  * atome: A-ToMe, non-overlapping adjacent pairs (2i, 2i+1) ranked by key cosine,
    plain mean of each pair, same schedule (n <= half the tokens per layer).
  * fastv: FastV, evict the n least-attended audio tokens once, at the start layer.

Positions: a merged token carries the same weighted mean of its members' rotary
positions (a float position); kept tokens keep theirs; text positions continue
from the ORIGINAL audio length (`cache.prefix_len` is unchanged), so decoding
code needs no change.

Batches: the static count n_l is the budget of a row whose audio fills the whole
prefix P. Row b removes `quota = round(n_l * alen_b / P)` of its valid audio tokens
(the same fraction of its own length) and spends the rest of the n_l on its padding
(padding-padding edges / padding tokens first, then the valid/padding boundary, and
only if those run out - by rounding - more valid tokens). So a row's result does not
depend on how much padding its batch gives it, and valid tokens stay a prefix of the
audio span after every reduction.

Cache: with reduction, `cache.prefix_valid` is [L, B, P] (layer axis first, like
k/v): layer l's valid audio keys are compacted to slots [0, valid_l) and the rest is
marked invalid. Without reduction it stays [B, P].
"""
from __future__ import annotations

import dataclasses

import jax
from jax import lax
import jax.numpy as jnp

from mtp_jax.config import REDUCTION_METHODS, ConfigError
from pallas_kernels import dispatch

EPS = 1e-6
_NEG = -jnp.inf


def row_quota(n: int, orig_len: jax.Array, num_audio: int, valid: jax.Array) -> jax.Array:
  """Valid tokens row b removes: round(n * alen_b / P), at most valid_b - 1.

  Args:
    n: static budget of a full-length row.
    orig_len: [B] original audio tokens per row (alen).
    num_audio: P, the original (padded) prefix length.
    valid: [B, N] current validity.
  Returns:
    [B] int32 in [0, n].
  """
  q = jnp.round(n * orig_len.astype(jnp.float32) / num_audio).astype(jnp.int32)
  left = jnp.sum(valid, axis=1).astype(jnp.int32) - 1
  return jnp.clip(jnp.minimum(q, left), 0, n)


def _first_k_mask(prio: jax.Array, k: int, take: jax.Array) -> jax.Array:
  """Marks the `take[b]` (<= k) highest finite entries of each row (ties: lower index)."""
  vals, idx = lax.top_k(prio, k)
  ok = (jnp.arange(k)[None] < take[:, None]) & jnp.isfinite(vals)
  b = prio.shape[0]
  return jnp.zeros(prio.shape, bool).at[jnp.arange(b)[:, None], idx].max(ok)


def select_tiered(score: jax.Array, eligible: jax.Array, a_ok: jax.Array, b_ok: jax.Array,
                  c_ok: jax.Array, n: int, quota: jax.Array) -> jax.Array:
  """Chooses exactly n items per row in tiers.

  Tier A: the `quota[b]` highest-`score` items among `a_ok` (the valid items);
  then the rest of n from tier B (`b_ok`, padding items, lower index first), tier C
  (`c_ok`, boundary items), tier D (the remaining `a_ok` items by score).

  Args:
    score: [B, M] float, in [-1, 1] (higher = chosen first).
    eligible: [B, M] bool, items that may be chosen at all.
    a_ok, b_ok, c_ok: [B, M] bool tier membership.
    n: static count (<= number of eligible items per row).
    quota: [B] int32 tier-A count.
  Returns:
    [B, M] bool with exactly n True per row.
  """
  a = _first_k_mask(jnp.where(a_ok & eligible, score, _NEG), n, quota)
  prio = jnp.where(b_ok, 3.0, jnp.where(c_ok, 2.0, jnp.where(a_ok, score, _NEG)))
  prio = jnp.where(eligible & ~a, prio, _NEG)
  rest = _first_k_mask(prio, n, n - jnp.sum(a, axis=1).astype(jnp.int32))
  return a | rest


def key_cosine(keys: jax.Array) -> jax.Array:
  """Cosine similarity of adjacent tokens' keys: [B, N, dk] -> [B, N-1] float32 in [-1, 1]."""
  k = keys.astype(jnp.float32)
  sq = jnp.sum(k * k, axis=-1)
  dot = jnp.sum(k[:, :-1] * k[:, 1:], axis=-1)
  norm = jnp.sqrt(jnp.maximum(sq, EPS * EPS))
  cos = dot / (norm[:, :-1] * norm[:, 1:])
  cos = jnp.where(cos > -1.0, jnp.minimum(cos, 1.0), -1.0)  # NaN -> -1
  return jnp.where(cos == 0.0, 0.0, cos)


def _segment_sum(data: jax.Array, gid: jax.Array, num_groups: int) -> jax.Array:
  """Row-wise segment sum: data [B, N, ...], gid [B, N] -> [B, G, ...]."""
  b, n = gid.shape
  seg = (gid + num_groups * jnp.arange(b, dtype=jnp.int32)[:, None]).reshape(-1)
  out = jax.ops.segment_sum(data.reshape(b * n, *data.shape[2:]), seg,
                            num_segments=b * num_groups, indices_are_sorted=True)
  return out.reshape(b, num_groups, *data.shape[2:])


def group_index(chosen: jax.Array) -> jax.Array:
  """Output slot of every token: [B, N-1] chosen edges -> [B, N] int32.

  Edge i joins tokens i and i+1; a chain of chosen edges is one group; token j goes
  to slot j - (chosen edges left of j).
  """
  b, n_edges = chosen.shape
  before = jnp.concatenate([jnp.zeros((b, 1), jnp.int32),
                            jnp.cumsum(chosen.astype(jnp.int32), axis=1)], axis=1)
  return jnp.arange(n_edges + 1, dtype=jnp.int32)[None] - before


def combine(x: jax.Array, weights: jax.Array, valid: jax.Array, positions: jax.Array,
            gid: jax.Array, num_groups: int):
  """Weighted means of token groups.

  A group's output is the `weights`-weighted mean of its valid members (plain mean of
  the valid members if their weights sum to 0; plain mean of all members when none is
  valid); padding never contributes to a group holding a valid token. Positions get
  the same weights. (The semantics of `pallas_kernels.token_merge.merge_reference`.)

  Args:
    x: [B, N, d]; weights: [B, N] >= 0; valid: [B, N]; positions: [B, N].
    gid: [B, N] int32 group of each token (non-decreasing, see `group_index`).
    num_groups: static G.
  Returns:
    (merged [B, G, d] in x.dtype, merged_valid [B, G] bool, positions [B, G] float32).
  """
  vf = valid.astype(jnp.float32)
  vw = jnp.where(valid, weights.astype(jnp.float32), 0.0)
  w_sum = _segment_sum(vw, gid, num_groups)
  v_cnt = _segment_sum(vf, gid, num_groups)
  cnt = _segment_sum(jnp.ones_like(vf), gid, num_groups)
  case_a = w_sum > 0
  case_b = ~case_a & (v_cnt > 0)
  sa = jnp.where(case_a, 1.0 / jnp.where(case_a, w_sum, 1.0), 0.0)
  sb = jnp.where(case_b, 1.0 / jnp.where(case_b, v_cnt, 1.0), 0.0)
  sc = jnp.where(~case_a & ~case_b, 1.0 / jnp.maximum(cnt, 1.0), 0.0)
  take = lambda s: jnp.take_along_axis(s, gid, axis=1)
  coef = (take(sa) * vw + take(sb) * vf) + take(sc)
  merged = _segment_sum(coef[..., None] * x.astype(jnp.float32), gid, num_groups)
  pos = _segment_sum(coef * positions.astype(jnp.float32), gid, num_groups)
  return merged.astype(x.dtype), v_cnt > 0, pos


def merge_tokens(x, keys, weights, valid, positions, n: int, quota, *, score=None,
                 eligible=None):
  """Merges n adjacent edges per row (tiered selection, see `select_tiered`).

  Args:
    x: [B, N, d]; keys: [B, N, dk] (used when `score` is None: key cosine).
    weights: [B, N] merge weights; valid: [B, N]; positions: [B, N] float32.
    n: static merges per row; quota: [B] merges among valid-valid edges.
    score: optional [B, N-1] edge scores in [-1, 1] (default: key cosine).
    eligible: optional [B, N-1] bool edge eligibility (A-ToMe: even edges).
  Returns:
    (merged [B, N-n, d], valid [B, N-n], positions [B, N-n], group_index [B, N]).
  """
  b, n_tok, _ = x.shape
  score = key_cosine(keys) if score is None else score
  eligible = jnp.ones((b, n_tok - 1), bool) if eligible is None else eligible
  va, vb = valid[:, :-1], valid[:, 1:]
  chosen = select_tiered(score, eligible, va & vb, ~va & ~vb, va ^ vb, n, quota)
  gid = group_index(chosen)
  merged, mvalid, mpos = combine(x, weights, valid, positions, gid, n_tok - n)
  return merged, mvalid, mpos, gid


def evict_tokens(x, valid, positions, n: int, quota, score):
  """Drops n tokens per row: the `quota` highest-`score` valid ones, then padding.

  Args:
    x: [B, N, d]; valid: [B, N]; positions: [B, N]; n: static; quota: [B].
    score: [B, N] in [-1, 1], higher = dropped first.
  Returns:
    (kept [B, N-n, d], valid [B, N-n], positions [B, N-n], kept_index [B, N-n]),
    kept tokens in their original order.
  """
  b, n_tok, _ = x.shape
  none = jnp.zeros_like(valid)
  drop = select_tiered(score, jnp.ones_like(valid), valid, ~valid, none, n, quota)
  idx = jnp.arange(n_tok)[None]
  keep_idx = jnp.argsort(jnp.where(drop, n_tok + idx, idx), axis=1)[:, :n_tok - n]
  g = lambda a: jnp.take_along_axis(a, keep_idx.reshape(b, -1, *([1] * (a.ndim - 2))), axis=1)
  return g(x), g(valid), g(positions), keep_idx


@dataclasses.dataclass(frozen=True)
class Reducer:
  """Trace-time description of one prefill's reduction (static fields only).

  Attributes:
    method: a reduction method.
    merges: tokens removed per layer.
    num_audio: P, the original audio prefix length.
    seed: for the random baselines.
    use_kernel: fastadasp_dense / fastadasp_sparse merging: False = this
      module's `merge_tokens`; True = the Pallas kernel
      (`pallas_kernels.dispatch.merge_tokens`, same selection and means);
      None = the dispatch's choice (kernel on GPU/TPU, its XLA reference elsewhere).
    interpret: run that kernel in the Pallas interpreter (needed off GPU/TPU).
  """
  method: str
  merges: tuple[int, ...]
  num_audio: int
  seed: int = 0
  use_kernel: bool | None = False
  interpret: bool = False

  def _weighted_merge(self, x, keys, weights, valid, positions, n: int, quota):
    """FastAdaSP merge: `merge_tokens`, or the Pallas kernel per `use_kernel`.

    Args and returns as `merge_tokens` (keys [B, N, dk] already averaged over heads).
    """
    if self.use_kernel is False:
      return merge_tokens(x, keys, weights, valid, positions, n, quota)
    out = dispatch.merge_tokens(x, keys, weights, valid, n, positions=positions,
                                quota=quota, use_kernel=self.use_kernel,
                                interpret=self.interpret)
    return (out.merged, out.merged_valid, out.merged_positions.astype(jnp.float32),
            out.group_index)

  def __call__(self, layer: int, x, keys, probs, valid, positions, orig_len):
    """Reduces the audio span of one layer.

    Args:
      layer: layer index (static).
      x: [B, N, d] audio hidden states after attention (residual added).
      keys: [B, N, Hkv, D] that layer's pre-rotary keys of the audio tokens.
      probs: [B, Hkv, G, T, S] attention probabilities of the layer (all queries; the
        first N keys are the audio tokens).
      valid: [B, N]; positions: [B, N] float32; orig_len: [B] original audio tokens.
    Returns:
      (x [B, N-n, d], valid [B, N-n], positions [B, N-n]).
    """
    n = self.merges[layer]
    b, n_tok, _ = x.shape
    if n == 0:
      return x, valid, positions
    quota = row_quota(n, orig_len, self.num_audio, valid)
    rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), layer)
    m = self.method
    if m in ("fastadasp_dense", "fastadasp_sparse"):
      received = jnp.sum(probs, axis=(1, 2, 3))[:, :n_tok]
      out = self._weighted_merge(x, jnp.mean(keys, axis=2), received, valid, positions, n,
                                 quota)
    elif m == "random_merge":
      score = jax.random.uniform(rng, (b, n_tok - 1))
      out = merge_tokens(x, None, jnp.ones((b, n_tok)), valid, positions, n, quota,
                         score=score)
    elif m == "atome":
      even = (jnp.arange(n_tok - 1) % 2 == 0)[None].repeat(b, 0)
      out = merge_tokens(x, jnp.mean(keys, axis=2), jnp.ones((b, n_tok)), valid, positions,
                         n, quota, eligible=even)
    elif m == "random_evict":
      out = evict_tokens(x, valid, positions, n, quota, jax.random.uniform(rng, (b, n_tok)))
    elif m == "fastv":
      received = jnp.sum(probs, axis=(1, 2, 3))[:, :n_tok]
      out = evict_tokens(x, valid, positions, n, quota, -jnp.tanh(received))
    else:
      raise ConfigError(f"model.reduction.method={m!r}: expected one of {REDUCTION_METHODS}")
    return out[0], out[1], out[2]
