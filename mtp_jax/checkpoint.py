"""The one place for checkpoints: orbax CheckpointManager over `<workdir>/checkpoints`.

A checkpoint step directory holds three items, saved together (orbax composite args):
  params/  the (unboxed) parameter tree                      (StandardSave)
  train/   step, optimizer state, rng, non-finite counters    (StandardSave)
  data/    the data iterator state as JSON, one file per process
           (`process_<i>-of-<n>.json`, each process writes its own)
orbax writes a step into a temporary directory and renames it when complete, so
a run killed mid-write leaves no half checkpoint: `latest_step` ignores the
temporary directory and training resumes from the last complete step.

A checkpoint that cannot be written (disk full, read-only or unwritable directory)
raises `CheckpointSaveError` naming the step, the cause and the steps still intact;
the failed step's temporary directory is removed (it is never read), so the earlier
checkpoints stay what a resume reads.

A step that cannot be read (damaged files) is skipped with one log line naming
the step and the error, and the newest readable one is used
(`Checkpointer.restore_newest`, `load_params` without a step); a resumed run moves
the damaged steps it skipped to `<workdir>/checkpoints_damaged/`.

The workdir also holds `config.json` (the run's full config) and the tokenizer
(`tokenizer.model` + `tokenizer.json`), which `restore_for_inference` reads.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import sys
from typing import Any, Callable

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
_LOG = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """No readable checkpoint where one was asked for; the message names each step
  tried and why it could not be read."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint step could not be written (e.g. no space left on device, a read-only
  or unwritable directory). Nothing of that step is kept; the earlier checkpoints are
  intact and a re-run resumes from the newest of them.

  Attributes:
    step: the step that could not be written.
    intact_steps: the complete steps left in the directory.
  """

  def __init__(self, message: str, step: int | None, intact_steps: list[int]):
    super().__init__(message)
    self.step = step
    self.intact_steps = intact_steps


# ----------------------------------------------------------------- damaged steps
def _reason(err: BaseException) -> str:
  """One line for a failed read: the exception type and its first line."""
  lines = str(err).strip().splitlines()
  first = lines[0] if lines else ""
  return f"{type(err).__name__}: {first[:300]}{' ...' if len(first) > 300 else ''}"


_quiet_installed = False


def _quiet_closed_loop_callbacks() -> None:
  """Silences the "Event loop is closed" errors a failed orbax read leaves behind.

  When a restore fails, orbax closes its event loop while tensorstore still has
  reads of the other arrays in flight; each of them later reports `RuntimeError:
  Event loop is closed` through `sys.unraisablehook`, dozens of tracebacks that bury
  the real error (which is logged once). Any other unraisable error still reaches
  the previous hook. Installed once, on the first failed read.
  """
  global _quiet_installed
  if _quiet_installed:
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
      return
    previous(unraisable)

  sys.unraisablehook = hook
  _quiet_installed = True


def newest_readable(directory: str, steps, read: Callable[[int], Any],
                    log: Callable[[str], None] = _LOG.warning):
  """Reads the newest step that can be read.

  Args:
    directory: the checkpoints directory (for messages).
    steps: candidate steps.
    read: `read(step)`, raising on a damaged step.
    log: called with one line per skipped step.
  Returns:
    (read(step), step, [(skipped step, reason)] newest first).
  Raises:
    CheckpointError: no step can be read (the message lists each one and why).
  """
  skipped = []
  for step in sorted(steps, reverse=True):
    try:
      return read(step), step, skipped
    except Exception as e:  # pylint: disable=broad-except  # damage shows in many types
      _quiet_closed_loop_callbacks()
      skipped.append((step, _reason(e)))
      log(f"checkpoint step {step} in {directory} cannot be read, skipped: {_reason(e)}")
  tried = "; ".join(f"step {s}: {r}" for s, r in skipped) or "no checkpoint"
  raise CheckpointError(f"no readable checkpoint in {directory} ({tried})")


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


def newest_step_dir(workdir: str | os.PathLike | None) -> int | None:
  """The highest numbered step folder under `<workdir>/checkpoints` (what a restore
  without a step picks), or None; reads the directory listing only."""
  directory = os.path.join(os.fspath(workdir), CHECKPOINT_DIR) if workdir else ""
  steps = ([int(n) for n in os.listdir(directory) if n.isdigit()]
           if directory and os.path.isdir(directory) else [])
  return max(steps) if steps else None


def has_checkpoints(workdir: str | os.PathLike) -> bool:
  """Whether `<workdir>/checkpoints` holds any finished step directory (readable or
  not); reads the directory listing only."""
  directory = os.path.join(os.fspath(workdir), CHECKPOINT_DIR)
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


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
    self._saving: int | None = None  # the step of the save in flight
    self._failed: CheckpointSaveError | None = None
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
    """Saves the state at `int(state.step)` (asynchronously when enabled).

    Raises:
      CheckpointSaveError: this step, or the asynchronous save before it, could not
        be written (see `_save_failed`).
    """
    step = int(jax.device_get(state.step))
    items = {"params": ocp.args.StandardSave(state.params),
             "train": ocp.args.StandardSave(_train_part(state))}
    if data_state is not None:
      items["data"] = DataStateSave(data_state)
    self.wait()  # an error of the previous asynchronous save names that step
    try:
      self._saving = step
      out = self._mngr.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-except  # tensorstore, OSError, ...
      raise self._save_failed(step, e) from e
    return out

  def _save_failed(self, step: int | None, err: BaseException) -> CheckpointSaveError:
    """The error for a failed save, after removing what the save wrote.

    orbax writes a step into `<step>.orbax-checkpoint-tmp*` and renames it when
    complete; a failed save leaves that directory behind (never read, but it holds
    the disk space of the partial write): it is removed once no write is in flight.
    """
    self._saving = None
    try:
      self._mngr.wait_until_finished()  # the other items' writes may still run
    except Exception:  # pylint: disable=broad-except  # the same failure, reported below
      pass
    left = []
    if step is not None and jax.process_index() == 0 and os.path.isdir(self.directory):
      for name in os.listdir(self.directory):
        if name.startswith(f"{step}.orbax-checkpoint-tmp"):
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
          if os.path.exists(os.path.join(self.directory, name)):
            left.append(name)
    try:
      self._mngr.reload()
      intact = sorted(self.all_steps())
    except Exception:  # pylint: disable=broad-except
      intact = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
    kept = (f"Its partial write {left} is never read by a resume (delete it to free the "
            "space)" if left else f"Nothing of step {step} is kept")
    earlier = (f"the earlier checkpoints are intact (steps {intact}); a re-run of the same "
               f"command resumes from step {intact[-1]}" if intact else
               "there is no earlier checkpoint; a re-run of the same command starts afresh")
    self._failed = CheckpointSaveError(
        f"checkpoint step {step} could not be written to {self.directory}: {_reason(err)}. "
        f"{kept}; {earlier} once disk space is freed or the directory is writable "
        "again", step, intact)
    return self._failed

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

  def restore_newest(self, abstract_state, shardings, log: Callable[[str], None] = _LOG.warning):
    """Restores the newest readable step, skipping damaged ones (see `restore`).

    Damaged steps newer than the restored one are moved to
    `<workdir>/checkpoints_damaged/<step>` (so training can write those steps again),
    each logged once with the error that made it unreadable.
    Returns:
      (state, data_state or None, step); (None, None, None) when there is no checkpoint.
    Raises:
      CheckpointError: no step can be read.
    """
    steps = self.all_steps()
    if not steps:
      return None, None, None
    (state, data_state), step, skipped = newest_readable(
        self.directory, steps, lambda s: self.restore(abstract_state, shardings, s), log)
    if skipped:
      self._set_aside([s for s, _ in skipped], log)
    return state, data_state, step

  def _set_aside(self, steps: list[int], log: Callable[[str], None]) -> None:
    """Moves damaged step directories out of the checkpoints directory."""
    if jax.process_index() == 0:
      dest = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
      os.makedirs(dest, exist_ok=True)
      for step in steps:
        target = os.path.join(dest, str(step))
        n = 1
        while os.path.exists(target):
          target, n = os.path.join(dest, f"{step}.{n}"), n + 1
        shutil.move(os.path.join(self.directory, str(step)), target)
        log(f"damaged checkpoint step {step} moved to {target}")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("checkpoints_set_aside")
    self._mngr.reload()

  def wait(self) -> None:
    """Blocks until an async save has finished (and been finalized).

    Raises:
      CheckpointSaveError: that save failed.
    """
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(self._saving, e) from e
    self._saving = None

  def close(self) -> None:
    """Waits for a save in flight and closes the manager.

    Raises:
      CheckpointSaveError: the save in flight failed (not raised again when a failed
        save was already reported).
    """
    reported = self._failed is not None
    try:
      self.wait()
    except CheckpointSaveError:
      if not reported:
        raise
    finally:
      try:
        self._mngr.close()
      except Exception:  # pylint: disable=broad-except
        if not reported:
          raise


def load_params(path: str | os.PathLike, step: int | None = None, target: Any = None) -> Any:
  """Parameters only, from a workdir or checkpoint directory.

  Args:
    path: a workdir (with checkpoints/) or a checkpoints directory.
    step: default the newest readable step (a damaged newer one is skipped with a
      warning naming it and the error).
    target: optional tree of ShapeDtypeStructs with shardings to restore into;
      None restores the stored structure (arrays on the default device).
  Raises:
    FileNotFoundError: no checkpoint at all.
    CheckpointError: `step` is missing or cannot be read, or no step can be read.
  """
  directory = checkpoint_dir(path)
  args = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True)) as mngr:
    steps = list(mngr.all_steps())
    if not steps:
      raise FileNotFoundError(f"no complete checkpoint in {directory}")
    read = lambda s: mngr.restore(s, args=ocp.args.Composite(params=args))["params"]  # noqa: E731
    if step is None:
      return newest_readable(directory, steps, read)[0]
    if step not in steps:
      raise CheckpointError(f"no checkpoint step {step} in {directory} (steps: {sorted(steps)})")
    try:
      return read(step)
    except Exception as e:  # pylint: disable=broad-except
      _quiet_closed_loop_callbacks()
      raise CheckpointError(f"checkpoint step {step} in {directory} cannot be read: "
                            f"{_reason(e)} (other steps: "
                            f"{sorted(set(steps) - {step})})") from e


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
  """The config a run saved in its workdir (fields older code wrote, upgraded)."""
  path = os.path.join(os.fspath(workdir), CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: not a training workdir (no {CONFIG_FILE})")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(upgrade_stored_config(json.load(f)))


def upgrade_stored_config(config: dict) -> dict:
  """A stored config (plain dict) in today's layout.

  `model.reduction.use_kernel` (older runs) is now part of the one kernel switch,
  `kernels.enabled`: True there turns the switch on.
  """
  reduction = config.get("model", {}).get("reduction", {})
  if "use_kernel" in reduction:
    legacy = bool(reduction.pop("use_kernel"))
    kernels = config.setdefault("kernels", {})
    kernels["enabled"] = bool(kernels.get("enabled", False)) or legacy
  return config


def copy_tokenizer(model_path: str | os.PathLike, workdir: str | os.PathLike,
                   merges: int = 0) -> None:
  """Copies a tokenizer .model (and its .json sidecar) into the workdir, or saves a
  Whisper or pretrained-LM tokenizer there (`WhisperTokenizer.save`, `LMTokenizer.save`;
  the latter with only its first `merges` merges when `merges` > 0)."""
  from mtp_jax.data import lm_tokenizer as lt  # pylint: disable=g-import-not-at-top
  from mtp_jax.data import whisper_tokenizer as wt  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.tokenizer import MODEL_PREFIX, load_configured  # pylint: disable=g-import-not-at-top
  model_path = os.fspath(model_path)
  if merges or lt.is_lm(model_path) or wt.is_whisper(model_path):
    if jax.process_index() == 0:
      load_configured(model_path, merges).save(workdir)
    return
  if os.path.isdir(model_path):
    model_path = os.path.join(model_path, MODEL_PREFIX + ".model")
  dst = os.path.join(os.fspath(workdir), MODEL_PREFIX + ".model")
  if os.path.abspath(model_path) == os.path.abspath(dst) or jax.process_index() != 0:
    return
  side = os.path.splitext(model_path)[0] + ".json"
  if os.path.isfile(side):
    _copy_whole(side, os.path.join(os.fspath(workdir), MODEL_PREFIX + ".json"))
  _copy_whole(model_path, dst)


def _copy_whole(src: str, dst: str) -> None:
  """Copies `src` to `dst` whole or not at all (a kill mid-copy leaves `dst` as it was)."""
  tmp = f"{dst}.tmp{os.getpid()}"
  shutil.copyfile(src, tmp)
  os.replace(tmp, dst)


def restore_for_inference(workdir: str | os.PathLike, step: int | None = None, *,
                          mesh=None, rules=None, decode_layout: bool = True):
  """Everything decode.py needs from a training run.

  Args:
    workdir: the run's workdir.
    step: checkpoint step; default the latest complete one.
    mesh: optional mesh to shard the params over (default: one device, replicated).
    rules: logical-axis rules for `mesh` (default: the run's `sharding_rules`).
    decode_layout: add the decoding copy of a tied unembedding
      (`mtp_jax.model.heads.decode_layout`; faster decoder calls, one more copy of the
      embedding in memory). False: the checkpoint's variables only (e.g. to train on).
  Returns:
    (config, params, tokenizer): the run's ConfigDict, the unboxed variables
    (usable as `SpeechLLaMA(ModelConfig.from_config(config.model)).apply(params, ...)`)
    and the run's `Tokenizer`.
  Raises:
    ConfigError: the tokenizer has more ids than model.decoder.vocab_size (fewer is
      fine: `Tokenizer.decode` drops ids past its vocabulary).
    CheckpointError: see `load_params`.
  """
  from mtp_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.tokenizer import Tokenizer, check_tokenizer_fits  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  from mtp_jax.train.state import abstract_params  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  config = load_config(workdir)
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  tokenizer = Tokenizer.load(workdir)
  check_tokenizer_fits(tokenizer, model.cfg.decoder.vocab_size)
  if mesh is None:
    mesh = sharding_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  rules = sharding_lib.rules_from_config(config.get("sharding_rules") if rules is None
                                         else rules)
  from mtp_jax.train import lora as lora_lib  # pylint: disable=g-import-not-at-top
  lora = lora_lib.of(config.get("train"))
  boxed = abstract_params(model, mesh, rules, lora)
  shardings = sharding_lib.param_shardings(boxed, mesh, rules)
  target = _abstract(nn.unbox(boxed), shardings)
  params = lora_lib.merge(load_params(workdir, step, target), lora)  # adapters folded in
  if decode_layout:
    from mtp_jax.model.heads import decode_layout as add_layout  # pylint: disable=g-import-not-at-top
    params = add_layout(params, model.cfg.decoder.tie_embeddings)
  return config, params, tokenizer
