"""Resuming a run directory safely: checks made before anything in it is rewritten.

The training loop (`loop.train_and_evaluate`, run by train.py) validates the config,
checks that an existing run's model is unchanged and restores its checkpoint before
it writes `config.json` (or the tokenizer), so a failed or refused re-run leaves the
workdir as it was, and `decode.py` still reads it.
"""
from __future__ import annotations

import dataclasses
import filecmp
import os

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.config import ConfigError, ModelConfig


class ResumeError(ValueError):
  """A workdir that cannot be resumed as asked; the message says what to do."""


def _flat(cfg, prefix: str) -> dict[str, object]:
  """Dataclass -> {"prefix.field.sub": value}."""
  out = {}
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if dataclasses.is_dataclass(value):
      out.update(_flat(value, f"{prefix}.{f.name}"))
    else:
      out[f"{prefix}.{f.name}"] = value
  return out


def model_config_diff(old: ModelConfig, new: ModelConfig, prefix: str = "model") -> list[str]:
  """["model.decoder.ff_dim: 64 -> 96", ...] for every field that differs."""
  a, b = _flat(old, prefix), _flat(new, prefix)
  return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]


def check_model_unchanged(workdir: str, model: ModelConfig) -> None:
  """Refuses to resume `workdir` with a model config other than its checkpoints'.

  Args:
    workdir: a run directory holding checkpoints (and the config.json they were
      trained with; without one there is nothing to compare).
    model: the validated model config of the new run.
  Raises:
    ResumeError: the fields differ (all of them listed, old -> new), or the stored
      model section cannot be read.
  """
  path = os.path.join(workdir, ckpt_lib.CONFIG_FILE)
  if not os.path.isfile(path):
    return
  try:
    stored = ModelConfig.from_config(ckpt_lib.load_config(workdir).get("model", {}))
  except ConfigError as e:
    raise ResumeError(f"{path}: its model section is not valid with this code ({e}); "
                      "resume with the code that wrote it, or use a new --workdir") from e
  diff = model_config_diff(stored, model)
  if diff:
    raise ResumeError(
        f"{workdir} holds checkpoints of another model; the model config differs from "
        f"{path} in {len(diff)} field(s):\n  " + "\n  ".join(diff) +
        f"\nResume with the run's model config, use a new --workdir, or start a new run "
        f"from these weights with --config.train.init_from={workdir}")


def check_tokenizer_unchanged(workdir: str, tokenizer_path: str) -> None:
  """Refuses `data.tokenizer.path` on a resumed run when it differs from the run's.

  The checkpoints were trained with `<workdir>/tokenizer.model`; copying another one
  over it would change what every token id means.
  """
  from mtp_jax.data.tokenizer import MODEL_PREFIX  # pylint: disable=g-import-not-at-top
  if not tokenizer_path:
    return
  from mtp_jax.data import whisper_tokenizer as wt  # pylint: disable=g-import-not-at-top
  src = tokenizer_path
  if wt.is_whisper(src):
    src, ours = str(wt.resolve_json(src)), os.path.join(workdir, wt.FILE_NAME)
  else:
    if os.path.isdir(src):
      src = os.path.join(src, MODEL_PREFIX + ".model")
    ours = os.path.join(workdir, MODEL_PREFIX + ".model")
  if (os.path.isfile(ours) and os.path.isfile(src)
      and not filecmp.cmp(src, ours, shallow=False)):
    raise ResumeError(f"data.tokenizer.path={tokenizer_path}: differs from {ours}, the "
                      "tokenizer this run's checkpoints were trained with; leave "
                      "data.tokenizer.path as it was or use a new --workdir")


def data_state_hint(step: int) -> str:
  """What to do when the saved data iterator does not fit the training data."""
  return (f"The training data (manifests, bucketing, seed or process count) changed since "
          f"checkpoint step {step}, e.g. a manifest line was removed or added. To resume the "
          f"model from step {step} with the new data, starting the data iterator afresh, "
          "re-run with --config.train.reset_data_iterator=True (or restore the manifests).")
