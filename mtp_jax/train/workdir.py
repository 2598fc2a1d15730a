"""Resuming a run directory safely: one writer, and checks made before anything in it
is rewritten.

The training loop (`loop.train_and_evaluate`, run by train.py) first takes the
workdir's lock (`WorkdirLock`: one run per workdir; a lock left by a killed run is
taken over), then validates the config, checks that an existing run's model is
unchanged and restores its checkpoint before it writes `config.json` (or the
tokenizer), so a failed or refused re-run leaves the workdir as it was, and
`decode.py` still reads it.
"""
from __future__ import annotations

import dataclasses
import datetime
import errno
import filecmp
import json
import logging
import os
import socket
import sys
from typing import Callable

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.config import ConfigError, ModelConfig


LOCK_FILE = "train.lock"
_LOG = logging.getLogger(__name__)


class ResumeError(ValueError):
  """A workdir that cannot be resumed as asked; the message says what to do."""


class WorkdirInUseError(RuntimeError):
  """Another run holds the workdir's lock; the message names its host and pid.

  Attributes:
    holder: the lock file's record ({"host", "pid", "started", "argv", ...}).
  """

  def __init__(self, message: str, holder: dict):
    super().__init__(message)
    self.holder = holder


class WorkdirWriteError(RuntimeError):
  """The workdir (or its lock file) cannot be written: read-only, full, no permission."""


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


def check_tokenizer_unchanged(workdir: str, tokenizer_path: str, merges: int = 0) -> None:
  """Refuses `data.tokenizer.path` on a resumed run when it differs from the run's.

  The checkpoints were trained with `<workdir>/tokenizer.model`; copying another one
  over it would change what every token id means.
  """
  from mtp_jax.data.tokenizer import MODEL_PREFIX  # pylint: disable=g-import-not-at-top
  if not tokenizer_path:
    return
  from mtp_jax.data import whisper_tokenizer as wt  # pylint: disable=g-import-not-at-top
  from mtp_jax.data import lm_tokenizer as lt  # pylint: disable=g-import-not-at-top
  src = tokenizer_path
  stored = os.path.join(workdir, lt.FILE_NAME)
  if lt.is_lm(src) and os.path.isfile(stored):
    from mtp_jax.data.tokenizer import load_configured  # pylint: disable=g-import-not-at-top
    new, old = load_configured(src, merges), lt.LMTokenizer.load(stored)
    if (new.specials, new._json) != (old.specials, old._json):  # pylint: disable=protected-access
      raise ResumeError(f"data.tokenizer.path={tokenizer_path} (merges={merges}): differs "
                        f"from {stored}, the tokenizer this run's checkpoints were trained "
                        "with; leave data.tokenizer as it was or use a new --workdir")
    return
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


# ----------------------------------------------------------------- one writer per workdir
def _boot_id() -> str:
  try:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
      return f.read().strip()
  except OSError:
    return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
  """(state, start time in clock ticks since boot) of a process from /proc, or None."""
  try:
    with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])
  except (OSError, IndexError, ValueError):
    return None


def _this_process() -> dict:
  stat = _proc_stat(os.getpid())
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "boot_id": _boot_id(), "start_ticks": stat[1] if stat else None,
          "argv": " ".join(sys.argv)[:500]}


def holder_alive(holder: dict) -> bool | None:
  """Whether the process a lock record names is running: None when it cannot be told
  (another host). A pid that now belongs to another process (other start time, or
  the host rebooted since) or a zombie counts as dead."""
  if holder.get("host") != socket.gethostname():
    return None
  pid = holder.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    return False
  if holder.get("boot_id") and _boot_id() and holder["boot_id"] != _boot_id():
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # alive, another user's
  stat = _proc_stat(pid)
  if stat is None:
    return True  # no /proc: the pid exists
  state, ticks = stat
  if state == "Z":
    return False
  return holder.get("start_ticks") in (None, ticks)


def _describe(holder: dict) -> str:
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
          f"{holder.get('started', '?')}" + (f": {holder['argv']}" if holder.get("argv") else ""))


