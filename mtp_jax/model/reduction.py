"""Audio-token reduction inside the decoder prefill: FastAdaSP and baselines.

Where: in `SpeechLLaMA.prefill` only (never the training forward nor `decode_step`),
inside a chosen decoder layer after attention and before the MLP. Layer l removes
`merges[l]` tokens from the audio span of the sequence, so its MLP and every later
layer run on fewer tokens (static shapes per layer) and the KV cache of later
layers holds fewer valid audio slots.

Methods (`config.model.reduction.method`):
  * fastadasp_dense: at every layer of the schedule, cosine similarity of adjacent
    audio tokens' keys (that layer's pre-rotary keys, mean over kv heads); merge
    along the top-n most similar adjacent edges (chains form groups); each merged
    token is the attention-received-weighted mean of its group, the weight of token
    j being the attention probability it received from every query, summed over
    heads. Schedules: "decay" (n per layer falls linearly from n0 at the start layer
    to 0 at the last layer) or "constant" (n0 at every layer from the start layer).
  * fastadasp_sparse: one weighted merge, at the layer chosen by
    `choose_sparse_layer` (a transfer-entropy criterion, see there).
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
import math
from typing import Callable, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from mtp_jax.config import ConfigError, ModelConfig

METHODS = ("none", "fastadasp_dense", "fastadasp_sparse", "random_merge", "random_evict",
           "atome", "fastv")
SINGLE_LAYER = ("fastadasp_sparse", "fastv")
EVICT = ("random_evict", "fastv")
EPS = 1e-6
_NEG = -jnp.inf


# ---------------------------------------------------------------- schedules and plans
def merge_schedule(method: str, schedule: str, num_layers: int, start_layer: int, n0: int,
                   num_audio: int, max_step_ratio: float = 0.5) -> tuple[int, ...]:
  """Tokens removed at each layer (static Python ints).

  Args:
    method: a reduction method (single-layer methods ignore `schedule`).
    schedule: "decay": n_l = round(n0 * (L-1-l) / (L-1-l0)) for l >= l0 (0 at the last
      layer; a start at the last layer removes n0 there); "constant": n_l = n0 for l >= l0.
    num_layers: L.
    start_layer: l0.
    n0: tokens removed at the start layer.
    num_audio: P, the audio prefix length.
    max_step_ratio: multi-layer methods: cap on tokens removed at one layer, as a
      fraction of the audio tokens entering it (A-ToMe is also capped at half of them).
  Returns:
    tuple of L ints; their running sum never exceeds P - 1 (one audio token stays).
  """
  out, p = [], num_audio
  for l in range(num_layers):
    if l < start_layer or n0 <= 0:
      n = 0
    elif method in SINGLE_LAYER:
      n = n0 if l == start_layer else 0
    elif schedule == "constant" or start_layer == num_layers - 1:
      n = n0
    elif schedule == "decay":
      n = int(round(n0 * (num_layers - 1 - l) / (num_layers - 1 - start_layer)))
    else:
      raise ConfigError(f"model.reduction.schedule={schedule!r}: expected decay|constant")
    # Multi-layer schedules are capped per layer; a single-layer method may remove
    # all but one token at its layer (FastV-style one-shot pruning).
    cap = p if method in SINGLE_LAYER else int(math.floor(max_step_ratio * p))
    if method == "atome":
      cap = min(cap, p // 2)
    n = max(0, min(n, cap, p - 1))
    out.append(n)
    p -= n
  return tuple(out)


def make_plan(cfg: ModelConfig, num_audio: int, num_text: int) -> tuple[int, ...] | None:
  """Per-layer token removals for a prefill of P audio + T0 text tokens, or None.

  Solved at trace time from the static shapes: with `flops_reduction > 0` by
  `mtp_jax.flops.solve_reduction`, else from `start_layer` and `ratio` (n0 =
  round(ratio * P)). None when the method is "none" or nothing would be removed
  (then prefill runs the unreduced path, bit-identical to no reduction).
  """
  from mtp_jax import flops  # pylint: disable=g-import-not-at-top
  r = cfg.reduction
  if r.method == "none" or num_audio < 2:
    return None
  start = r.start_layer
  if r.method == "fastadasp_sparse":
    if r.sparse_layer < 0:
      raise ConfigError("model.reduction.sparse_layer=-1: fastadasp_sparse needs a layer; "
                        "choose it with mtp_jax.model.reduction.choose_sparse_layer")
    start = r.sparse_layer
  if r.flops_reduction > 0:
    merges = flops.solve_reduction(
        cfg, num_audio, num_text, r.flops_reduction, schedule=r.schedule, method=r.method,
        start_layer=start, max_step_ratio=r.max_step_ratio)["merges"]
  else:
    if r.ratio <= 0:
      return None
    if start < 0:
      raise ConfigError(f"model.reduction.start_layer=-1 with ratio={r.ratio}: set the start "
                        "layer, or set flops_reduction instead of ratio")
    merges = merge_schedule(r.method, r.schedule, cfg.decoder.num_layers, start,
                            int(round(r.ratio * num_audio)), num_audio, r.max_step_ratio)
  return tuple(merges) if sum(merges) else None


# ---------------------------------------------------------------- token reduction ops
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
    from pallas_kernels import dispatch  # pylint: disable=g-import-not-at-top
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
      raise ConfigError(f"model.reduction.method={m!r}: expected one of {METHODS}")
    return out[0], out[1], out[2]


# ---------------------------------------------------------------- transfer entropy (sparse)
def gaussian_information_loss(full: np.ndarray, reduced: np.ndarray, ridge: float = 1e-3
                              ) -> float:
  """Gaussian estimate of the information the reduced features lose about the full ones.

  Models (F, G) as jointly Gaussian (sample covariances, ridge-regularized by
  `ridge` times the mean variance) and returns the conditional differential entropy
  H(F | G) = 0.5 * logdet(2 pi e Sigma_{F|G}), Sigma_{F|G} = S_FF - S_FG S_GG^-1 S_GF,
  in nats per vector. Since H(F) does not depend on the reduction, minimizing it is
  maximizing the mutual information I(F; G) = H(F) - H(F|G): the "transfer entropy"
  from full to reduced final-layer features.

  Args:
    full: [M, d] final-layer features without reduction (M samples).
    reduced: [M, d] the same positions' features with the reduction.
  Returns:
    H(F | G) in nats (lower = less information lost).
  """
  f = np.asarray(full, np.float64)
  g = np.asarray(reduced, np.float64)
  f = f - f.mean(0)
  g = g - g.mean(0)
  m, d = f.shape
  lam = ridge * max(float(np.mean(f * f)), 1e-12)
  sff = f.T @ f / m + lam * np.eye(d)
  sgg = g.T @ g / m + lam * np.eye(d)
  sfg = f.T @ g / m
  cond = sff - sfg @ np.linalg.solve(sgg, sfg.T)
  cond = 0.5 * (cond + cond.T) + lam * np.eye(d)
  sign, logdet = np.linalg.slogdet(cond)
  if sign <= 0:
    raise FloatingPointError("mtp_jax/model/reduction.py: conditional covariance not PD")
  return 0.5 * (logdet + d * math.log(2 * math.pi * math.e))


def choose_sparse_layer(cfg: ModelConfig, params, emb, valid, alen, text_in, text_valid,
                        flops_reduction: float, *, candidates: Sequence[int] | None = None,
                        prefill_text_tokens: int = 1, model_factory: Callable | None = None
                        ) -> tuple[int, dict[int, float]]:
  """Transfer-entropy choice of the single merge layer for fastadasp_sparse.

  For each candidate layer i, runs the prefill over a few calibration utterances
  (`text_in` = their transcripts, teacher-forced in the prefill) with one weighted
  merge at layer i sized to remove `flops_reduction` of the FLOPs of the deployed
  prefill (P audio + `prefill_text_tokens` text tokens, the same token count is then
  merged in the longer calibration prefill), and
  compares the final-layer (final-normed) features at the valid text positions with
  the unreduced ones via `gaussian_information_loss`. Layers where the target is not
  reachable are skipped. Returns the layer with the least loss.

  Args:
    cfg: the model config (its reduction settings are replaced).
    params: model variables.
    emb: [B, P, d], valid: [B, P], alen: [B]: audio tokens from `model.encode`.
    text_in: [B, T] int32 `[BOS, y...]`; text_valid: [B, T] bool.
    flops_reduction: target fraction of decoder prefill FLOPs.
    candidates: layers to try (default all).
    prefill_text_tokens: T0 of the deployed prefill (1 = BOS).
    model_factory: ModelConfig -> model (default `SpeechLLaMA`).
  Returns:
    (best layer, {layer: loss in nats}).
  """
  from mtp_jax import flops  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  factory = model_factory or SpeechLLaMA
  num_layers = cfg.decoder.num_layers
  candidates = list(range(num_layers)) if candidates is None else list(candidates)
  p, t = emb.shape[1], text_in.shape[1]
  keep = np.asarray(text_valid)

  def features(rcfg):
    model = factory(dataclasses.replace(cfg, reduction=rcfg))
    fn = jax.jit(lambda pr, e, v, a, x: model.apply(
        pr, e, v, a, x, t, method=model.prefill_from_embeddings)[0]["hidden"])
    return np.asarray(fn(params, emb, valid, alen, text_in))[keep]

  base = dataclasses.replace(cfg.reduction, method="none", flops_reduction=0.0, ratio=0.0)
  full = features(base)
  losses = {}
  for layer in candidates:
    sol = flops.solve_reduction(cfg, p, prefill_text_tokens, flops_reduction, schedule="decay",
                                method="fastadasp_sparse", start_layer=layer,
                                max_step_ratio=cfg.reduction.max_step_ratio)
    if sol["achieved"] + 1e-9 < flops_reduction:
      continue
    rc = dataclasses.replace(base, method="fastadasp_sparse", sparse_layer=layer,
                             start_layer=layer, ratio=sol["n0"] / p)
    losses[layer] = gaussian_information_loss(full, features(rc))
  if not losses:
    raise ValueError(f"mtp_jax/model/reduction.py: flops_reduction={flops_reduction} is not "
                     f"reachable with one merge at any of layers {candidates}")
  return min(losses, key=losses.get), losses


def calibrate_sparse_layer(cfg, params, audio, audio_len, flops_reduction: float,
                           max_new_tokens: int = 24):
  """Transfer-entropy layer choice on one calibration batch, greedy hypotheses as text.

  Args:
    cfg: ModelConfig; params: its params.
    audio: [B, S]; audio_len: [B].
    flops_reduction: the target the single merge must reach.
  Returns:
    (layer, {layer: information loss}) as `choose_sparse_layer`.
  """
  from mtp_jax.decode.api import decode  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  model = SpeechLLaMA(cfg)
  audio, alen = jnp.asarray(audio), jnp.asarray(audio_len)
  res = decode(model, params, audio, alen, strategy="greedy", max_new_tokens=max_new_tokens)
  toks, lens = np.asarray(res.tokens), np.asarray(res.lengths)
  t = int(max(lens.max(), 1)) + 1
  text = np.zeros((toks.shape[0], t), np.int32)
  text[:, 0] = 1  # BOS
  text[:, 1:] = toks[:, :t - 1]
  text_valid = (np.arange(t)[None] <= lens[:, None]) & (np.asarray(alen)[:, None] > 0)
  emb, valid, n = jax.jit(lambda p, a, l: model.apply(p, a, l, method=model.encode))(
      params, audio, alen)
  return choose_sparse_layer(cfg, params, emb, valid, n, jnp.asarray(text),
                             jnp.asarray(text_valid), flops_reduction)
