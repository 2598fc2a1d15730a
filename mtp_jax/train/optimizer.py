"""AdamW with linear warmup + cosine decay, global-norm clipping, optional freezing."""
from __future__ import annotations

from typing import Any

import jax
import optax

HEADS_SUBTREE = "mtp"  # params["params"]["mtp"]: heads 2..K (SpeechLLaMA.mtp)
MODES = ("joint", "heads_only")


def schedule(tcfg) -> optax.Schedule:
  """Learning rate per applied update: 0 -> peak over warmup, cosine to end ratio."""
  warmup = max(0, min(int(tcfg.warmup_steps), int(tcfg.steps) - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(tcfg.learning_rate), warmup_steps=warmup,
      decay_steps=max(int(tcfg.steps), warmup + 1),
      end_value=float(tcfg.learning_rate) * float(tcfg.end_lr_ratio))


def _path_keys(path) -> list[str]:
  return [str(getattr(p, "key", getattr(p, "name", p))) for p in path]


def trainable_labels(params: Any, mode: str) -> Any:
  """"train" / "freeze" per leaf: joint trains all, heads_only only the MTP heads."""
  if mode not in MODES:
    raise ValueError(f"train.mode={mode!r}: expected one of {MODES}")

  def label(path, _):
    if mode == "joint" or HEADS_SUBTREE in _path_keys(path):
      return "train"
    return "freeze"
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(tcfg, params: Any) -> optax.GradientTransformation:
  """The optimizer for `params` (an unboxed, possibly abstract, param tree).

  Weight decay applies to matrices (ndim >= 2) only. In `heads_only` mode the
  frozen leaves get `optax.set_to_zero()` (no optimizer state, no update).
  """
  decay_mask = jax.tree.map(lambda p: p.ndim >= 2, params)
  parts = []
  if tcfg.clip_norm and tcfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(tcfg.clip_norm)))
  parts.append(optax.adamw(schedule(tcfg), b1=float(tcfg.b1), b2=float(tcfg.b2),
                           eps=float(tcfg.eps), weight_decay=float(tcfg.weight_decay),
                           mask=decay_mask))
  tx = optax.chain(*parts)
  if tcfg.mode == "joint":
    return tx
  labels = trainable_labels(params, tcfg.mode)
  if not any(l == "train" for l in jax.tree.leaves(labels)):
    raise ValueError("train.mode=heads_only but the model has no MTP head parameters "
                     "(model.mtp.num_heads must be > 1)")
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
