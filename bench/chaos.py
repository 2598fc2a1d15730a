"""Chaos run: train a tiny model with train.py while killing it, and check that nothing
was lost.

  python bench/chaos.py --kills 24 --seed 0

An uninterrupted reference run first; then the same command on another workdir,
started again and again and each time killed at a random moment (seeded) with SIGKILL
or SIGTERM: during start-up (restore, compilation), after a random number of training
steps, or a fraction of a step later (often in the middle of an asynchronous
checkpoint write). After `--kills` kills a last start runs to the end. Checked:

* every SIGTERM ends with status 75 (`preemption.PREEMPTED_EXIT_CODE`) after writing
  a checkpoint of exactly the step it announced; every SIGKILL ends the process;
* a lock left by a SIGKILL is taken over by the next start (a logged line);
* the final checkpoint (parameters, optimizer state, step, rng, data iterator) is
  bitwise equal to the reference's, and so is every train/* metric of every step;
  metrics.jsonl holds each step exactly once.

Prints a table and writes bench/results/chaos_<backend>.json: kills survived, the
seconds from SIGTERM to exit (checkpoint written) during training, bitwise equality.
The model is `configs/tiny.py` shrunk to width 32 and one layer each side (the test
suite's micro model) on 16 synthetic utterances, one CPU device.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import queue
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
_CONFIG = """
from mtp_jax.config import load_config_file


def get_config():
  c = load_config_file({tiny!r}, "K=2,head=independent")
  m = c.model
  m.encoder.update(d_model=32, num_layers=1, num_heads=2, ff_mult=2, conv_kernel=3,
                   subsampling_channels=8, dropout=0.0)
  m.frontend.num_mels = 32
  m.decoder.update(vocab_size=48, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2,
                   ff_dim=64, max_text_len=32)
  c.data.tokenizer.vocab_size = 48
  c.data.train_manifests = {manifest!r}
  c.data.update(batching="random", batch_size=4, batch_size_multiple=1)
  c.train.update(steps={steps}, warmup_steps=2, checkpoint_every={every}, log_every=1,
                 keep_checkpoints=3, async_checkpointing=True)
  return c
"""
_PROGRESS = re.compile(r"^step (\d+)/\d+ ")
_WRITTEN = re.compile(r"^SIG\w+: checkpoint step (\d+) written to \S+(?: ([\d.]+) s after)?")


def write_run_files(root: pathlib.Path, steps: int, checkpoint_every: int):
  """A synthetic manifest (16 sine + noise FLACs) and the train.py config file."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  (root / "audio").mkdir(parents=True, exist_ok=True)
  manifest = root / "train.jsonl"
  with open(manifest, "w", encoding="utf-8") as f:
    for i in range(16):
      n = int(16000 * (0.4 + 0.1 * (i % 4)))
      t = np.arange(n) / 16000
      x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(n)
      sf.write(root / "audio" / f"u{i:02d}.flac", x.astype(np.float32), 16000)
      text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 3))
      f.write(json.dumps({"audio_filepath": f"audio/u{i:02d}.flac", "duration": n / 16000,
                          "text": text}) + "\n")
  config = root / "chaos_config.py"
  config.write_text(_CONFIG.format(tiny=str(ROOT / "configs" / "tiny.py"),
                                   manifest=str(manifest), steps=steps, every=checkpoint_every))
  return manifest, config


class Life:
  """One start of train.py: its stdout lines arrive in a queue (with their times)."""

  def __init__(self, config: pathlib.Path, workdir: pathlib.Path, env: dict, log_path):
    self.stderr = open(log_path, "w", encoding="utf-8")
    self.proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"--config={config}", f"--workdir={workdir}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
    self.lines: queue.Queue = queue.Queue()
    self.stdout: list[str] = []
    self.t0 = time.perf_counter()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.put((time.perf_counter(), line.rstrip("\n")))
    self.lines.put((time.perf_counter(), None))

  def next_line(self, timeout: float):
    """The next stdout line (None at its end), or "" on timeout."""
    try:
      _, line = self.lines.get(timeout=timeout)
    except queue.Empty:
      return ""
    if line is not None:
      self.stdout.append(line)
    return line

  def wait_progress(self, count: int, timeout: float = 300.0) -> bool:
    """Waits for `count` more progress lines; False if the process ended first."""
    end = time.perf_counter() + timeout
    while count > 0:
      line = self.next_line(max(end - time.perf_counter(), 0.01))
      if line is None:
        return False
      if line == "" and time.perf_counter() > end:
        raise TimeoutError("no progress line within the timeout")
      if _PROGRESS.match(line or ""):
        count -= 1
    return True

  def finish(self, timeout: float = 300.0) -> int:
    """Waits for the exit; drains stdout; returns the status."""
    rc = self.proc.wait(timeout=timeout)
    while (line := self.next_line(10.0)) is not None:
      if line == "":
        break
    self.stderr.close()
    return rc


