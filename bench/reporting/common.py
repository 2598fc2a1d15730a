"""What every renderer shares: loading, labels (machine, date, command), cell formatting,
markdown tables, the `Section` a renderer returns and the `Context` it renders in."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Sequence

ROOT = pathlib.Path(__file__).resolve().parents[2]
RANDOM_LABEL = "random init (latency only)"
HEAD_TYPES = ("independent", "latent", "sequential")


def load_json(path: str | os.PathLike) -> dict | None:
  """Returns the parsed JSON object at `path`, or None when absent or unreadable."""
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError):
    return None
  return data if isinstance(data, dict) else {"rows": data}


def get(d: Any, *keys, default=None):
  """d[k0][k1]...; list indices may be ints or digit strings; `default` when missing."""
  for k in keys:
    if isinstance(d, list) and str(k).isdigit() and int(k) < len(d):
      d = d[int(k)]
    elif isinstance(d, dict) and k in d:
      d = d[k]
    else:
      return default
  return d


def measured_date(data: dict, path: str | os.PathLike) -> str:
  """The JSON's date (YYYY-MM-DD), else the file's modification date, so labelled."""
  m = data.get("machine") if isinstance(data.get("machine"), dict) else {}
  date = data.get("date") or m.get("date")
  if isinstance(date, str) and date:
    return date[:10]
  try:
    mtime = os.path.getmtime(path)
  except OSError:
    return "date unknown"
  return (datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).date().isoformat()
          + " (file date)")


def machine_of(data: dict) -> str:
  """The machine a JSON was measured on, from its machine fields."""
  m = data.get("machine") if isinstance(data.get("machine"), dict) else {}
  parts = []
  kind = data.get("device_kind") or m.get("device_kind")
  backend = data.get("backend") or m.get("backend")
  if kind and str(kind).lower() != "cpu":
    parts.append(str(kind))
  cpu = m.get("cpu") or m.get("processor")
  if cpu:
    parts.append(str(cpu))
  if m.get("cpu_count"):
    parts.append(f"{m['cpu_count']} CPU cores")
  if not parts and m.get("platform"):
    parts.append(str(m["platform"]))
  if backend and not any(str(backend).lower() in p.lower() for p in parts):
    parts.append(f"backend {backend}")
  jax_v = m.get("jax") or m.get("jax_version") or data.get("jax_version")
  if jax_v:
    parts.append(f"jax {jax_v}")
  return ", ".join(parts) if parts else "machine unknown"


def measured_on(data: dict, path: str | os.PathLike) -> str:
  """`machine; date` of one results file."""
  return f"{machine_of(data)}; {measured_date(data, path)}"


def portable(cmd: str) -> str:
  """A recorded command without this machine's paths: the repository's own absolute
  prefix dropped, a sibling `shared/` data folder written as `../shared/`, scratch
  outputs under /tmp/ written under the repository's `runs/` (where commands put them)."""
  cmd = re.sub(r"(?<![\w.])/\S*?/shared/data/", "../shared/data/", cmd.replace(f"{ROOT}/", ""))
  return re.sub(r"(?<![\w.])/tmp/", "runs/", cmd)


def command_of(data: dict, default: str) -> str:
  """The command that reproduces `data` (its `command`, `argv` or `args`, else
  `default`), made `portable`."""
  return portable(_command_of(data, default))


def _command_of(data: dict, default: str) -> str:
  cmd = data.get("command") or get(data, "machine", "command")
  if isinstance(cmd, list):
    cmd = " ".join(map(str, cmd))
  if isinstance(cmd, str) and cmd:
    return cmd if cmd.startswith("python") else f"python {cmd}"
  argv = data.get("argv") or get(data, "machine", "argv")
  if isinstance(argv, list) and argv:
    return "python " + " ".join(map(str, argv))
  args = data.get("args")
  script = default.split()[:2]
  if isinstance(args, dict) and args and len(script) == 2 and script[1].endswith(".py"):
    flags = [f"--{k} {v}" for k, v in args.items()
             if v is not None and v is not False and k != "out"]
    return " ".join(script + [f.replace(" True", "") for f in flags])
  return default


