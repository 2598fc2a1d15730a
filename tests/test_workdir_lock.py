"""One writer per workdir: a second run is refused naming the holder's host and pid; a
lock left by a killed run is stale and taken over with a log line."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mtp_jax.config import ConfigError
from mtp_jax.train import loop
from mtp_jax.train import workdir as workdir_lib
from mtp_jax.train.workdir import LOCK_FILE, WorkdirInUseError, WorkdirLock

HOST = socket.gethostname()
# A process that takes the lock, says so, then waits (or kills itself with SIGKILL).
_HOLDER = """
import os, signal, sys, time
from mtp_jax.train.workdir import WorkdirLock
lock = WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
if sys.argv[2] == "kill":
  os.kill(os.getpid(), signal.SIGKILL)
time.sleep(120)
"""


def _holder(workdir, mode):
  """Starts a lock-holding process; returns it once it holds the lock."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                       env.get("PYTHONPATH", "")])
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workdir), mode], env=env,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_second_lock_in_the_same_process_is_refused(tmp_path):
  with WorkdirLock(tmp_path) as lock:
    record = json.loads((tmp_path / LOCK_FILE).read_text())
    assert record["host"] == HOST and record["pid"] == os.getpid() == lock.record["pid"]
    with pytest.raises(WorkdirInUseError,
                       match=rf"{tmp_path} is in use by another training run \(host "
                             rf"{HOST}, pid {os.getpid()}, started .*lock {tmp_path / LOCK_FILE}"):
      WorkdirLock(tmp_path).acquire()
  assert not (tmp_path / LOCK_FILE).exists()
  WorkdirLock(tmp_path).acquire().release()  # free again


def test_live_holder_in_another_process_is_refused_then_its_kill_frees_it(tmp_path):
  proc = _holder(tmp_path, "wait")
  try:
    with pytest.raises(WorkdirInUseError, match=rf"host {HOST}, pid {proc.pid}, started") as e:
      WorkdirLock(tmp_path).acquire()
    assert e.value.holder["pid"] == proc.pid
  finally:
    proc.kill()
    proc.wait()
  logs = []
  with WorkdirLock(tmp_path, log=logs.append):  # SIGKILL left the lock file: stale
    pass
  assert len(logs) == 1 and f"pid {proc.pid}" in logs[0] and "stale, taken over" in logs[0]


def test_lock_of_a_killed_run_is_taken_over_with_a_log_line(tmp_path):
  proc = _holder(tmp_path, "kill")
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == proc.pid
  logs = []
  lock = WorkdirLock(tmp_path, log=logs.append).acquire()
  try:
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
  finally:
    lock.release()
  assert len(logs) == 1
  assert logs[0].startswith(f"workdir lock {tmp_path / LOCK_FILE}: stale, taken over (its "
                            f"run, host {HOST}, pid {proc.pid}, started ")
  assert logs[0].endswith("is not running on this host)")


def _write_record(workdir, **record):
  workdir.mkdir(exist_ok=True)
  (workdir / LOCK_FILE).write_text(json.dumps(record))


def test_record_alone_decides_when_no_flock_is_held(tmp_path):
  """A lock file naming a live process (e.g. on a file system without flocks) is
  refused; a reused pid (another start time), a zombie or another boot is stale."""
  sleeper = subprocess.Popen(["sleep", "60"])
  try:
    ticks = workdir_lib._proc_stat(sleeper.pid)[1]  # pylint: disable=protected-access
    _write_record(tmp_path, host=HOST, pid=sleeper.pid, start_ticks=ticks)
    with pytest.raises(WorkdirInUseError, match=rf"pid {sleeper.pid}"):
      WorkdirLock(tmp_path).acquire()
    for stale in (dict(start_ticks=ticks + 1), dict(boot_id="another-boot")):
      _write_record(tmp_path, **dict(dict(host=HOST, pid=sleeper.pid, start_ticks=ticks),
                                     **stale))
      logs = []
      WorkdirLock(tmp_path, log=logs.append).acquire().release()
      assert "stale, taken over" in logs[0]
  finally:
    sleeper.kill()
  time.sleep(0.2)  # now a zombie (not reaped yet): dead
  assert workdir_lib._proc_stat(sleeper.pid)[0] == "Z"  # pylint: disable=protected-access
  _write_record(tmp_path, host=HOST, pid=sleeper.pid, start_ticks=ticks)
  logs = []
  WorkdirLock(tmp_path, log=logs.append).acquire().release()
  assert "stale, taken over" in logs[0]
  sleeper.wait()


def test_lock_of_another_host_is_refused(tmp_path):
  _write_record(tmp_path, host="other-host", pid=1234, started="2026-12-06T10:00:00")
  with pytest.raises(WorkdirInUseError,
                     match=r"host other-host, pid 1234, started 2026-12-06T10:00:00.*held "
                           r"by another host.*if that run is gone, delete"):
    WorkdirLock(tmp_path).acquire()
  assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == 1234  # untouched


def test_train_and_evaluate_refuses_a_workdir_in_use_untouched(tmp_path):
  from train_helpers import micro_config  # pylint: disable=import-outside-toplevel
  c = micro_config()
  c.data.train_manifests = str(tmp_path / "nothing.jsonl")  # never read: refused first
  work = tmp_path / "run"
  proc = _holder(work, "wait")
  try:
    before = sorted(p.name for p in work.iterdir())
    with pytest.raises(WorkdirInUseError, match=rf"pid {proc.pid}"):
      loop.train_and_evaluate(c, str(work))
    assert sorted(p.name for p in work.iterdir()) == before == [LOCK_FILE]
    assert issubclass(WorkdirInUseError, loop.USER_ERRORS)  # train.py: one line
  finally:
    proc.kill()
    proc.wait()


def test_refused_config_creates_no_workdir_and_a_refused_run_leaves_none(tmp_path):
  from train_helpers import micro_config  # pylint: disable=import-outside-toplevel
  c = micro_config()
  c.train.steps = 0
  with pytest.raises(ConfigError):
    loop.train_and_evaluate(c, str(tmp_path / "a"))
  assert not (tmp_path / "a").exists()
  c.train.steps = 5
  c.data.train_manifests = str(tmp_path / "missing.jsonl")
  with pytest.raises(Exception):  # noqa: B017  # the manifest is missing
    loop.train_and_evaluate(c, str(tmp_path / "b"))
  assert not (tmp_path / "b" / LOCK_FILE).exists()