def _env(root: pathlib.Path) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  return env


def _final_checkpoint(workdir: pathlib.Path):
  """(step, every array of the newest checkpoint as numpy, its data iterator state)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = workdir / "checkpoints"
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True)) as mngr:
    step = mngr.latest_step()
    out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(),
                                                      train=ocp.args.StandardRestore()))
  leaves = jax.tree_util.tree_flatten_with_path({"params": out["params"],
                                                 "train": out["train"]})[0]
  arrays = {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}
  data = json.loads(next((directory / str(step) / "data").glob("process_0-of-1.json"))
                    .read_text())
  return step, arrays, data


def _metrics(workdir: pathlib.Path) -> list[dict]:
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    return [json.loads(l) for l in f]


def _stats(xs: list[float]) -> dict:
  return {"n": len(xs), "median": round(statistics.median(xs), 3) if xs else None,
          "max": round(max(xs), 3) if xs else None}


def run_chaos(root: pathlib.Path, *, kills: int = 24, seed: int = 0, steps: int = 100,
              checkpoint_every: int = 3, log=print) -> dict:
  """The chaos run in `root` (see the module docstring); returns the results."""
  root = pathlib.Path(root)
  _, config = write_run_files(root, steps, checkpoint_every)
  env = _env(root)
  t = time.perf_counter()
  ref = Life(config, root / "reference", env, root / "reference.stderr")
  rc = ref.finish(timeout=900)
  ref_seconds = time.perf_counter() - t
  if rc != 0:
    raise RuntimeError(f"reference run failed ({rc}): see {root / 'reference.stderr'}")
  log(f"reference: {steps} steps in {ref_seconds:.1f} s (start-up and compilation included)")

  rng = random.Random(seed)
  work = root / "chaos"
  lives, t_chaos = [], time.perf_counter()
  while sum(l["killed"] for l in lives) < kills:
    n = len(lives)
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    phase = rng.choices(["startup", "steps", "mid-step"], weights=[1, 2, 2])[0]
    wait_steps, delay = rng.randint(0, 4), rng.uniform(0.0, 0.15)
    startup_delay = rng.uniform(0.5, 8.0)
    life = Life(config, work, env, root / f"life_{n:02d}.stderr")
    alive = True
    if phase == "startup":
      time.sleep(startup_delay)
      alive = life.proc.poll() is None
    else:
      alive = life.wait_progress(1 + wait_steps)
      if alive and phase == "mid-step":
        time.sleep(delay)
    sent = time.perf_counter()
    if alive and life.proc.poll() is None:
      life.proc.send_signal(sig)
      killed = True
    else:
      killed = False
    rc = life.finish()
    seconds = time.perf_counter() - sent
    progress = [int(m.group(1)) for l in life.stdout if (m := _PROGRESS.match(l))]
    matches = [m for l in life.stdout if (m := _WRITTEN.match(l))]
    written = [int(m.group(1)) for m in matches]
    stale = sum("stale, taken over" in l for l in life.stdout)
    rec = {"life": n, "signal": sig.name if killed else None, "phase": phase,
           "killed": killed, "rc": rc, "seconds_to_exit": round(seconds, 3),
           "first_step": progress[0] if progress else None,
           "last_step": progress[-1] if progress else None,
           "checkpoint_written": written[0] if written else None,
           "seconds_to_checkpoint": (float(matches[0].group(2))
                                     if matches and matches[0].group(2) else None),
           "stale_lock_taken_over": stale}
    if killed and sig == signal.SIGTERM:
      # 75 with a checkpoint of the last step trained; or, before train.py has caught
      # the signals (Python start-up, imports), the default death, having done nothing.
      rec["ok"] = ((rc == 75 and (not progress or written == [progress[-1]]))
                   or (rc == -signal.SIGTERM and not progress))
    elif killed:
      rec["ok"] = rc == -signal.SIGKILL
    else:
      rec["ok"] = rc == 0
    lives.append(rec)
    log(f"life {n:2d}: {rec['signal'] or 'finished':7s} {phase:8s} steps "
        f"{rec['first_step']}..{rec['last_step']} rc {rc} "
        f"{'ckpt ' + str(rec['checkpoint_written']) if written else ''} "
        f"{'(stale lock taken over)' if stale else ''} {seconds:.2f} s")
    if not killed:
      if rc != 0:
        raise RuntimeError(f"life {n} failed ({rc}): see {root / f'life_{n:02d}.stderr'}")
      break  # finished before all the kills: more steps needed
  final = Life(config, work, env, root / "final.stderr")
  final_rc = final.finish(timeout=900)
  chaos_seconds = time.perf_counter() - t_chaos

  ref_step, ref_arrays, ref_data = _final_checkpoint(root / "reference")
  step, arrays, data = _final_checkpoint(work)
  equal_state = (step == ref_step and arrays.keys() == ref_arrays.keys()
                 and all(arrays[k].dtype == ref_arrays[k].dtype
                         and arrays[k].tobytes() == ref_arrays[k].tobytes() for k in arrays)
                 and data == ref_data)
  ref_metrics, metrics = _metrics(root / "reference"), _metrics(work)
  logged = [m["step"] for m in metrics]
  train_keys = lambda m: {k: v for k, v in m.items() if k.startswith("train/")}  # noqa: E731
  equal_metrics = (logged == [m["step"] for m in ref_metrics]
                   and all(train_keys(a) == train_keys(b)
                           for a, b in zip(metrics, ref_metrics)))
  during = [l for l in lives if l["signal"] == "SIGTERM" and l["ok"]
            and l["checkpoint_written"] is not None]
  term = [l["seconds_to_exit"] for l in during]
  to_ckpt = [l["seconds_to_checkpoint"] for l in during if l["seconds_to_checkpoint"]]
  killed = [l for l in lives if l["killed"]]
  return {
      "kills": len(killed),
      "sigkill": sum(l["signal"] == "SIGKILL" for l in killed),
      "sigterm": sum(l["signal"] == "SIGTERM" for l in killed),
      "kills_survived": sum(l["ok"] for l in killed),
      "all_exits_as_expected": all(l["ok"] for l in lives) and final_rc == 0,
      "stale_locks_taken_over": sum(l["stale_lock_taken_over"] for l in lives)
                                + sum("stale, taken over" in l for l in final.stdout),
      "final_step": step, "steps": steps,
      "bitwise_equal_state": bool(equal_state),
      "bitwise_equal_train_metrics": bool(equal_metrics),
      "each_step_logged_once": logged == list(range(1, steps + 1)),
      "sigterm_to_exit_s": _stats(term),
      "sigterm_to_checkpoint_written_s": _stats(to_ckpt),
      "reference_seconds": round(ref_seconds, 1),
      "chaos_seconds": round(chaos_seconds, 1),
      "seed": seed, "checkpoint_every": checkpoint_every,
      "lives": lives,
  }


def for_report(res: dict) -> dict:
  """The results file: the scalar results under "summary" (a table in the report)."""
  summary = {k: v for k, v in res.items()
             if isinstance(v, (bool, int, float, str)) and k != "command"}
  return dict({"summary": summary}, **{k: v for k, v in res.items() if k not in summary})


def _fmt(stats: dict) -> str:
  return f"median {stats['median']}, max {stats['max']} (n={stats['n']})"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--kills", type=int, default=24)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--checkpoint_every", type=int, default=3)
  p.add_argument("--out", default="")
  p.add_argument("--keep", default="", help="run directory to keep (default: a temp dir)")
  args = p.parse_args()
  from mtp_jax.machine import machine_info  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
    root = pathlib.Path(args.keep or tmp)
    res = run_chaos(root, kills=args.kills, seed=args.seed, steps=args.steps,
                    checkpoint_every=args.checkpoint_every)
  res["machine"] = machine_info()
  res["command"] = "python bench/chaos.py " + " ".join(sys.argv[1:])
  rows = [("kills (SIGKILL + SIGTERM)", f"{res['kills']} ({res['sigkill']} + {res['sigterm']})"),
          ("kills survived", f"{res['kills_survived']}/{res['kills']}"),
          ("stale locks taken over", res["stale_locks_taken_over"]),
          ("final state bitwise equal", res["bitwise_equal_state"]),
          ("train metrics bitwise equal", res["bitwise_equal_train_metrics"]),
          ("each step logged once", res["each_step_logged_once"]),
          ("SIGTERM -> checkpoint written (s)", _fmt(res["sigterm_to_checkpoint_written_s"])),
          ("SIGTERM -> process exit (s)", _fmt(res["sigterm_to_exit_s"])),
          ("wall time (s)", f"reference {res['reference_seconds']}, chaos {res['chaos_seconds']}")]
  width = max(len(r[0]) for r in rows)
  for name, value in rows:
    print(f"{name:{width}s}  {value}")
  import jax  # pylint: disable=import-outside-toplevel
  out = args.out or str(ROOT / "bench" / "results" / f"chaos_{jax.default_backend()}.json")
  with open(out, "w", encoding="utf-8") as f:
    json.dump(for_report(res), f, indent=1)
  print(f"wrote {out}")
  ok = (res["kills_survived"] == res["kills"] and res["bitwise_equal_state"]
        and res["bitwise_equal_train_metrics"] and res["each_step_logged_once"])
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
