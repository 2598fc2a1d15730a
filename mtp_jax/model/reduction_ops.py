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
import jax.numpy as jnp

from mtp_jax.config import REDUCTION_METHODS, ConfigError
from pallas_kernels import dispatch
from pallas_kernels import token_merge


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


def merge_tokens(x, weights, valid, positions, n: int, quota, score, eligible=None):
  """Merges n adjacent edges per row, picked by `score` (random_merge, A-ToMe).

  The selection and the means are the token-merge kernel's reference
  (`pallas_kernels.token_merge.select_items` / `merge_edges`): tier A = the
  `quota` best-scored valid-valid edges, then padding, boundary, other valid edges.

  Args:
    x: [B, N, d]; weights: [B, N] merge weights; valid: [B, N];
    positions: [B, N] float32.
    n: static merges per row; quota: [B] merges among valid-valid edges.
    score: [B, N-1] edge scores in [-1, 1] (higher = merged first).
    eligible: optional [B, N-1] bool, the edges that may merge (A-ToMe: even ones).
  Returns:
    (merged [B, N-n, d], valid [B, N-n], positions [B, N-n] float32).
  """
  chosen = token_merge.select_items(score, valid[:, :-1], valid[:, 1:], n, quota, eligible)
  out = token_merge.merge_edges(x, weights, valid, chosen, n, positions)
  return out.merged, out.merged_valid, out.merged_positions


def evict_tokens(x, valid, positions, n: int, quota, score):
  """Drops n tokens per row: the `quota` highest-`score` valid ones, then padding
  (the merge selection's tiers, `token_merge.select_items`, applied to tokens).

  Args:
    x: [B, N, d]; valid: [B, N]; positions: [B, N]; n: static; quota: [B].
    score: [B, N] in [-1, 1], higher = dropped first.
  Returns:
    (kept [B, N-n, d], valid [B, N-n], positions [B, N-n]), kept tokens in their
    original order.
  """
  b, n_tok, _ = x.shape
  drop = token_merge.select_items(score, valid, valid, n, quota)
  idx = jnp.arange(n_tok)[None]
  keep_idx = jnp.argsort(jnp.where(drop, n_tok + idx, idx), axis=1)[:, :n_tok - n]
  g = lambda a: jnp.take_along_axis(a, keep_idx.reshape(b, -1, *([1] * (a.ndim - 2))), axis=1)
  return g(x), g(valid), g(positions)


@dataclasses.dataclass(frozen=True)
class Reducer:
  """Trace-time description of one prefill's reduction (static fields only).

  Attributes:
    method: a reduction method.
    merges: tokens removed per layer.
    num_audio: P, the original audio prefix length.
    seed: for the random baselines.
    use_kernel: fastadasp_dense / fastadasp_sparse merging through
      `pallas_kernels.dispatch.merge_tokens`: False = its pure-JAX reference
      (`token_merge.merge_reference`); True = the Pallas kernel (same selection
      and means; in the Pallas interpreter off GPU/TPU). The model sets it from
      `config.kernels.enabled`.
  """
  method: str
  merges: tuple[int, ...]
  num_audio: int
  seed: int = 0
  use_kernel: bool = False

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
      (x [B, N-n, d], valid [B, N-n], positions [B, N-n] float32).
    """
    n = self.merges[layer]
    b, n_tok, _ = x.shape
    if n == 0:
      return x, valid, positions
    quota = row_quota(n, orig_len, self.num_audio, valid)
    rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), layer)
    received = jnp.sum(probs, axis=(1, 2, 3))[:, :n_tok]  # attention each token got
    m = self.method
    if m in ("fastadasp_dense", "fastadasp_sparse"):
      out = dispatch.merge_tokens(x, jnp.mean(keys, axis=2), received, valid, n,
                                  positions=positions, quota=quota,
                                  use_kernel=self.use_kernel,
                                  interpret=dispatch.needs_interpreter())
      return out.merged, out.merged_valid, out.merged_positions
    if m == "random_merge":
      return merge_tokens(x, jnp.ones((b, n_tok)), valid, positions, n, quota,
                          jax.random.uniform(rng, (b, n_tok - 1)))
    if m == "atome":
      even = (jnp.arange(n_tok - 1) % 2 == 0)[None].repeat(b, 0)
      cosine = token_merge.edge_priorities(jnp.mean(keys, axis=2), valid)
      return merge_tokens(x, jnp.ones((b, n_tok)), valid, positions, n, quota, cosine,
                          eligible=even)
    if m == "random_evict":
      return evict_tokens(x, valid, positions, n, quota, jax.random.uniform(rng, (b, n_tok)))
    if m == "fastv":
      return evict_tokens(x, valid, positions, n, quota, -jnp.tanh(received))
    raise ConfigError(f"model.reduction.method={m!r}: expected one of {REDUCTION_METHODS}")
