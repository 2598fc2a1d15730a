"""Stopping cleanly on SIGTERM and SIGINT: preemption, agreed on by every host.

Cloud TPU and GPU VMs are preempted with SIGTERM and about 30 s of grace, on every
host at once; a person stops a run with Ctrl-C (SIGINT). `StopSignals` turns either
into a stop request instead of an immediate exit. The training loop asks
`StopSignals.agreed(step)` once per step; when it answers, the loop finishes that
step, writes a checkpoint of exactly it and raises `Preempted`, and train.py exits
with `PREEMPTED_EXIT_CODE`. Sending the signal a second time stops at once (a
`KeyboardInterrupt`, no checkpoint). The feature-cache builder
(`mtp_jax.train.pretrained`) stops the same way, after the encoder batch in flight.

Every process of a multi-host run must stop after the same step, since a checkpoint
is a collective write. `agreed(step)` gives the same answer on every process:

* one process: the signal this process received, if any;
* several processes with JAX's preemption service (`jax.distributed.initialize`,
  `jax_enable_preemption_service`, on by default): SIGTERM is left to JAX's own
  notifier, which passes the notice to every host through the coordination service,
  and `multihost_utils.reached_preemption_sync_point(step)` turns true at the same
  step everywhere; a SIGINT is forwarded to that notifier as a SIGTERM to this
  process;
* several processes without it: each process's flag is OR-reduced over the
  processes at every step (`multihost_utils.process_allgather`).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable

import numpy as np

# EX_TEMPFAIL (sysexits.h): "temporary failure; the user is invited to retry". A
# scheduler that sees it re-runs the same command, which resumes from the checkpoint.
PREEMPTED_EXIT_CODE = 75
_LOG = logging.getLogger(__name__)


class Preempted(RuntimeError):
  """Stopped on SIGTERM / SIGINT after writing a checkpoint; re-running resumes.

  Attributes:
    signal_name: "SIGTERM", "SIGINT" or "preemption notice" (from another host).
    step: the last step trained (its checkpoint written), or None when the signal
      came before the first step (nothing new to save).
    seconds: from the signal to the checkpoint being written (0 when not known, e.g.
      a notice from another host).
  """

  def __init__(self, message: str, *, signal_name: str, step: int | None,
               seconds: float = 0.0):
    super().__init__(message)
    self.signal_name = signal_name
    self.step = step
    self.seconds = seconds


def _jax_preemption_service() -> bool:
  """Whether JAX's distributed runtime runs a preemption sync manager."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover
    return False
  state = distributed.global_state
  return (getattr(state, "client", None) is not None
          and getattr(state, "preemption_sync_manager", None) is not None)


class StopSignals:
  """Catches SIGTERM and SIGINT while active (a context manager) as a stop request.

  Handlers are installed on `__enter__` and the previous ones restored on `__exit__`;
  outside the main thread (where Python cannot install handlers) nothing is caught
  and `agreed` only reports notices of JAX's preemption service.

  Args:
    log: called with one line when a stop request is first seen by `agreed`.
    process_count: processes that must agree (default `jax.process_count()`).
    mode: "local", "jax" or "allgather" (default: "local" for one process, "jax" when
      JAX's preemption service runs, else "allgather"); see the module docstring.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, log: Callable[[str], None] = _LOG.warning,
               process_count: int | None = None, mode: str | None = None):
    if process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_count = jax.process_count()
    if mode is None:
      mode = ("local" if process_count == 1 else
              "jax" if _jax_preemption_service() else "allgather")
    if mode not in ("local", "jax", "allgather"):
      raise ValueError(f"StopSignals mode={mode!r}: expected local, jax or allgather")
    self.mode = mode
    self._log = log
    self._received: int | None = None  # signal number
    self._received_at = 0.0            # time.monotonic() of the first signal
    self._previous: dict[int, object] = {}
    self._agreed: str | None = None
    self._logged = False

  # ---------------------------------------------------------------- handlers
  def _handler(self, signum, frame) -> None:
    del frame
    if self._received is not None:  # a second signal: stop now, without a checkpoint
      raise KeyboardInterrupt(f"{signal.Signals(signum).name} received twice: stopping "
                              "at once, without a checkpoint")
    self._received, self._received_at = signum, time.monotonic()
    if self.mode == "jax":  # hand the notice to JAX's notifier (it owns SIGTERM)
      os.kill(os.getpid(), signal.SIGTERM)

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is not threading.main_thread():
      _LOG.warning("StopSignals: not the main thread; SIGTERM/SIGINT are not caught")
      return self
    for sig in self.SIGNALS:
      if self.mode == "jax" and sig == signal.SIGTERM:
        continue  # JAX's notifier handles SIGTERM
      self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    self._previous.clear()

  # ---------------------------------------------------------------- queries
  @property
  def received(self) -> str | None:
    """The signal this process received ("SIGTERM" / "SIGINT"), if any."""
    return None if self._received is None else signal.Signals(self._received).name

  def seconds_since_signal(self) -> float:
    """Seconds since this process received the signal (0 without one)."""
    return time.monotonic() - self._received_at if self._received is not None else 0.0

  def agreed(self, step: int) -> str | None:
    """The stop request every process agrees on at `step`, or None.

    Every process must call it at every step, with increasing steps (JAX's sync point
    counts on that). Once it has answered, it keeps answering the same.
    Args:
      step: the step just finished (or the step about to start, before the first).
    Returns:
      "SIGTERM", "SIGINT", "preemption notice" (this process received nothing, another
      did) or None.
    """
    if self._agreed is None:
      self._agreed = self._ask(step)
      if self._agreed is not None and not self._logged:
        self._logged = True
        self._log(f"{self._agreed} received: stopping after step {step} with a "
                  "checkpoint of it (send it again to stop at once, without one)")
    return self._agreed

  def _ask(self, step: int) -> str | None:
    if self.mode == "local":
      return self.received
    if self.mode == "jax":
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      if not multihost_utils.reached_preemption_sync_point(int(step)):
        return None
      return self.received or "preemption notice"
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    codes = np.asarray(multihost_utils.process_allgather(np.int32(self._received or 0)))
    if not codes.any():
      return None
    return self.received or "preemption notice"
