"""The pages: fills every `<!-- report: SELECTOR -->` ... `<!-- /report -->` block of
README.md and docs/*.md from bench/results/, and writes docs/results.md, the index of
every results file (with the files no page shows, rendered in full).

SELECTOR is either `summary:NAME` (a table of `reporting.summaries`) or comma-separated
globs relative to bench/results/ (`peer_whisper_wdec.json`, `whxs_*.json`,
`attempts/fastadasp_*.json`): each matching file is rendered by its kind
(`reporting.registry`). Everything outside the blocks is left byte for byte.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
from typing import Sequence

from reporting.common import ROOT, Context, load_json, rel
from reporting.registry import KINDS, kind_of
from reporting.summaries import SUMMARIES
from reporting.summary import render_summary

START, END = "<!-- report: ", "<!-- /report -->"
# Markers count only at the start of a line (prose may quote them).
BLOCK_RE = re.compile(r"^<!-- report: (?P<sel>[^>\n]*?) -->\n.*?^<!-- /report -->", re.S | re.M)
START_RE, END_RE = re.compile(r"^<!-- report: ", re.M), re.compile(r"^<!-- /report -->", re.M)
INDEX = pathlib.Path("docs") / "results.md"


def result_files(results_dir: pathlib.Path) -> list[pathlib.Path]:
  """Every results file under `results_dir` (subfolders included), sorted."""
  return sorted(p for p in pathlib.Path(results_dir).rglob("*.json") if p.is_file())


def select(selector: str, results_dir: pathlib.Path) -> list[pathlib.Path]:
  """The results files a block's comma-separated globs name, in the globs' order."""
  found: dict[pathlib.Path, None] = {}
  for pattern in (g.strip() for g in selector.split(",")):
    if pattern:
      found.update(dict.fromkeys(p for p in sorted(pathlib.Path(results_dir).glob(pattern))
                                 if p.is_file() and p.suffix == ".json"))
  return list(found)


def render_block(selector: str, ctx: Context) -> tuple[str, list[pathlib.Path]]:
  """The markdown of one block and the results files it shows."""
  if selector.startswith("summary:"):
    name = selector.split(":", 1)[1].strip()
    if name not in SUMMARIES:
      raise ValueError(f"unknown summary {name!r} (known: {', '.join(SUMMARIES)})")
    sec = render_summary(name, SUMMARIES[name], ctx)
    return sec.markdown(), sec.files
  return render_files(select(selector, ctx.results_dir), ctx,
                      empty=f"*Not measured yet: no results file matches `{selector}`.*\n")


def render_files(paths: Sequence[pathlib.Path], ctx: Context, empty: str = "",
                 level: int = 3) -> tuple[str, list[pathlib.Path]]:
  """Each file by its kind (a group kind's files together, where the first of them is)."""
  out, used, groups_done = [], [], set()
  for p in paths:
    kind = kind_of(p)
    if kind.group:
      if kind.name not in groups_done:
        groups_done.add(kind.name)
        members = [(q, load_json(q)) for q in paths if kind_of(q) is kind]
        members = [(q, d) for q, d in members if d is not None]
        out += [s.markdown(level) for s in kind.render(members, ctx)]
        used += [q for q, _ in members]
      continue
    data = load_json(p)
    if data is None:
      out.append(f"*`{ctx.name(p)}` is not valid JSON; skipped.*\n")
      continue
    out.append(kind.render(p, data, ctx).markdown(level))
    used.append(p)
  return ("\n".join(out) if out else empty), used


def update_page(text: str, ctx: Context, name: str = "page") -> tuple[str, list[pathlib.Path]]:
  """`text` with every report block rendered anew, and the results files they show."""
  starts, ends = len(START_RE.findall(text)), len(END_RE.findall(text))
  if starts != ends or len(BLOCK_RE.findall(text)) != ends:
    raise ValueError(f"{name}: unbalanced `{START}...-->` / `{END}` markers")
  used: list[pathlib.Path] = []

  def fill(m: re.Match) -> str:
    md, files = render_block(m["sel"].strip(), ctx)
    used.extend(files)
    return f"{START}{m['sel'].strip()} -->\n{md.rstrip()}\n{END}"
  return BLOCK_RE.sub(fill, text), used


def pages_of(root: pathlib.Path) -> list[pathlib.Path]:
  """README.md and every docs/*.md but the index."""
  pages = [root / "README.md"] if (root / "README.md").exists() else []
  return pages + sorted(p for p in (root / "docs").glob("*.md") if p != root / INDEX)


def build(results_dir, root=ROOT, draw: bool = True) -> dict[pathlib.Path, str]:
  """Every page's new text (the index page included), keyed by path."""
  root, results_dir = pathlib.Path(root).resolve(), pathlib.Path(results_dir).resolve()
  out: dict[pathlib.Path, str] = {}
  shown: dict[pathlib.Path, list[pathlib.Path]] = {}
  for page in pages_of(root):
    ctx = Context(results_dir, root, page.parent, draw=draw)
    out[page], used = update_page(page.read_text(), ctx, rel(page, root))
    for p in used:
      shown.setdefault(p.resolve(), []).append(page)
  out[root / INDEX] = render_index(results_dir, root, shown, draw)
  return out


def render_index(results_dir: pathlib.Path, root: pathlib.Path, shown: dict,
                 draw: bool = True) -> str:
  """docs/results.md: every results file, its kind and the pages that show it; then the
  files no page shows, rendered; then the kinds not measured yet."""
  ctx = Context(results_dir, root, (root / INDEX).parent, draw=draw)
  files = result_files(results_dir)
  rows = []
  for p in files:
    pages = shown.get(p.resolve(), [])
    where = ", ".join(f"[{rel(pg, root)}]({ctx.link(pg)})" for pg in dict.fromkeys(pages))
    rows.append(f"| [{ctx.name(p)}]({ctx.link(p)}) | {kind_of(p).name} | {where or 'below'} |")
  out = ["# Every result", "",
         "Generated by `python bench/report.py` from the JSON under `bench/results/`: each "
         "results file, what it measures and the page that shows it. The pages answer one "
         "question each: [models.md](models.md) (which model reads speech best, at what cost), "
         "[multi_token.md](multi_token.md) (what multi-token decoding buys), "
         "[fastadasp.md](fastadasp.md), [training.md](training.md) (throughput and bucketing), "
         "[negative_results.md](negative_results.md) (what did not work, and why).", "",
         "| results file | kind | shown on |", "|---|---|---|"] + rows
  rest = [p for p in files if p.resolve() not in shown]
  if rest:
    md, _ = render_files(rest, ctx, level=3)
    out += ["", "## Not shown on any page", "",
            "Rendered by their kind, with machine, date and command.", "", md.rstrip()]
  missing = [k for k in KINDS if not any(kind_of(p) is k for p in files)]
  if missing:
    out += ["", "## Not measured yet", ""] + [
        f"* {k.name}: no `{'` / `'.join(k.globs)}` (written by `{k.script}`)" for k in missing]
  return "\n".join(out).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description="Regenerates the results tables of README.md and "
                              "docs/*.md, and docs/results.md, from bench/results/*.json.")
  p.add_argument("--results_dir", default=str(ROOT / "bench" / "results"))
  p.add_argument("--root", default=str(ROOT), help="the folder of README.md and docs/")
  p.add_argument("--check", action="store_true",
                 help="write nothing; exit 1 if a page differs from what the results give")
  args = p.parse_args(argv)
  root = pathlib.Path(args.root).resolve()
  pages = build(args.results_dir, root, draw=not args.check)
  stale = [path for path, text in pages.items()
           if not path.exists() or path.read_text() != text]
  if args.check:
    for path in stale:
      print(f"{rel(path, root)}: out of date with bench/results/ (run python bench/report.py)",
            file=sys.stderr)
    return 1 if stale else 0
  for path in stale:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pages[path])
  print(f"{len(pages)} pages, {len(stale)} rewritten: "
        + (", ".join(rel(s, root) for s in stale) or "none"), file=sys.stderr)
  return 0

