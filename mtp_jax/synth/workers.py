"""Runs synthesis shards, each in a fresh process, and shows progress.

espeak-ng's output depends on everything the process spoke before, so every
shard must start from the state of a freshly loaded library. The main process
starts `workers` helper processes (plain subprocesses running `_worker_main`,
so nothing depends on the caller's `__main__` or multiprocessing settings).
A helper imports numpy, soxr and soundfile once but never loads espeak; for
each shard it forks a child that loads espeak, renders the shard's utterances
in order, writes their FLAC files and reports on the helper's stdout. A shard
costs one fork plus one espeak initialisation (well under 0.1 s).

Messages are JSON lines: {"kind": "tick"|"done"|"error"|"exit", "shard": i, ...}.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import selectors
import subprocess
import sys
import time
import traceback
from typing import Sequence

from mtp_jax.synth.render import Utterance
from mtp_jax.synth.render import render

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SynthesisError(RuntimeError):
  """A worker failed; the message names the shard and carries its traceback."""


def _send(fd: int, msg: dict) -> None:
  data = (json.dumps(msg) + "\n").encode()
  while data:
    data = data[os.write(fd, data):]


def _render_shard(job: dict, fd: int) -> None:
  """Child process: renders one shard in order, writing FLAC files."""
  import soundfile  # pylint: disable=g-import-not-at-top
  rate = job["sample_rate"]
  lengths = []
  for fields in job["utts"]:
    utt = Utterance(**fields)
    samples = render(utt, rate)
    soundfile.write(os.path.join(job["out_dir"], utt.audio_filepath), samples,
                    rate, format="FLAC", subtype="PCM_16")
    lengths.append(len(samples))
    _send(fd, {"kind": "tick", "shard": job["shard"], "audio_s": len(samples) / rate})
  _send(fd, {"kind": "done", "shard": job["shard"], "lengths": lengths})


def _worker_main() -> None:
  """Helper process: reads one job per stdin line, forks a child per job."""
  import soundfile  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import soxr  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  out = sys.stdout.fileno()
  while True:
    line = sys.stdin.readline()
    if not line:
      return
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:  # child: fresh espeak state, exits without cleanup handlers
      code = 1
      try:
        _render_shard(job, out)
        code = 0
      except BaseException:  # pylint: disable=broad-except
        try:
          _send(out, {"kind": "error", "shard": job["shard"],
                      "traceback": traceback.format_exc()})
        except OSError:
          pass  # the main process is gone
      finally:
        os._exit(code)  # pylint: disable=protected-access
    _, status = os.waitpid(pid, 0)
    _send(out, {"kind": "exit", "shard": job["shard"],
                "status": os.waitstatus_to_exitcode(status)})


class Progress:
  """Utterances/s, audio seconds per second and ETA on stderr."""

  def __init__(self, total: int, enabled: bool = True, stream=None):
    self.total, self.enabled = total, enabled
    self.stream = stream or sys.stderr
    self.tty = getattr(self.stream, "isatty", lambda: False)()
    self.done, self.audio_s = 0, 0.0
    self.start = self.last = time.monotonic()

  def tick(self, audio_s: float) -> None:
    self.done += 1
    self.audio_s += audio_s
    now = time.monotonic()
    if self.done == self.total or now - self.last >= (0.5 if self.tty else 10):
      self.last = now
      self.show(final=self.done == self.total)

  def show(self, final: bool = False) -> None:
    if not self.enabled:
      return
    wall = max(time.monotonic() - self.start, 1e-9)
    rate = self.done / wall
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 1e7 else "?"
    line = (f"synth: {self.done}/{self.total} utts | {rate:.1f} utt/s | "
            f"{self.audio_s / wall:.1f} audio s/s | {self.audio_s / 3600:.2f} h | "
            f"ETA {eta_s}")
    end = "\n" if final or not self.tty else ""
    self.stream.write(("\r" if self.tty else "") + line + end)
    self.stream.flush()


def run_shards(out_dir: str, shards: Sequence[Sequence[Utterance]],
               sample_rate: int, workers: int, progress: Progress) -> list[list[int]]:
  """Renders every shard in a fresh process, `workers` at a time.

  Args:
    out_dir: absolute output folder (audio paths are relative to it).
    shards: utterances, cut into shards.
    sample_rate: output rate in Hz.
    workers: number of helper processes.
    progress: receives a tick per utterance.

  Returns:
    Per shard, the sample counts of its utterances.

  Raises:
    SynthesisError: a shard failed or a helper died.
  """
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
  for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    env[var] = "1"  # helpers fork; keep them single-threaded
  cmd = [sys.executable, "-c",
         "from mtp_jax.synth.workers import _worker_main; _worker_main()"]
  procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env) for _ in range(max(1, min(workers, len(shards))))]
  pending = collections.deque(range(len(shards)))
  current: dict[int, int | None] = {}
  buffers = {w: b"" for w in range(len(procs))}
  results: dict[int, list[int]] = {}
  sel = selectors.DefaultSelector()

  def dispatch(w: int) -> None:
    if pending:
      i = pending.popleft()
      current[w] = i
      job = {"shard": i, "out_dir": out_dir, "sample_rate": sample_rate,
             "utts": [dataclasses.asdict(u) for u in shards[i]]}
      procs[w].stdin.write((json.dumps(job) + "\n").encode())
      procs[w].stdin.flush()
    else:
      current[w] = None
      procs[w].stdin.close()

  def handle(w: int, msg: dict) -> None:
    kind, shard = msg["kind"], msg["shard"]
    if kind == "tick":
      progress.tick(msg["audio_s"])
    elif kind == "done":
      results[shard] = msg["lengths"]
    elif kind == "error":
      raise SynthesisError(f"shard {shard} failed:\n{msg['traceback']}")
    elif kind == "exit":
      if shard not in results:
        raise SynthesisError(f"shard {shard}: its process exited with status "
                             f"{msg['status']} before finishing")
      dispatch(w)

  ok = False
  try:
    for w, proc in enumerate(procs):
      sel.register(proc.stdout, selectors.EVENT_READ, w)
      dispatch(w)
    while len(results) < len(shards) or any(c is not None for c in current.values()):
      for key, _ in sel.select(timeout=1.0):
        w = key.data
        chunk = os.read(key.fileobj.fileno(), 1 << 16)
        if not chunk:
          sel.unregister(key.fileobj)
          if current.get(w) is not None:
            raise SynthesisError(
                f"synthesis helper {w} died (exit code {procs[w].wait()}) "
                f"while on shard {current[w]}")
          continue
        buffers[w] += chunk
        *lines, buffers[w] = buffers[w].split(b"\n")
        for line in lines:
          handle(w, json.loads(line))
    ok = True
  finally:
    sel.close()
    for proc in procs:
      if not ok:
        proc.terminate()
      if proc.stdin and not proc.stdin.closed:
        proc.stdin.close()
    for proc in procs:
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      proc.stdout.close()
  return [results[i] for i in range(len(shards))]