def is_random(data: dict) -> bool:
  """True when the JSON says its model was not trained."""
  return (data.get("trained") is False or bool(data.get("random_init"))
          or bool(get(data, "machine", "random_init")))


def fmt(v: Any, kind: str = "") -> str:
  """Formats one table cell; `kind` in {"pct", "x", "s", "ms", "rel", ""}."""
  if v is None or (isinstance(v, float) and v != v):
    return "–"
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, (int, float)):
    if kind == "pct":
      return f"{100 * v:.1f}%"
    if kind == "pct2":
      return f"{100 * v:.2f}%"
    if kind == "rel":  # a ratio shown as a relative change
      return f"{100 * (v - 1):+.1f}%"
    if kind == "x":
      return f"{v:.2f}×"
    if kind in ("s", "ms"):
      return f"{v:.3g} {kind}"
    if isinstance(v, int):
      return str(v)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
  if isinstance(v, (list, tuple)):
    return "/".join(fmt(x) for x in v)
  return str(v).replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """A GitHub markdown table."""
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def caption(data: dict, path, default_cmd: str) -> str:
  """The line under every table's title: machine, date and the reproducing command."""
  return (f"*Measured on {measured_on(data, path)}. Reproduce: "
          f"`{command_of(data, default_cmd)}`*")


def rel(path: str | os.PathLike, root: str | os.PathLike) -> str:
  """`path` relative to `root` when inside it, else as given (a relative path too)."""
  if not pathlib.Path(path).is_absolute():
    return str(path)
  try:
    return str(pathlib.Path(path).resolve().relative_to(pathlib.Path(root).resolve()))
  except ValueError:
    return str(path)


@dataclasses.dataclass
class Section:
  """One rendered table (or group of tables): markdown plus the plots it links."""
  title: str | None
  body: str = ""
  plots: list = dataclasses.field(default_factory=list)
  files: list = dataclasses.field(default_factory=list)  # the results files it shows

  def markdown(self, level: int = 3) -> str:
    head = f"{'#' * level} {self.title}\n\n" if self.title else ""
    return f"{head}{self.body.rstrip()}\n"


@dataclasses.dataclass
class Context:
  """Where a section is rendered: results and plots folders, the repository root
  (commands and file names are relative to it) and the page's folder (links are)."""
  results_dir: pathlib.Path
  root: pathlib.Path = ROOT
  page_dir: pathlib.Path | None = None
  plots_dir: pathlib.Path | None = None
  draw: bool = True  # write the PNGs; False only computes their links (--check)

  def __post_init__(self):
    self.results_dir = pathlib.Path(self.results_dir).resolve()
    self.root = pathlib.Path(self.root).resolve()
    self.page_dir = pathlib.Path(self.page_dir).resolve() if self.page_dir else self.root
    self.plots_dir = (pathlib.Path(self.plots_dir) if self.plots_dir
                      else self.results_dir / "plots")

  def name(self, path) -> str:
    """A results file's name relative to the results folder (e.g. attempts/x.json)."""
    return rel(path, self.results_dir)

  def link(self, path) -> str:
    """A link from the page being written to `path`."""
    return os.path.relpath(pathlib.Path(path).resolve(), self.page_dir.resolve())

  def plot(self, name: str, draw: Callable, label: str, alt: str) -> tuple[str, pathlib.Path]:
    """Markdown for plot `name` under plots_dir, drawn by `draw(plt) -> figure` and
    labelled `label` (machine and date) when `self.draw`."""
    path = self.plots_dir / name
    if self.draw:
      plt = pyplot()
      fig = draw(plt)
      fig.text(0.99, 0.005, label, ha="right", va="bottom", fontsize=7, color="0.35")
      self.plots_dir.mkdir(parents=True, exist_ok=True)
      fig.savefig(path, dpi=110, metadata={"Software": None})
      plt.close(fig)
    return f"![{alt}]({self.link(path)})", path


def pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
