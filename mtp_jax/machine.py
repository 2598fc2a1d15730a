"""What a measurement ran on: recorded with every benchmark result."""
from __future__ import annotations

import datetime
import os
import platform


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor()


def machine_info(**extra) -> dict:
  """Host, CPU, accelerator, library versions and the UTC date, plus `extra` fields."""
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  info = {"host": platform.node(), "platform": platform.platform(), "cpu": cpu_model(),
          "cpu_count": os.cpu_count(), "python": platform.python_version(),
          "jax": jax.__version__, "backend": jax.default_backend(),
          "device_kind": devices[0].device_kind, "device_count": len(devices),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
  info.update(extra)
  return info


def write_result(path: str | os.PathLike, result: dict) -> None:
  """Writes a benchmark's result JSON (creating its folder) and says where."""
  import json  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {path}")
