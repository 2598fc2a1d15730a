"""Summary tables: one row per result picked from any results file, one column per field.

A summary is data (`reporting.summaries`): each `Row` names a results file and the
record in it (`where`: field values that pick one of its "rows"), each `Col` a field of
that record (a dotted path; "a / b" is the ratio of two). A row without a file, or whose
file is missing, shows its `note` instead (a place held for a result to come). The
table lists, under it, the machine, dates and reproducing command of every file used.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from reporting.common import (Context, Section, command_of, fmt, get, load_json, machine_of,
                              md_table, measured_date)


@dataclasses.dataclass(frozen=True)
class Col:
  header: str
  field: str                      # dotted path in the record; "a / b": the ratio a / b
  kind: str = ""                  # a `fmt` kind: pct, pct2, x, rel, s, ms
  where: tuple = ()               # (key, value) pairs that pick the record, over the row's


@dataclasses.dataclass(frozen=True)
class Row:
  label: str
  file: str | None = None         # relative to the results folder
  where: tuple = ()               # (key, value) pairs; none: the file's top level
  note: str = "not measured yet"  # shown when there is no file


@dataclasses.dataclass(frozen=True)
class Summary:
  columns: tuple
  rows: tuple
  intro: str = ""


def _pick(data: dict, where: dict) -> Any:
  if not where:
    return data
  return next((r for r in data.get("rows") or [] if isinstance(r, dict)
               and all(r.get(k) == v for k, v in where.items())), None)


def _value(record, field: str):
  if record is None:
    return None
  if " / " in field:
    a, b = (_value(record, f) for f in field.split(" / ", 1))
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
  return get(record, *field.split("."))


def render_summary(name: str, spec: Summary, ctx: Context) -> Section:
  """The summary table `spec` from the files under ctx.results_dir."""
  table, used = [], {}
  for row in spec.rows:
    path = ctx.results_dir / row.file if row.file else None
    data = load_json(path) if path else None
    if data is None:
      table.append([row.label, row.note] + [""] * (len(spec.columns) - 1) + [""])
      continue
    used.setdefault(row.file, (path, data))
    cells = [fmt(_value(_pick(data, dict(row.where) | dict(c.where)), c.field), c.kind)
             for c in spec.columns]
    table.append([row.label] + cells + [f"[{row.file}]({ctx.link(path)})"])
  one_file = len(used) == 1
  if one_file:  # the file goes in the caption instead of a column
    table = [row[:-1] for row in table]
  body = [spec.intro, ""] if spec.intro else []
  body.append(md_table([""] + [c.header for c in spec.columns]
                       + ([] if one_file else ["results file"]), table))
  if used:
    machines = sorted({machine_of(d) for _, d in used.values()})
    dates = sorted({measured_date(d, p) for p, d in used.values()})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    source = "".join(f" From [{f}]({ctx.link(p)})." for f, (p, _) in used.items() if one_file)
    body += ["", f"*Measured on {'; '.join(machines)}; {when}.{source} Reproduce:*", ""]
    body += [f"* `{command_of(d, 'python bench/')}`" for _, (_, d) in used.items()]
  return Section(None, "\n".join(body), files=[p for p, _ in used.values()])
