"""Preemption: SIGTERM / SIGINT finish the step in flight, checkpoint exactly it and
stop; the re-run resumes bitwise; train.py exits with its own status; several hosts
agree on the step; the feature-cache builder stops and resumes.

The in-process runs share one step HLO (as tests/test_train_resume.py), so a
persistent compilation cache in tmp makes every run after the first skip XLA.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.data import feature_cache as cache_lib
from mtp_jax.data import manifest as manifest_lib
from mtp_jax.train import loop
from mtp_jax.train import preemption
from mtp_jax.train import workdir as workdir_lib
from train_helpers import micro_config, recording_transform, write_synthetic_manifest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 2


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("preempt")
  old = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir",
                                          "jax_persistent_cache_min_compile_time_secs")}
  jax.config.update("jax_compilation_cache_dir", str(root / "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield root, write_synthetic_manifest(root / "data")
  for k, v in old.items():
    jax.config.update(k, v)


def _config(manifest, **train):
  c = micro_config(k=2)
  c.data.train_manifests = manifest
  c.data.batching = "random"
  c.data.batch_size = 4
  c.data.batch_size_multiple = DEVICES
  c.train.update(steps=6, warmup_steps=2, checkpoint_every=3, log_every=3)
  c.train.update(**train)
  return c


def _run(config, workdir, signal_at=None, signals=(signal.SIGTERM,)):
  """Trains, sending `signals` to this process while step `signal_at` (0-based) is
  about to run; returns (last metrics or the exception, [(step, utt_ids)])."""
  order = []
  record = recording_transform(order)

  def transform(step, batch):
    if step == signal_at:
      for sig in signals:
        os.kill(os.getpid(), sig)
    return record(step, batch)

  try:
    out = loop.train_and_evaluate(config, str(workdir), devices=jax.devices()[:DEVICES],
                                  batch_transform=transform)
  except preemption.Preempted as e:
    out = e
  return out, order


@pytest.fixture(scope="module")
def straight(env):
  root, manifest = env
  out, order = _run(_config(manifest), root / "straight")
  return root / "straight", out, order


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_the_step_in_flight_and_resume_is_exact(env, straight, sig,
                                                                   capsys):
  root, manifest = env
  base, base_out, base_order = straight
  work = root / f"stopped_{sig.name}"
  before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
  capsys.readouterr()
  err, order1 = _run(_config(manifest), work, signal_at=3, signals=(sig,))
  log = capsys.readouterr().out
  # The step the signal interrupted (step index 3, i.e. step 4) finished and was
  # checkpointed, off the checkpoint_every=3 schedule; nothing after it ran.
  assert isinstance(err, preemption.Preempted), err
  assert err.step == 4 and err.signal_name == sig.name
  assert [s for s, _ in order1] == [0, 1, 2, 3]
  assert ckpt_lib.Checkpointer(work).all_steps() == [3, 4]
  assert f"{sig.name}: checkpoint step 4 written to {work / 'checkpoints'}" in log
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
  assert not (work / workdir_lib.LOCK_FILE).exists()
  # The re-run resumes from step 4 as if never stopped: same batches, bitwise params,
  # same metrics, each step logged once.
  out, order2 = _run(_config(manifest), work)
  assert out["step"] == 6 and [s for s, _ in order2] == [4, 5]
  assert order1 + order2 == base_order
  jax.tree.map(np.testing.assert_array_equal, ckpt_lib.load_params(work),
               ckpt_lib.load_params(base))
  lines = [json.loads(l) for l in open(work / "metrics.jsonl")]
  ref = [json.loads(l) for l in open(base / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [3, 6]
  for a, b in zip(lines, ref):
    assert {k: v for k, v in a.items() if k.startswith("train/")} == \
        {k: v for k, v in b.items() if k.startswith("train/")}


def test_second_signal_stops_at_once_without_a_checkpoint(env, tmp_path):
  _, manifest = env
  with pytest.raises(KeyboardInterrupt, match="SIGINT received twice"):
    _run(_config(manifest), tmp_path / "w", signal_at=4,
         signals=(signal.SIGINT, signal.SIGINT))
  assert ckpt_lib.Checkpointer(tmp_path / "w").all_steps() == [3]
  assert not (tmp_path / "w" / workdir_lib.LOCK_FILE).exists()


def test_signal_before_the_first_step_saves_nothing_new(env, tmp_path, monkeypatch):
  _, manifest = env
  real = ckpt_lib.save_config

  def save_config_then_sigterm(*a, **kw):  # during start-up, before the loop
    out = real(*a, **kw)
    os.kill(os.getpid(), signal.SIGTERM)
    return out

  monkeypatch.setattr(ckpt_lib, "save_config", save_config_then_sigterm)
  err, order = _run(_config(manifest), tmp_path / "w")
  assert isinstance(err, preemption.Preempted) and err.step is None
  assert "stopped before training step 1; nothing new to save (no checkpoint yet)" in str(err)
  assert order == [] and not ckpt_lib.has_checkpoints(tmp_path / "w")


# --------------------------------------------------------------------- train.py
_CONFIG_FILE = """
import sys
sys.path.insert(0, {tests!r})
from train_helpers import micro_config


