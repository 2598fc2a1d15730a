"""The one place for checkpoints: orbax CheckpointManager over `<workdir>/checkpoints`.

A checkpoint step directory holds three items, saved together (orbax composite args):
  params/  the (unboxed) parameter tree                      (StandardSave)
  train/   step, optimizer state, rng, non-finite counters    (StandardSave)
  data/    the data iterator state as JSON, one file per process
           (`process_<i>-of-<n>.json`, each process writes its own)
orbax writes a step into a temporary directory and renames it when complete, so
a run killed mid-write leaves no half checkpoint: `latest_step` ignores the
temporary directory and training resumes from the last complete step.

The workdir also holds `config.json` (the run's full config) and the tokenizer
(`tokenizer.model` + `tokenizer.json`), which `restore_for_inference` reads.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


# ----------------------------------------------------------------- data iterator state
class DataStateHandler(ocp.CheckpointHandler):
  """Saves a JSON-serializable iterator state per process (multi-host safe)."""

  def _file(self, directory) -> pathlib.Path:
    return pathlib.Path(directory) / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def save(self, directory, args: "DataStateSave"):
    self._file(directory).write_text(json.dumps(args.state, indent=1))

  def restore(self, directory, args: "DataStateRestore | None" = None) -> dict:
    path = self._file(directory)
    if not path.exists():
      raise FileNotFoundError(f"{path}: no data iterator state for this process "
                              "(was the checkpoint written with another process count?)")
    return json.loads(path.read_text())

  def metadata(self, directory):
    del directory
    return None

  def finalize(self, directory):
    del directory

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: dict


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


# ----------------------------------------------------------------- manager
def checkpoint_dir(path: str | os.PathLike) -> str:
  """`path/checkpoints` when `path` is a workdir holding one, else `path` itself."""
  path = os.path.abspath(os.fspath(path))
  sub = os.path.join(path, CHECKPOINT_DIR)
  return sub if os.path.isdir(sub) else path


def _train_part(state) -> dict:
  return {"step": state.step, "opt_state": state.opt_state, "rng": state.rng,
          "nonfinite_total": state.nonfinite_total, "nonfinite_run": state.nonfinite_run}


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


class Checkpointer:
  """Save/restore of full train states (params + optimizer + step + rng + data)."""

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(os.fspath(workdir)), CHECKPOINT_DIR)
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=int(keep) if keep and keep > 0 else None, create=True,
            enable_async_checkpointing=bool(async_save)))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint step (None when there is none)."""
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, state, data_state: dict | None = None, *, force: bool = True) -> bool:
    """Saves the state at `int(state.step)` (asynchronously when enabled)."""
    step = int(jax.device_get(state.step))
    items = {"params": ocp.args.StandardSave(state.params),
             "train": ocp.args.StandardSave(_train_part(state))}
    if data_state is not None:
      items["data"] = DataStateSave(data_state)
    return self._mngr.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state, shardings, step: int | None = None):
    """Restores a full state into `shardings`.

    Args:
      abstract_state: TrainState of ShapeDtypeStructs (`jax.eval_shape` of the init).
      shardings: TrainState of NamedShardings.
      step: default the latest.
    Returns:
      (state, data_state or None).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"params": ocp.args.StandardRestore(_abstract(abstract_state.params, shardings.params)),
             "train": ocp.args.StandardRestore(
                 _abstract(_train_part(abstract_state), _train_part(shardings)))}
    has_data = os.path.isdir(os.path.join(self.directory, str(step), "data"))
    if has_data:
      items["data"] = DataStateRestore()
    out = self._mngr.restore(step, args=ocp.args.Composite(**items))
    state = abstract_state.replace(params=out["params"], **out["train"])
    return state, (out["data"] if has_data else None)

  def wait(self) -> None:
    """Blocks until an async save has finished (and been finalized)."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def load_params(path: str | os.PathLike, step: int | None = None, target: Any = None) -> Any:
  """Parameters only, from a workdir or checkpoint directory.

  Args:
    path: a workdir (with checkpoints/) or a checkpoints directory.
    step: default the latest complete step.
    target: optional tree of ShapeDtypeStructs with shardings to restore into;
      None restores the stored structure (arrays on the default device).
  """
  directory = checkpoint_dir(path)
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True)) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {directory}")
    args = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
    return mngr.restore(step, args=ocp.args.Composite(params=args))["params"]


# ----------------------------------------------------------------- workdir files
def save_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> str:
  """Writes `<workdir>/config.json` (process 0 only); returns its path."""
  path = os.path.join(os.fspath(workdir), CONFIG_FILE)
  if jax.process_index() == 0:
    os.makedirs(os.fspath(workdir), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(path + ".tmp", path)
  return path


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a run saved in its workdir."""
  path = os.path.join(os.fspath(workdir), CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: not a training workdir (no {CONFIG_FILE})")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def copy_tokenizer(model_path: str | os.PathLike, workdir: str | os.PathLike) -> None:
  """Copies a tokenizer .model (and its .json sidecar) into the workdir."""
  from mtp_jax.data.tokenizer import MODEL_PREFIX  # pylint: disable=g-import-not-at-top
  model_path = os.fspath(model_path)
  if os.path.isdir(model_path):
    model_path = os.path.join(model_path, MODEL_PREFIX + ".model")
  dst = os.path.join(os.fspath(workdir), MODEL_PREFIX + ".model")
  if os.path.abspath(model_path) == os.path.abspath(dst) or jax.process_index() != 0:
    return
  shutil.copyfile(model_path, dst)
  side = os.path.splitext(model_path)[0] + ".json"
  if os.path.isfile(side):
    shutil.copyfile(side, os.path.join(os.fspath(workdir), MODEL_PREFIX + ".json"))


def restore_for_inference(workdir: str | os.PathLike, step: int | None = None, *,
                          mesh=None, rules=None):
  """Everything decode.py needs from a training run.

  Args:
    workdir: the run's workdir.
    step: checkpoint step; default the latest complete one.
    mesh: optional mesh to shard the params over (default: one device, replicated).
    rules: logical-axis rules for `mesh` (default: the run's `sharding_rules`).
  Returns:
    (config, params, tokenizer): the run's ConfigDict, the unboxed parameter tree
    (usable as `SpeechLLaMA(ModelConfig.from_config(config.model)).apply(params, ...)`)
    and the run's `Tokenizer`.
  """
  from mtp_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  from mtp_jax.train.state import abstract_params  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  config = load_config(workdir)
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  if mesh is None:
    mesh = sharding_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  rules = sharding_lib.rules_from_config(config.get("sharding_rules") if rules is None
                                         else rules)
  boxed = abstract_params(model, mesh, rules)
  shardings = sharding_lib.param_shardings(boxed, mesh, rules)
  target = _abstract(nn.unbox(boxed), shardings)
  params = load_params(workdir, step, target)
  tokenizer = Tokenizer.load(workdir)
  return config, params, tokenizer
