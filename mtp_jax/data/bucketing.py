"""Length bucketing: which utterances share a batch, and each batch's fixed shape.

Pure numpy; no audio is read here. Inputs are per-utterance lengths:
`num_samples` (int [N], waveform samples at the pipeline's sample rate) and
`num_tokens` (int [N], transcript tokens without bos/eos).

2-D bucketing (`make_buckets(..., num_token_bins > 1)`):
  1. Duration bins of equal TOTAL duration: utterances sorted by length are cut
     where the cumulative duration crosses k / num_duration_bins of the total,
     so every bin holds about the same amount of audio (the long tail gets
     narrow bins, where padding costs the most).
  2. Each duration bin is cut the same way by padded token count into
     `num_token_bins` sub-buckets.
  3. Each bucket gets ONE padded shape for all its batches:
     S = its longest utterance rounded up to `audio_pad_multiple` samples,
     L = (its longest transcript + `text_pad_extra`) rounded up to
     `token_pad_multiple` (8), and a batch size B from the budgets:
     B * S <= audio_seconds_per_batch * sample_rate and
     B * L <= tokens_per_batch, whichever binds, rounded down to a multiple of
     `batch_size_multiple` (never below it); then balanced: with k = the number
     of batches that budget needs for the bucket, B = ceil(n / k) rounded up to
     the multiple, so the last batch is (nearly) full. An override file can
     set B per shape.
  The number of distinct batch shapes is at most the number of buckets.

Option `binning="min_padding"` replaces the equal-total cuts (on both axes) by
cuts that minimize the padding exactly (dynamic programming over the distinct
padded lengths), for fewer shapes at the same padding.

1-D bucketing is the same with `num_token_bins=1`; random batching is one
bucket with a fixed batch size (`make_random_bucket`).

`plan_epoch` turns buckets into one epoch's batches (seeded shuffle inside each
bucket and of the batch order); `padding_stats` measures the padding of any
list of batches, so benchmarks can compare the strategies.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Mapping, Sequence

import numpy as np

EMPTY_ROW = -1  # Row index of a padding row (no utterance) in a planned batch.
REMAINDER_MODES = ("fill", "pad", "drop")
BINNINGS = ("equal_total", "min_padding")


@dataclasses.dataclass(frozen=True)
class Bucket:
  """A set of utterances batched together with one fixed padded shape.

  Attributes:
    index: position in the bucket list.
    max_samples: S, padded waveform length of every batch of this bucket.
    max_tokens: L, padded transcript length, a multiple of `token_pad_multiple`.
    batch_size: B, rows per batch (global, before splitting across processes).
    members: int64 [n] indices of the bucket's utterances, ascending.
    duration_bin: which duration bin the bucket comes from.
    token_bin: which token sub-bucket of that duration bin.
  """
  index: int
  max_samples: int
  max_tokens: int
  batch_size: int
  members: np.ndarray
  duration_bin: int = 0
  token_bin: int = 0

  @property
  def shape_key(self) -> str:
    return bucket_key(self.max_samples, self.max_tokens)

  def num_batches(self, remainder: str = "fill") -> int:
    """Batches per epoch: partial last batch counted unless remainder='drop'."""
    n, b = len(self.members), self.batch_size
    return n // b if remainder == "drop" else -(-n // b)

  def describe(self) -> dict:
    return {"index": self.index, "max_samples": self.max_samples,
            "max_tokens": self.max_tokens, "batch_size": self.batch_size,
            "num_utterances": int(len(self.members)),
            "duration_bin": self.duration_bin, "token_bin": self.token_bin}


def bucket_key(max_samples: int, max_tokens: int) -> str:
  """Key of a padded shape in a batch-size override file, e.g. "160000x64"."""
  return f"{int(max_samples)}x{int(max_tokens)}"


def round_up(x: np.ndarray | int, multiple: int) -> np.ndarray | int:
  """Rounds up to a multiple of `multiple` (elementwise for arrays)."""
  return -(-x // multiple) * multiple


def equal_total_bins(values: np.ndarray, num_bins: int,
                     min_fraction: float = 0.25) -> np.ndarray:
  """Bins positive values so that every bin holds about the same total.

  Bin edges are values at which the cumulative sum of the sorted values
  crosses k / num_bins of the total; equal values always share a bin, so fewer
  bins than asked can come out (empty bins are dropped). Ties and outliers can
  still leave a bin with a tiny total (e.g. one long transcript): a bin below
  `min_fraction` of the fair share total / num_bins is merged into its upper
  neighbour (the last bin into its lower one).

  Args:
    values: [N] non-negative numbers (e.g. durations).
    num_bins: wanted number of bins (>= 1).
    min_fraction: merge threshold as a fraction of total / num_bins.

  Returns:
    int64 [N] bin ids in 0..(number of non-empty bins - 1), increasing with value.
  """
  values = np.asarray(values, dtype=np.float64)
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  if values.size == 0:
    return np.zeros(0, np.int64)
  order = np.sort(values)
  cum = np.cumsum(order)
  total = cum[-1]
  if num_bins == 1 or total <= 0:
    return np.zeros(values.shape, np.int64)
  # Edge k: the value at which the cumulative total first reaches k/num_bins.
  targets = total * np.arange(1, num_bins) / num_bins
  edges = order[np.minimum(np.searchsorted(cum, targets, side="left"),
                           len(order) - 1)]
  raw = np.searchsorted(edges, values, side="left")  # <= edge k -> bin k.
  _, dense = np.unique(raw, return_inverse=True)
  dense = dense.astype(np.int64).reshape(values.shape)
  sums = list(np.bincount(dense, weights=values))
  target = list(range(len(sums)))  # Bin k ends up as target[k].
  threshold = min_fraction * total / num_bins
  while len(sums) > 1:
    small = [k for k, v in enumerate(sums) if v < threshold]
    if not small:
      break
    k = small[0]
    into = k + 1 if k + 1 < len(sums) else k - 1
    sums[into] += sums[k]
    del sums[k]
    # Relabel: bin k joins `into`; bins above k move down by one.
    target = [into if t == k else t for t in target]
    target = [t - 1 if t > k else t for t in target]
  return np.asarray(target, np.int64)[dense]


def min_padding_bins(padded: np.ndarray, real: np.ndarray,
                     num_bins: int) -> np.ndarray:
  """Bins that minimize total padding (an alternative to `equal_total_bins`).

  Exact dynamic programming over the distinct padded values: a bin padded to
  its largest value v costs sum(v - real) over its members; the cuts minimize
  the sum over bins. Cost is O(num_bins * D^2) for D distinct padded values
  (small, since padded values are rounded to a multiple).

  Args:
    padded: int [N] each utterance's length rounded up to the pad multiple.
    real: [N] real lengths (padding is measured against these).
    num_bins: maximum number of bins.

  Returns:
    int64 [N] bin ids, increasing with `padded`.
  """
  padded = np.asarray(padded, np.int64)
  if padded.size == 0:
    return np.zeros(0, np.int64)
  values, inverse = np.unique(padded, return_inverse=True)
  d = len(values)
  k_max = min(num_bins, d)
  cnt = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=d))])
  tot = np.concatenate([[0], np.cumsum(np.bincount(
      inverse, weights=np.asarray(real, np.float64), minlength=d))])
  # cost(a, b): bin of distinct values a..b (inclusive), padded to values[b].
  def cost(a, b):
    return (cnt[b + 1] - cnt[a]) * values[b] - (tot[b + 1] - tot[a])
  # dp[k, b]: least padding of values 0..b in at most k + 1 bins; cut[k, b]:
  # first value of the last bin, or -1 when k bins were already as good.
  dp = np.zeros((k_max, d))
  cut = np.zeros((k_max, d), np.int64)
  dp[0] = [cost(0, b) for b in range(d)]
  for k in range(1, k_max):
    dp[k], cut[k] = dp[k - 1], -1
    for b in range(1, d):
      starts = np.arange(1, b + 1)
      c = dp[k - 1, starts - 1] + cost(starts, b)
      i = int(np.argmin(c))
      if c[i] < dp[k, b]:
        dp[k, b], cut[k, b] = c[i], starts[i]
  bin_of_value = np.zeros(d, np.int64)
  bounds, b, k = [], d - 1, k_max - 1
  while b >= 0:
    while k > 0 and cut[k, b] == -1:
      k -= 1
    a = int(cut[k, b]) if k > 0 else 0
    bounds.append((a, b))
    b, k = a - 1, k - 1
  for label, (a, b) in enumerate(reversed(bounds)):
    bin_of_value[a:b + 1] = label
  return bin_of_value[inverse]


def budget_batch_size(max_samples: int, max_tokens: int, *, sample_rate: int,
                      audio_seconds_per_batch: float, tokens_per_batch: int,
                      multiple: int = 1) -> int:
  """Largest batch size within both budgets, as a multiple of `multiple`.

  Args:
    max_samples: S, padded samples per row.
    max_tokens: L, padded tokens per row.
    sample_rate: samples per second.
    audio_seconds_per_batch: padded audio budget per batch.
    tokens_per_batch: padded token budget per batch.
    multiple: the batch size is a positive multiple of this (e.g. the
      number of data-parallel devices); a shape too large for the budgets still
      gets `multiple` rows.
  """
  by_audio = math.floor(audio_seconds_per_batch * sample_rate / max_samples)
  by_tokens = math.floor(tokens_per_batch / max_tokens)
  b = min(by_audio, by_tokens) // multiple * multiple
  return max(multiple, b)


def load_batch_size_overrides(path: str | os.PathLike) -> dict[str, int]:
  """Reads a per-bucket batch-size override file.

  Format: a JSON object mapping `bucket_key(S, L)` ("<samples>x<tokens>") to a
  batch size, optionally nested under "batch_sizes":
    {"batch_sizes": {"48640x32": 96, "97280x48": 40}}

  Raises:
    ValueError: not that format (the message names the file).
  """
  path = os.fspath(path)
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: invalid JSON: {e}") from e
  if isinstance(data, dict) and isinstance(data.get("batch_sizes"), dict):
    data = data["batch_sizes"]
  if not isinstance(data, dict):
    raise ValueError(f"{path}: expected a JSON object of '<S>x<L>': batch_size")
  out = {}
  for k, v in data.items():
    if (not isinstance(v, int) or isinstance(v, bool) or v < 1
        or len(str(k).split("x")) != 2):
      raise ValueError(f"{path}: entry {k!r}: {v!r} is not '<S>x<L>': positive int")
    out[str(k)] = v
  return out


def make_buckets(num_samples: Sequence[int], num_tokens: Sequence[int], *,
                 num_duration_bins: int, num_token_bins: int, sample_rate: int,
                 audio_seconds_per_batch: float, tokens_per_batch: int,
                 audio_pad_multiple: int = 1, token_pad_multiple: int = 8,
                 text_pad_extra: int = 0, batch_size_multiple: int = 1,
                 batch_size_overrides: Mapping[str, int] | None = None,
                 binning: str = "equal_total") -> list[Bucket]:
  """2-D (or, with num_token_bins=1, 1-D) length bucketing.

  Args:
    num_samples: int [N] waveform lengths in samples.
    num_tokens: int [N] transcript lengths in tokens.
    num_duration_bins: duration bins of equal total duration.
    num_token_bins: token sub-buckets per duration bin (1 = 1-D bucketing).
    sample_rate: samples per second (for the audio budget).
    audio_seconds_per_batch: padded audio budget per batch, in seconds.
    tokens_per_batch: padded token budget per batch.
    audio_pad_multiple: S is a multiple of this many samples.
    token_pad_multiple: L is a multiple of this (8).
    text_pad_extra: L >= longest transcript + this (1 leaves room for an eos).
    batch_size_multiple: every batch size is a multiple of this.
    batch_size_overrides: {bucket_key(S, L): B}; must be multiples of
      `batch_size_multiple`.
    binning: "equal_total" (bins of equal total duration / tokens, see
      `equal_total_bins`) or "min_padding" (bins that minimize padding, see
      `min_padding_bins`; less padding for the same number of shapes).

  Returns:
    Non-empty buckets, every utterance in exactly one, ordered by
    (duration bin, token bin).
  """
  samples = np.asarray(num_samples, np.int64)
  tokens = np.asarray(num_tokens, np.int64)
  if samples.shape != tokens.shape or samples.ndim != 1:
    raise ValueError(f"num_samples {samples.shape} and num_tokens "
                     f"{tokens.shape} must be 1-D of equal length")
  if samples.size and samples.min() <= 0:
    raise ValueError("every utterance needs at least one sample")
  overrides = dict(batch_size_overrides or {})
  padded_tokens = round_up(tokens + text_pad_extra, token_pad_multiple)
  if binning not in BINNINGS:
    raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
  padded_samples = round_up(samples, audio_pad_multiple)
  if binning == "equal_total":
    duration_bin = equal_total_bins(samples, num_duration_bins)
  else:
    duration_bin = min_padding_bins(padded_samples, samples, num_duration_bins)
  buckets = []
  for d in range(int(duration_bin.max(initial=-1)) + 1):
    in_bin = np.flatnonzero(duration_bin == d)
    if binning == "equal_total":
      token_bin = equal_total_bins(padded_tokens[in_bin], num_token_bins)
    else:
      token_bin = min_padding_bins(padded_tokens[in_bin], tokens[in_bin],
                                   num_token_bins)
    for t in range(int(token_bin.max(initial=-1)) + 1):
      members = in_bin[token_bin == t]
      s = int(round_up(int(samples[members].max()), audio_pad_multiple))
      l = int(padded_tokens[members].max())
      key = bucket_key(s, l)
      if key in overrides:
        b = overrides[key]
        if b % batch_size_multiple:
          raise ValueError(f"batch size override {key}: {b} is not a multiple "
                           f"of batch_size_multiple={batch_size_multiple}")
      else:
        b = budget_batch_size(
            s, l, sample_rate=sample_rate,
            audio_seconds_per_batch=audio_seconds_per_batch,
            tokens_per_batch=tokens_per_batch, multiple=batch_size_multiple)
        # Balance: as many batches as the budget needs, but each as small as
        # that count allows, so a bucket's last batch is (nearly) full.
        num_batches = -(-len(members) // b)
        b = int(round_up(-(-len(members) // num_batches), batch_size_multiple))
      buckets.append(Bucket(index=len(buckets), max_samples=s, max_tokens=l,
                            batch_size=int(b), members=members,
                            duration_bin=d, token_bin=t))
  return buckets


def make_random_bucket(num_samples: Sequence[int], num_tokens: Sequence[int], *,
                       batch_size: int, audio_pad_multiple: int = 1,
                       token_pad_multiple: int = 8, text_pad_extra: int = 0
                       ) -> list[Bucket]:
  """Random batching: one bucket of every utterance, padded to the longest.

  Returns:
    [Bucket] whose shape fits every utterance, so shapes stay fixed.
  """
  samples = np.asarray(num_samples, np.int64)
  tokens = np.asarray(num_tokens, np.int64)
  if samples.size == 0:
    return []
  return [Bucket(
      index=0, max_samples=int(round_up(int(samples.max()), audio_pad_multiple)),
      max_tokens=int(round_up(int(tokens.max()) + text_pad_extra,
                              token_pad_multiple)),
      batch_size=int(batch_size), members=np.arange(samples.size))]


def plan_epoch(buckets: Sequence[Bucket], *, seed: int, epoch: int,
               shuffle: bool = True, remainder: str = "fill"
               ) -> list[tuple[int, np.ndarray]]:
  """One epoch's batches.

  With shuffle, each bucket's members and then the batch order are permuted by
  a generator seeded with (seed, epoch); without it, batches come bucket by
  bucket in index order.

  Args:
    buckets: from `make_buckets` / `make_random_bucket`.
    seed: base seed.
    epoch: epoch number (part of the seed).
    shuffle: permute or not.
    remainder: what to do with a bucket's last partial batch:
      "fill" completes it with other utterances of the same bucket (chosen at
      random; no padding rows, a few utterances twice per epoch), "pad" fills
      it with EMPTY_ROW rows, "drop" drops it.

  Returns:
    [(bucket index, int64 [B] utterance indices, EMPTY_ROW for empty rows)].
  """
  if remainder not in REMAINDER_MODES:
    raise ValueError(f"remainder must be one of {REMAINDER_MODES}, got {remainder!r}")
  rng = np.random.default_rng([int(seed), int(epoch)])
  batches = []
  for bucket in buckets:
    members = bucket.members
    if shuffle:
      members = rng.permutation(members)
    b = bucket.batch_size
    n_full, rest = divmod(len(members), b)
    for i in range(n_full):
      batches.append((bucket.index, members[i * b:(i + 1) * b]))
    if rest and remainder != "drop":
      tail = members[n_full * b:]
      if remainder == "fill":
        # Fill from the bucket's other utterances, cycling if it is tiny.
        others = np.resize(rng.permutation(members[:n_full * b])
                           if n_full else tail, b - rest)
        extra = others
      else:
        extra = np.full(b - rest, EMPTY_ROW, np.int64)
      batches.append((bucket.index, np.concatenate([tail, extra])))
  if shuffle:
    batches = [batches[i] for i in rng.permutation(len(batches))]
  return batches


def padding_stats(batches: Sequence[Sequence[int]],
                  shapes: Sequence[tuple[int, int]],
                  num_samples: Sequence[int], num_tokens: Sequence[int]
                  ) -> dict:
  """Padding of any batching.

  Args:
    batches: per batch, the utterance indices of its rows (EMPTY_ROW = an
      empty row).
    shapes: per batch, its padded (S, L).
    num_samples: int [N] real samples per utterance.
    num_tokens: int [N] real tokens per utterance.

  Returns:
    {"audio_padding": padded samples / all samples in the batches,
     "token_padding": same for tokens, "empty_rows": fraction of rows without
     an utterance, "num_batches", "num_rows", "num_shapes": distinct (B, S, L)}.
  """
  samples = np.asarray(num_samples, np.int64)
  tokens = np.asarray(num_tokens, np.int64)
  all_s = real_s = all_t = real_t = rows = empty = 0
  shape_set = set()
  for rows_idx, (s, l) in zip(batches, shapes):
    rows_idx = np.asarray(rows_idx, np.int64)
    real = rows_idx[rows_idx != EMPTY_ROW]
    all_s += len(rows_idx) * int(s)
    all_t += len(rows_idx) * int(l)
    real_s += int(samples[real].sum())
    real_t += int(tokens[real].sum())
    rows += len(rows_idx)
    empty += len(rows_idx) - len(real)
    shape_set.add((len(rows_idx), int(s), int(l)))
  frac = lambda real, total: 1.0 - real / total if total else 0.0
  return {"audio_padding": frac(real_s, all_s), "token_padding": frac(real_t, all_t),
          "empty_rows": empty / rows if rows else 0.0,
          "num_batches": len(batches), "num_rows": rows,
          "num_shapes": len(shape_set)}


def plan_padding_stats(buckets: Sequence[Bucket],
                       plan: Sequence[tuple[int, np.ndarray]],
                       num_samples: Sequence[int], num_tokens: Sequence[int]
                       ) -> dict:
  """`padding_stats` of a `plan_epoch` result (shapes from its buckets)."""
  by_index = {b.index: b for b in buckets}
  shapes = [(by_index[i].max_samples, by_index[i].max_tokens) for i, _ in plan]
  return padding_stats([rows for _, rows in plan], shapes, num_samples, num_tokens)