def get_config():
  c = micro_config(k=2)
  c.data.train_manifests = {manifest!r}
  c.data.batching = "random"
  c.data.batch_size = 4
  c.data.batch_size_multiple = 1
  c.train.update(steps={steps}, warmup_steps=2, checkpoint_every={every}, log_every=1,
                 async_checkpointing=True)
  return c
"""


def write_train_config(directory: pathlib.Path, manifest: str, steps: int,
                       checkpoint_every: int) -> pathlib.Path:
  """A config file for train.py: the micro model on `manifest`, one device."""
  path = directory / "micro_config.py"
  path.write_text(_CONFIG_FILE.format(tests=str(ROOT / "tests"), manifest=manifest,
                                      steps=steps, every=checkpoint_every))
  return path


def _xla_flags(devices: int | None) -> str:
  """The suite's XLA flags (conftest.py) with `devices` host devices (None: the default)."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(flags)


def train_py_env(cache_dir: pathlib.Path) -> dict:
  """The environment of a train.py subprocess: CPU, one device, a compilation cache."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             XLA_FLAGS=_xla_flags(1), PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  return env


@pytest.mark.slow  # long; `-m slow` runs it
def test_train_py_sigterm_exits_75_with_the_checkpoint(env, tmp_path):
  root, manifest = env
  config = write_train_config(tmp_path, manifest, steps=10_000, checkpoint_every=1000)
  work = tmp_path / "run"
  stderr = open(tmp_path / "stderr.txt", "w+", encoding="utf-8")
  proc = subprocess.Popen(
      [sys.executable, str(ROOT / "train.py"), f"--config={config}", f"--workdir={work}"],
      cwd=ROOT, env=train_py_env(root / "xla_cache_cli"), stdout=subprocess.PIPE,
      stderr=stderr, text=True)
  try:
    for line in proc.stdout:  # wait until it trains
      if line.startswith("step 3/"):
        break
    # A second run on the workdir is refused, naming this one.
    with pytest.raises(workdir_lib.WorkdirInUseError,
                       match=rf"host {os.uname().nodename}, pid {proc.pid}"):
      workdir_lib.WorkdirLock(work).acquire()
    t = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    seconds = time.perf_counter() - t
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    stderr.seek(0)
    err = stderr.read()
    stderr.close()
  assert proc.returncode == preemption.PREEMPTED_EXIT_CODE, err[-3000:]
  steps = ckpt_lib.Checkpointer(work).all_steps()
  assert len(steps) == 1 and steps[0] >= 3
  assert f"train.py: SIGTERM: checkpoint step {steps[0]} written to" in err
  assert "Traceback" not in err
  assert not (work / workdir_lib.LOCK_FILE).exists()
  assert seconds < 30
  lines = [json.loads(l)["step"] for l in open(work / "metrics.jsonl")]
  assert lines == list(range(1, steps[0] + 1))


# --------------------------------------------------------------------- several hosts
_MULTIHOST = """
import os, signal, sys, time
import jax
jax.config.update("jax_enable_preemption_service", sys.argv[3] == "jax")
jax.distributed.initialize(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]))
from mtp_jax.train import preemption
pid, who, sig = int(sys.argv[2]), int(sys.argv[4]), getattr(signal, sys.argv[5])
with preemption.StopSignals(log=lambda m: None) as stop:
  print("mode", stop.mode, flush=True)
  for step in range(1, 400):
    time.sleep(0.01 * (1 + pid))  # the hosts run at different speeds
    if pid == who and step == 5:
      os.kill(os.getpid(), sig)
    got = stop.agreed(step)
    if got:
      print("stopped", step, got, flush=True)
      break