class WorkdirLock:
  """`<workdir>/train.lock`: one training run writes a workdir at a time.

  The lock file holds the holder's host, pid, start time and command line, and the
  holder keeps an exclusive `flock` on it. A second run on the workdir is refused
  with `WorkdirInUseError` naming the holder. A lock whose holder is gone (killed:
  its pid is not running on this host, or the flock is free) is stale: it is taken
  over with one log line. A lock of another host whose flock is free cannot be
  checked (its pid is not ours to see, and a network file system may not share
  flocks) and is refused; the message says to delete it if that run is gone.
  A context manager; `release` removes the file.

  Args:
    workdir: the run directory (created if missing).
    log: called with the takeover line.
  """

  def __init__(self, workdir: str | os.PathLike, log: Callable[[str], None] = _LOG.warning):
    self.workdir = os.path.abspath(os.fspath(workdir))
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self._log = log
    self._fd: int | None = None
    self._created = False  # the workdir did not exist: removed on release if still empty
    self.record: dict = {}

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def _read(self, fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
      raw += chunk
    try:
      out = json.loads(raw.decode("utf-8")) if raw.strip() else {}
      return out if isinstance(out, dict) else {}
    except (UnicodeDecodeError, ValueError):
      return {}

  def _in_use(self, holder: dict, why: str = "") -> WorkdirInUseError:
    return WorkdirInUseError(
        f"{self.workdir} is in use by another training run ({_describe(holder)}; lock "
        f"{self.path}{': ' + why if why else ''}). Wait for it to finish or stop it, or "
        f"use another --workdir; if that run is gone, delete {self.path}", holder)

  def acquire(self) -> "WorkdirLock":
    """Takes the lock (see the class docstring).

    Raises:
      WorkdirInUseError: another live run holds it, or a run of another host whose
        state cannot be checked.
      WorkdirWriteError: the workdir or the lock file cannot be written.
    """
    import fcntl  # pylint: disable=g-import-not-at-top
    try:
      self._created = not os.path.isdir(self.workdir)
      os.makedirs(self.workdir, exist_ok=True)
    except OSError as e:
      raise WorkdirWriteError(f"{self.workdir}: cannot create the workdir: {e}") from e
    for _ in range(20):
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as e:
        raise WorkdirWriteError(f"{self.path}: cannot write the workdir lock: {e} (is the "
                                "workdir read-only or full?)") from e
      try:
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          raise self._in_use(self._read(fd)) from None
        except OSError as e:
          if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
          # A file system without flocks: the record alone decides.
        try:  # the path must still be this file (a releasing holder unlinks it)
          if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
            os.close(fd)
            continue
        except FileNotFoundError:
          os.close(fd)
          continue
        holder = self._read(fd)
        if holder:
          alive = holder_alive(holder)
          if alive is None:
            raise self._in_use(holder, "held by another host, which this host cannot check")
          if alive:
            raise self._in_use(holder)
          self._log(f"workdir lock {self.path}: stale, taken over (its run, "
                    f"{_describe(holder)}, is not running on this host)")
        self.record = _this_process()
        data = json.dumps(self.record, indent=1).encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
      except BaseException as e:
        os.close(fd)
        if isinstance(e, OSError):
          raise WorkdirWriteError(f"{self.path}: cannot write the workdir lock: {e} (is "
                                  "the workdir read-only or full?)") from e
        raise
      self._fd = fd
      return self
    raise WorkdirInUseError(f"{self.path}: could not take the lock (it kept changing: "
                            "another run is starting on this workdir)", {})

  def release(self) -> None:
    """Removes the lock file and drops the flock (no-op when not held); a workdir
    this lock created and nothing else wrote into is removed too."""
    if self._fd is None:
      return
    try:
      if self._read(self._fd).get("pid") == os.getpid():
        os.unlink(self.path)
    except OSError:
      pass
    finally:
      os.close(self._fd)
      self._fd = None
    if self._created:
      try:
        os.rmdir(self.workdir)
      except OSError:
        pass  # not empty: the run wrote into it

  @property
  def held(self) -> bool:
    return self._fd is not None
