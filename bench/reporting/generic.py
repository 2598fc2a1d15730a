"""Any results file no other renderer claims: its lists of flat records as tables."""
from __future__ import annotations

import pathlib
import re

from reporting.common import RANDOM_LABEL, Context, Section, caption, fmt, is_random, md_table


def _scalar(v) -> bool:
  return v is None or isinstance(v, (str, int, float, bool))


def render_generic(path, data, ctx: Context) -> Section:
  """Every list of flat records (up to 10 columns) and every flat record in the JSON."""
  stem = pathlib.Path(path).stem
  body = [caption(data, path, f"python bench/{re.sub(r'_[0-9-]+$', '', stem)}.py")]
  if is_random(data):
    body.append(f"\nModel: {RANDOM_LABEL}.")
  found = False
  for key, val in data.items():
    if isinstance(val, list) and val and all(isinstance(r, dict) for r in val):
      cols = [c for c in dict.fromkeys(k for r in val for k in r) if all(
          _scalar(r.get(c)) or (isinstance(r.get(c), list) and all(map(_scalar, r[c])))
          for r in val)][:10]
      body += ["", f"**{key}**", "", md_table(cols, [[fmt(r.get(c)) for c in cols] for r in val])]
      found = True
    elif isinstance(val, dict) and key != "machine" and any(_scalar(v) for v in val.values()):
      body += ["", f"**{key}**", "", md_table(["field", "value"], [
          [k, fmt(v)] for k, v in val.items() if _scalar(v)])]
      found = True
  if not found:
    flat = {k: v for k, v in data.items() if _scalar(v) and k not in ("command", "date")}
    body += ["", md_table(["field", "value"], [[k, fmt(v)] for k, v in flat.items()])]
  return Section(f"{stem} ({ctx.name(path)})", "\n".join(body))
