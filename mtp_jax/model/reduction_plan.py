"""Audio-token reduction, planning: how many tokens each decoder layer removes.

Pure Python over static shapes (no arrays): the per-layer budgets `merges[l]` that
`SpeechLLaMA.prefill` hands to the in-graph ops (`mtp_jax.model.reduction_ops`),
either from `model.reduction.start_layer` / `ratio` directly or solved for a target
fraction of decoder-prefill FLOPs (`solve_reduction`, counting with
`mtp_jax.flops.reduced_prefill_flops`).

Schedules: "decay" (n per layer falls linearly from n0 at the start layer to 0 at
the last layer) or "constant" (n0 at every layer from the start layer); the
single-layer methods (fastadasp_sparse, fastv) remove n0 once, at the start layer.
"""
from __future__ import annotations

import math

from mtp_jax import flops
from mtp_jax.config import ConfigError, ModelConfig

SINGLE_LAYER = ("fastadasp_sparse", "fastv")


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


def solve_reduction(cfg: ModelConfig, num_audio_tokens: int, num_text_tokens: int,
                    target: float, *, schedule: str, method: str = "fastadasp_dense",
                    start_layer: int = -1, max_step_ratio: float = 0.5,
                    causal: bool = True) -> dict:
  """(start_layer, ratio) removing at least `target` of the decoder prefill FLOPs.

  Policy: the latest start layer that can reach the target (shallow layers are the
  most sensitive to reduction), with the smallest start-layer token count n0 there
  (found by bisection; FLOPs fall monotonically in n0). If no start layer reaches the
  target, the plan with the largest reduction is returned (`achieved < target`).

  Args:
    cfg: model config (decoder sizes).
    num_audio_tokens: P, the (padded) audio prefix length of the batch.
    num_text_tokens: T0 text tokens in the prefill.
    target: fraction in [0, 1) of decoder-layer prefill FLOPs to remove.
    schedule: "decay" | "constant" (ignored for single-layer methods).
    method: a `model.reduction.method` (sets single-layer and per-layer caps).
    start_layer: fixed start layer, or -1 to search.
    max_step_ratio: cap on tokens removed at one layer, as a fraction of P.
    causal: count FLOPs as `flops.reduced_prefill_flops` with this `causal`.
  Returns:
    dict(start_layer, n0, ratio = n0 / P, merges (tuple per layer), achieved, target).
  """
  num_layers = cfg.decoder.num_layers
  full = sum(flops.reduced_prefill_flops(cfg, num_audio_tokens, num_text_tokens,
                                         [0] * num_layers, causal))

  def make(l0, n0):
    merges = merge_schedule(method, schedule, num_layers, l0, n0, num_audio_tokens,
                            max_step_ratio)
    f = sum(flops.reduced_prefill_flops(cfg, num_audio_tokens, num_text_tokens, merges,
                                        causal))
    return merges, 1.0 - f / full

  layers = [start_layer] if start_layer >= 0 else list(range(num_layers - 1, -1, -1))
  best = None
  for l0 in layers:
    hi = max(num_audio_tokens - 1, 0)
    merges, got = make(l0, hi)
    if best is None or got > best[2] + 1e-12:
      best = (l0, hi, got, merges)
    if got < target or target <= 0:
      continue
    lo = 0  # make(l0, lo) < target <= make(l0, hi)
    while hi - lo > 1:
      mid = (lo + hi) // 2
      if make(l0, mid)[1] >= target:
        hi = mid
      else:
        lo = mid
    merges, got = make(l0, hi)
    best = (l0, hi, got, merges)
    break
  if target <= 0:
    l0 = layers[0]
    best = (l0, 0, 0.0, make(l0, 0)[0])
  l0, n0, got, merges = best
  return {"start_layer": l0, "n0": n0, "ratio": n0 / max(num_audio_tokens, 1),
          "merges": tuple(merges), "achieved": got, "target": target}


def make_plan(cfg: ModelConfig, num_audio: int, num_text: int) -> tuple[int, ...] | None:
  """Per-layer token removals for a prefill of P audio + T0 text tokens, or None.

  Solved at trace time from the static shapes: with `flops_reduction > 0` by
  `solve_reduction`, else from `start_layer` and `ratio` (n0 = round(ratio * P)).
  None when the method is "none" or nothing would be removed (then prefill runs the
  unreduced path, bit-identical to no reduction).
  """
  r = cfg.reduction
  if r.method == "none" or num_audio < 2:
    return None
  start = r.start_layer
  if r.method == "fastadasp_sparse":
    if r.sparse_layer < 0:
      raise ConfigError("model.reduction.sparse_layer=-1: fastadasp_sparse needs a layer; "
                        "choose it with "
                        "mtp_jax.model.reduction_calibrate.choose_sparse_layer")
    start = r.sparse_layer
  if r.flops_reduction > 0:
    merges = solve_reduction(
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
