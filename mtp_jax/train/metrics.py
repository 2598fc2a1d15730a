"""Training metrics: TensorBoard events (tensorboardX), `metrics.jsonl`, a progress line."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

import numpy as np

METRICS_FILE = "metrics.jsonl"


def flatten_step_metrics(m: Mapping, prefix: str = "train/") -> dict[str, float]:
  """Device metrics of a step (host numpy) -> flat scalars; per-head arrays expand
  to `loss_head<k>` / `acc_head<k>` (k 1-based)."""
  out = {}
  for key, v in m.items():
    v = np.asarray(v)
    if v.ndim == 0:
      out[prefix + key] = float(v)
    else:
      stem = key[:-2] if key.endswith("_k") else key
      for i, x in enumerate(v.reshape(-1)):
        out[f"{prefix}{stem}_head{i + 1}"] = float(x)
  return out


def truncate_metrics(path: str, last_step: int) -> int:
  """Drops the lines of a metrics.jsonl whose step is after `last_step` (and a
  half-written last line); returns how many were dropped."""
  if not os.path.isfile(path):
    return 0
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if int(json.loads(line)["step"]) <= last_step:
        kept.append(line if line.endswith("\n") else line + "\n")
    except (ValueError, KeyError, TypeError):
      pass  # a line a killed run did not finish
  if len(kept) < len(lines):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)
  return len(lines) - len(kept)


class MetricWriter:
  """Writes scalars to `<workdir>/tb` (TensorBoard) and `<workdir>/metrics.jsonl`.

  Only process 0 writes; other processes get a no-op writer. Each JSONL line is
  {"step": int, "time": unix seconds, <name>: float, ...}. A run resumed from step
  `start_step` first drops what an earlier, killed run logged after that step (its
  steps are replayed), from metrics.jsonl and TensorBoard (`purge_step`), so each step
  is logged once.
  """

  def __init__(self, workdir: str, enabled: bool = True, start_step: int = 0):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      path = os.path.join(workdir, METRICS_FILE)
      truncate_metrics(path, start_step)
      self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start_step + 1)
      self._jsonl = open(path, "a", encoding="utf-8")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)
    rec = {"step": int(step), "time": time.time()}
    rec.update({k: (None if not math.isfinite(v) else float(v)) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(rec) + "\n")
    self._jsonl.flush()

  def write_text(self, step: int, tag: str, text: str) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, step)

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


class Throughput:
  """Steps/s and audio-seconds/s since the last report, and the ETA."""

  def __init__(self, total_steps: int, start_step: int, max_seconds: float = 0.0):
    """`max_seconds` > 0: the run also stops after that much wall time (train.max_minutes),
    so the ETA is the sooner of the two."""
    self.total, self._step0 = total_steps, start_step
    self._max_seconds = float(max_seconds)
    self._t0 = time.perf_counter()
    self._audio = 0.0
    self._start_time, self._start_step = self._t0, start_step

  def add_audio(self, seconds: float) -> None:
    self._audio += seconds

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    dt = max(now - self._t0, 1e-9)
    steps_s = (step - self._step0) / dt
    out = {"perf/steps_per_s": steps_s, "perf/audio_s_per_s": self._audio / dt}
    overall = (step - self._start_step) / max(now - self._start_time, 1e-9)
    eta = (self.total - step) / overall if overall > 0 else float("inf")
    if self._max_seconds > 0:
      eta = min(eta, max(self._max_seconds - (now - self._start_time), 0.0))
    out["perf/eta_s"] = eta
    self._t0, self._step0, self._audio = now, step, 0.0
    return out


def progress_line(step: int, total: int, scalars: Mapping[str, float]) -> str:
  """`step 120/1000 | loss 2.31 | acc1 0.41 | 3.2 steps/s | 95 audio-s/s | ETA 4m35s`."""
  eta = scalars.get("perf/eta_s", float("inf"))
  eta_s = "?" if not math.isfinite(eta) else f"{int(eta) // 60}m{int(eta) % 60:02d}s"
  parts = [f"step {step}/{total}", f"loss {scalars.get('train/loss', float('nan')):.4f}"]
  k = 1
  while f"train/acc_head{k}" in scalars:
    parts.append(f"acc{k} {scalars[f'train/acc_head{k}']:.3f}")
    k += 1
  if "train/ctc_loss" in scalars:
    parts.append(f"ctc {scalars['train/ctc_loss']:.3f}")
  parts.append(f"{scalars.get('perf/steps_per_s', 0):.2f} steps/s")
  if scalars.get("perf/audio_s_per_s", 0):  # none in a text-only run
    parts.append(f"{scalars['perf/audio_s_per_s']:.1f} audio-s/s")
  parts.append(f"ETA {eta_s}")
  if scalars.get("train/nonfinite_total", 0):
    parts.append(f"skipped {int(scalars['train/nonfinite_total'])}")
  return " | ".join(parts)
