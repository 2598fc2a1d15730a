"""Regenerates every results table of README.md and docs/*.md from bench/results/*.json.

  python bench/report.py           # rewrite the pages whose tables changed (and the plots)
  python bench/report.py --check   # write nothing; exit 1 if a page is out of date

A page asks for tables with a block

  <!-- report: SELECTOR -->
  (generated; replaced on every run)
  <!-- /report -->

where SELECTOR is comma-separated globs relative to bench/results/ (each matching file is
rendered by its kind: bench/reporting/registry.py maps file-name patterns to renderers)
or `summary:NAME` (a table picking rows from several files: bench/reporting/summaries.py).
Every table names the machine and date it was measured on and the command that
reproduces it (from the JSON's machine/date/command/argv/args fields). PNG plots go to
bench/results/plots/. docs/results.md is written whole: every results file, its kind and
the page that shows it, then the files no page shows, rendered in full. Re-running with
the same JSON gives the same files.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from reporting.pages import build, main  # noqa: E402  pylint: disable=wrong-import-position

__all__ = ["build", "main"]

if __name__ == "__main__":
  sys.exit(main())
