"""AdamW with linear warmup + cosine decay, global-norm clipping, freezing by path regex."""
from __future__ import annotations

import re
from typing import Any

import jax
import optax

HEADS_SUBTREE = "mtp"  # params["params"]["mtp"]: heads 2..K (SpeechLLaMA.mtp)
MODES = ("joint", "heads_only")
# train.mode=heads_only is shorthand for train.trainable=MODE_TRAINABLE["heads_only"].
MODE_TRAINABLE = {"joint": "", "heads_only": r"(^|/)mtp/"}


def schedule(tcfg) -> optax.Schedule:
  """Learning rate per applied update: 0 -> peak over warmup, cosine to end ratio."""
  warmup = max(0, min(int(tcfg.warmup_steps), int(tcfg.steps) - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(tcfg.learning_rate), warmup_steps=warmup,
      decay_steps=max(int(tcfg.steps), warmup + 1),
      end_value=float(tcfg.learning_rate) * float(tcfg.end_lr_ratio))


def _path_keys(path) -> list[str]:
  return [str(getattr(p, "key", getattr(p, "name", p))) for p in path]


def param_path(path) -> str:
  """A parameter's path as matched by train.trainable / train.frozen, e.g.
  "params/encoder/block0/q/kernel" or "params/mtp/out2/kernel"."""
  return "/".join(_path_keys(path))


def _compile(pattern: str, field: str):
  try:
    return re.compile(pattern)
  except re.error as err:
    raise ValueError(f"train.{field}={pattern!r}: invalid regex: {err}") from err


def freeze_patterns(tcfg) -> tuple[str, str]:
  """(trainable, frozen) regexes of a train config, with `mode` folded in."""
  mode = tcfg.get("mode", "joint")
  if mode not in MODES:
    raise ValueError(f"train.mode={mode!r}: expected one of {MODES}")
  trainable = str(tcfg.get("trainable", "") or "")
  if mode != "joint":
    if trainable:
      raise ValueError(f"train.mode={mode!r} and train.trainable={trainable!r}: set one "
                       f"(mode={mode} means trainable={MODE_TRAINABLE[mode]!r})")
    trainable = MODE_TRAINABLE[mode]
  return trainable, str(tcfg.get("frozen", "") or "")


def trainable_labels(params: Any, tcfg) -> Any:
  """"train" / "freeze" per leaf: a leaf trains when its path (`param_path`) matches
  train.trainable (empty: every leaf) and does not match train.frozen (empty: none).

  Raises ValueError when a regex is invalid or when nothing would train.
  """
  trainable, frozen = freeze_patterns(tcfg)
  t_re, f_re = _compile(trainable, "trainable"), _compile(frozen, "frozen")

  def label(path, _):
    name = param_path(path)
    ok = (not trainable or t_re.search(name)) and not (frozen and f_re.search(name))
    # LoRA adapters exist to be trained: their kernel's freezing does not reach them
    # (train.lora.frozen keeps them as they are).
    if name.endswith(("/lora_a", "/lora_b")):
      lora = tcfg.get("lora", None)
      ok = not (lora is not None and lora.get("frozen", False))
    return "train" if ok else "freeze"
  labels = jax.tree_util.tree_map_with_path(label, params)
  if not any(l == "train" for l in jax.tree.leaves(labels)):
    raise ValueError(f"no parameter to train: train.trainable={trainable!r} / "
                     f"train.frozen={frozen!r} freeze every parameter"
                     + (" (train.mode=heads_only needs model.mtp.num_heads > 1)"
                        if tcfg.get("mode", "joint") == "heads_only" else ""))
  return labels


def freezes_anything(tcfg) -> bool:
  return any(freeze_patterns(tcfg))


def make_optimizer(tcfg, params: Any) -> optax.GradientTransformation:
  """The optimizer for `params` (an unboxed, possibly abstract, param tree).

  Weight decay applies to matrices (ndim >= 2) only. Frozen leaves (train.trainable,
  train.frozen, train.mode) get `optax.set_to_zero()` (no optimizer state, no update).
  """
  decay_mask = jax.tree.map(lambda p: p.ndim >= 2, params)
  parts = []
  if tcfg.clip_norm and tcfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(tcfg.clip_norm)))
  parts.append(optax.adamw(schedule(tcfg), b1=float(tcfg.b1), b2=float(tcfg.b2),
                           eps=float(tcfg.eps), weight_decay=float(tcfg.weight_decay),
                           mask=decay_mask))
  tx = optax.chain(*parts)
  if not freezes_anything(tcfg):
    return tx
  labels = trainable_labels(params, tcfg)
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
