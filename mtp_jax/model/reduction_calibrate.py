"""Audio-token reduction, offline calibration: the fastadasp_sparse merge layer.

`fastadasp_sparse` merges once, at one decoder layer (`model.reduction.sparse_layer`).
This module chooses that layer with a transfer-entropy criterion: it runs the model's
prefill over a few calibration utterances with one merge at each candidate layer and
keeps the layer whose final-layer features lose the least information about the
unreduced ones (`gaussian_information_loss`). It runs the model (and, for
`calibrate_sparse_layer`, greedy decoding), so nothing in the model imports it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.config import ModelConfig
from mtp_jax.decode.api import decode
from mtp_jax.model import reduction_plan
from mtp_jax.model.speech_llama import SpeechLLaMA


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
    raise FloatingPointError("mtp_jax/model/reduction_calibrate.py: conditional covariance "
                             "not PD")
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
    sol = reduction_plan.solve_reduction(
        cfg, p, prefill_text_tokens, flops_reduction, schedule="decay",
        method="fastadasp_sparse", start_layer=layer,
        max_step_ratio=cfg.reduction.max_step_ratio)
    if sol["achieved"] + 1e-9 < flops_reduction:
      continue
    rc = dataclasses.replace(base, method="fastadasp_sparse", sparse_layer=layer,
                             start_layer=layer, ratio=sol["n0"] / p)
    losses[layer] = gaussian_information_loss(full, features(rc))
  if not losses:
    raise ValueError(f"mtp_jax/model/reduction_calibrate.py: flops_reduction="
                     f"{flops_reduction} is not reachable with one merge at any of layers "
                     f"{candidates}")
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
