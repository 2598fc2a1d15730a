"""bench/report.py's parts, one module per question the docs answer (models, multi_token,
fastadasp, training), plus the shared helpers (common), the file-kind table (registry),
the summary tables (summary: the engine, summaries: the data) and the pages (pages)."""