jax.distributed.shutdown()
"""


def _free_port() -> int:
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("mode,who,sig", [("jax", 0, "SIGTERM"), ("jax", 1, "SIGINT"),
                                          ("allgather", 1, "SIGTERM")])
def test_hosts_agree_on_the_stop_step(tmp_path, mode, who, sig):
  script = tmp_path / "host.py"
  script.write_text(_MULTIHOST)
  port = str(_free_port())
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=_xla_flags(None))
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  procs = [subprocess.Popen([sys.executable, str(script), port, str(i), mode, str(who), sig],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=180)
    finally:
      if p.poll() is None:
        p.kill()
    assert p.returncode == 0, err[-3000:]
    outs.append(dict(l.split(" ", 1) for l in out.splitlines() if " " in l))
  assert [o["mode"] for o in outs] == [mode, mode]
  stops = [o["stopped"].split() for o in outs]
  assert stops[0][0] == stops[1][0] and int(stops[0][0]) >= 5  # the same step
  # The process that caught the signal in Python names it; JAX's notifier (SIGTERM in
  # jax mode) and the other host report a preemption notice.
  caught = sig if (mode == "allgather" or sig == "SIGINT") else "preemption"
  assert stops[who][1] == caught
  assert stops[1 - who][1] == "preemption"


# --------------------------------------------------------------------- feature cache
def _entries(manifest):
  return manifest_lib.load_manifests(manifest)


def _fake_encode(calls):
  """A deterministic 'encoder': frames [B, S // 1600, 3] from the audio."""
  def encode(audio, lens):
    calls.append(len(audio))
    t = audio.shape[1] // 1600
    frames = np.stack([audio[:, i * 1600:(i + 1) * 1600].mean(1) for i in range(t)], 1)
    frames = np.stack([frames, frames * 2, frames + 1], -1)
    return frames, np.asarray(lens) // 1600
  return encode


def test_feature_cache_build_stops_on_sigterm_and_resumes(env, tmp_path):
  _, manifest = env
  meta = {"fingerprint": "f" * 24}
  kw = dict(meta=meta, batch_seconds=1.0, log=lambda m: None)
  straight = cache_lib.build(_fake_encode([]), _entries(manifest), tmp_path / "a", **kw)
  assert straight["cached"] == 16 and not straight["stopped"]

  calls = []
  encode = _fake_encode(calls)

  def encode_then_sigterm(audio, lens):
    if len(calls) == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return encode(audio, lens)

  with preemption.StopSignals(process_count=1) as stop:
    res = cache_lib.build(encode_then_sigterm, _entries(manifest), tmp_path / "b",
                          should_stop=lambda: stop.received is not None, **kw)
  assert res["stopped"] and len(calls) == 3  # the batch in flight finished
  assert 0 < res["cached"] < 16
  with pytest.raises(cache_lib.IncompleteCacheError, match="stopped before it finished"):
    cache_lib.FeatureCache(tmp_path / "b")
  # A kill while appending the index leaves a line cut short: dropped on resume.
  with open(tmp_path / "b" / cache_lib.INDEX, "ab") as f:
    f.write(b'{"key": "/cut/sho')
  calls.clear()
  res2 = cache_lib.build(encode, _entries(manifest), tmp_path / "b", **kw)
  assert not res2["stopped"] and res2["cached"] == 16
  assert res2["utterances"] == 16 - res["cached"]  # only the rest was encoded
  a, b = cache_lib.FeatureCache(tmp_path / "a"), cache_lib.FeatureCache(tmp_path / "b")
  assert len(b) == 16
  for e in _entries(manifest):
    np.testing.assert_array_equal(a.frames(e.audio_filepath), b.frames(e.audio_filepath))
