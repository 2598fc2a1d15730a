"""bench/report.py: results JSON -> the tables of README.md and docs/*.md, idempotently.

The JSON below is fabricated test input in the formats the bench scripts write; it is
not a result.
"""
import importlib.util
import json
import pathlib
import sys

import pytest

_BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
_spec = importlib.util.spec_from_file_location("bench_report", _BENCH / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)  # puts bench/ on sys.path for the reporting package
assert str(_BENCH) in sys.path

from reporting import common, models, multi_token, pages, registry, summary, training  # noqa: E402

MACHINE = {"platform": "Linux-test", "cpu": "TestCPU", "cpu_count": 3, "jax": "9.9"}


def _write(path: pathlib.Path, obj) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))
  return path


def _ctx(tmp_path, page_dir=None, draw=True):
  return common.Context(tmp_path / "results", tmp_path, page_dir or tmp_path, draw=draw)


def _decode_row(model, strategy, wer, calls, decode_s):
  return {"model": model, "batch_size": 4, "strategy": strategy, "wer": wer,
          "calls_per_utt": calls, "tokens_per_call": 20.0 / calls, "decode_s": decode_s,
          "calls_reduction": 20.0 / calls, "speedup": 2.0 / decode_s, "rtfx": 7.0}


@pytest.fixture
def repo(tmp_path):
  """A repository root with results files, a README and a docs page asking for them."""
  res = tmp_path / "bench" / "results"
  _write(res / "decode_2030-01-02.json", {
      "machine": dict(MACHINE, date="2030-01-02T10:00:00+00:00",
                      argv=["bench/decode.py", "--workdirs", "runs/a,runs/b"]),
      "rows": [_decode_row("runs/a", "greedy", 0.125, 20.0, 2.0),
               _decode_row("runs/a", "verify", 0.125, 8.0, 1.0),
               _decode_row("random-latent-K4", "greedy", 0.2, 20.0, 2.0),
               _decode_row("random-latent-K4", "verify", 0.2, 10.0, 1.25)]})
  # Head type of a trained model comes from its workdir's config.json.
  _write(tmp_path / "runs" / "a" / "config.json",
         {"model": {"mtp": {"head_type": "independent", "num_heads": 4}}})
  rows = [{"method": m, "schedule": sc, "target": t, "flops_reduction": t + 0.01,
           "prefill_speedup": 1.0 + t, "wer": None}
          for m, sc in (("fastadasp_dense", "decay"), ("fastv", "-")) for t in (0.1, 0.3)]
  _write(res / "fastadasp.json", {
      "machine": dict(MACHINE, date="2030-02-03T00:00:00"), "trained": False,
      "args": {"config": "configs/small.py:K=4", "max_utts": 8, "out": "x.json"},
      "sets": {"kathleen_test": {"full": {"wer": None}, "rows": rows}}})
  _write(res / "data_padding.json", {
      "date": "2030-03-04T00:00:00", "command": "bench/data_padding.py --grid 8x4",
      "datasets": {"kathleen/train": {"utterances": 10, "hours": 0.5, "rows": [
          {"batching": "random", "num_buckets": 1, "audio_padding": 0.5371,
           "token_padding": 0.6},
          {"batching": "2d 8x4", "num_buckets": 17, "audio_padding": 0.0931,
           "token_padding": 0.23}]}}})
  # Missing machine/date fields: the file's date is used instead.
  _write(res / "train_throughput_cpu.json", {"arms": [{"batching": "2d", "steps_per_s": 0.625}]})
  # A format no kind knows: rendered generically.
  _write(res / "newbench.json", {"date": "2030-05-06", "rows": [{"objective": "x", "wer": 0.31}],
                                 "finetune": {"wer_before": 0.42, "wer_after": 0.4,
                                              "last_train_metrics": {"x": 1}}})
  _write(res / "attempts" / "mwer_try.json", {
      "machine": dict(MACHINE, date="2030-06-07T00:00:00", argv=["bench/mwer.py", "--x", "1"]),
      "search": [{"block_size": 4, "beam": 4, "nbest": 4, "utterances": 30, "calls_per_utt": 5.0,
                  "top1_wer": 0.3, "oracle_wer": 0.2, "model": "runs/m"}],
      "finetune": {"wer_before": 0.5, "wer_after": 0.45, "objective": "mwer",
                   "finetune_steps": 10, "finetune_lr": 1e-5, "lambda_ce": 0.1}})
  (res / "decode_broken.json").write_text("{not json")
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "speed.md").write_text(
      "# Speed\n\nIntro text.\n\n<!-- report: decode_*.json -->\nstale\n<!-- /report -->\n\n"
      "Between.\n\n<!-- report: fastadasp.json, data_padding.json, attempts/mwer_*.json -->\n"
      "<!-- /report -->\n\nOutro.\n")
  (tmp_path / "README.md").write_text("# Project\n\n<!-- report: train_throughput*.json -->\n"
                                      "<!-- /report -->\n\nThe end.\n")
  return tmp_path, res


def test_pages_fill_their_blocks_with_labelled_tables_and_plots(repo):
  root, res = repo
  out = pages.build(res, root)
  page = out[root / "docs" / "speed.md"]
  # Only the blocks change.
  assert page.startswith("# Speed\n\nIntro text.\n\n<!-- report: decode_*.json -->\n")
  assert "\n<!-- /report -->\n\nBetween.\n\n" in page and page.endswith("<!-- /report -->\n\nOutro.\n")
  assert "stale" not in page
  # Decode: head type x strategy with WER, calls, reduction, speedup; machine/date/command.
  assert "| independent (K=4) | runs/a | 4 | verify | 12.5% | 8 | 2.5 | 2.50× | 2.00× | 7 |" in page
  assert "| latent | random-latent-K4 | 4 | verify | 20.0% | 10 | 2 | 2.00× | 1.60× | 7 |" in page
  assert "TestCPU, 3 CPU cores, jax 9.9; 2030-01-02" in page
  assert "`python bench/decode.py --workdirs runs/a,runs/b`" in page
  # A broken file matching the glob is named, not fatal.
  assert "`decode_broken.json` is not valid JSON" in page
  # FastAdaSP from a random-init model: WER labelled, speedups in method x target cells.
  assert "random init (latency only)" in page
  assert "| fastadasp_dense | decay | – / 1.10× | – / 1.30× |" in page
  assert "−10% FLOPs" in page and "2030-02-03" in page
  assert "--config configs/small.py:K=4 --max_utts 8" in page and "x.json" not in page
  # Padding, the command from the JSON's `command`; a results subfolder's file.
  assert "| 2d 8x4 | 17 | – | 9.3% | 23.0% |" in page
  assert "`python bench/data_padding.py --grid 8x4`" in page
  assert "MWER (attempts/mwer_try.json)" in page and "| mwer | 10 | 1e-05 | 0.1 |" in page
  assert "| 50.00% | 45.00% | -10.0% |" in page
  # Plots are written, and linked relative to the page.
  for name in ("decode_2030-01-02.png", "fastadasp.png", "data_padding.png"):
    png = res / "plots" / name
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"](../bench/results/plots/{name})" in page
  # README: missing machine/date still rendered, labelled from the file.
  readme = out[root / "README.md"]
  assert "| 2d | – | – | 0.625 |" in readme and "machine unknown" in readme
  assert "(file date)" in readme and readme.endswith("<!-- /report -->\n\nThe end.\n")


def test_index_lists_every_file_and_renders_the_unplaced_ones(repo):
  root, res = repo
  index = pages.build(res, root)[root / "docs" / "results.md"]
  assert index.startswith("# Every result")
  assert ("| [decode_2030-01-02.json](../bench/results/decode_2030-01-02.json) | decoding "
          "strategies | [docs/speed.md](speed.md) |") in index
  assert "| [train_throughput_cpu.json](../bench/results/train_throughput_cpu.json) | training " \
         "throughput | [README.md](../README.md) |" in index
  # No page names newbench.json: it is rendered below, generically.
  assert "| [newbench.json](../bench/results/newbench.json) | other | below |" in index
  rest = index.split("## Not shown on any page")[1]
  assert "### newbench (newbench.json)" in rest
  assert "| objective | wer |" in rest and "| x | 0.31 |" in rest
  assert "**finetune**" in rest and "| wer_after | 0.4 |" in rest
  # Kinds with no file at all are listed as not measured yet.
  assert "* Pallas kernels: no `kernels*.json`" in index


def test_write_then_check_is_idempotent(repo):
  root, res = repo
  argv = ["--results_dir", str(res), "--root", str(root)]
  assert report.main(argv + ["--check"]) == 1  # blocks not filled yet
  assert report.main(argv) == 0
  texts = {p: p.read_text() for p in (root / "README.md", root / "docs" / "speed.md",
                                       root / "docs" / "results.md")}
  assert report.main(argv + ["--check"]) == 0
  assert report.main(argv) == 0
  assert all(p.read_text() == t for p, t in texts.items())
  # A new results file of a known kind needs no code: the index picks it up (stale
  # until the report runs again), and a page's glob that matches it shows it.
  _write(res / "decode_2030-09-09.json", {"machine": MACHINE, "rows": [
      _decode_row("runs/b", "greedy", 0.3, 20.0, 2.0)]})
  assert report.main(argv + ["--check"]) == 1
  assert report.main(argv) == 0
  assert "| runs/b | runs/b | 4 | greedy | 30.0% |" in (root / "docs" / "speed.md").read_text()


def test_unbalanced_markers_are_refused(tmp_path):
  ctx = _ctx(tmp_path)
  with pytest.raises(ValueError, match="unbalanced"):
    pages.update_page("x\n<!-- report: a.json -->\nno end\n", ctx)
  # Quoted in prose (not at a line start) a marker is text, not a block.
  text = "Write `<!-- report: GLOB -->` ... `<!-- /report -->` in a page.\n"
  assert pages.update_page(text, ctx) == (text, [])


def test_empty_selector_and_unknown_summary(tmp_path):
  ctx = _ctx(tmp_path)
  md, used = pages.render_block("nothing_*.json", ctx)
  assert "Not measured yet: no results file matches `nothing_*.json`" in md and used == []
  with pytest.raises(ValueError, match="unknown summary"):
    pages.render_block("summary:nope", ctx)


def test_kinds_by_file_name():
  assert registry.kind_of("x/attempts/peer_whisper_new.json").render is models.render_race
  assert registry.kind_of("whxs_latent_k4_b16.json").group
  assert registry.kind_of("mwer_abc.json").render is models.render_mwer
  assert registry.kind_of("zzz.json") is registry.GENERIC


def test_summary_picks_rows_across_files_and_holds_places(tmp_path):
  res = tmp_path / "results"
  _write(res / "a.json", {"machine": MACHINE, "date": "2030-01-02", "command": "python bench/a.py",
                          "rows": [{"test_set": "k", "strategy": "greedy", "wer": 0.25},
                                   {"test_set": "k", "strategy": "verify", "wer": 0.25,
                                    "calls_reduction": 1.5}]})
  _write(res / "b.json", {"machine": MACHINE, "date": "2030-01-05", "command": "python bench/b.py",
                          "finetune": {"wer_before": 0.5, "wer_after": 0.4}})
  spec = summary.Summary(
      columns=(summary.Col("WER", "wer", "pct", (("test_set", "k"),)),
               summary.Col("verify", "calls_reduction", "x", (("strategy", "verify"),)),
               summary.Col("after", "finetune.wer_after", "pct"),
               summary.Col("relative", "finetune.wer_after / finetune.wer_before", "rel")),
      rows=(summary.Row("model A", "a.json", (("strategy", "greedy"),)),
            summary.Row("model B", "b.json"),
            summary.Row("model C", note="see elsewhere"),
            summary.Row("model D", "missing.json")),
      intro="Intro.")
  sec = summary.render_summary("t", spec, _ctx(tmp_path))
  assert sec.body.startswith("Intro.\n\n|  | WER | verify | after | relative | results file |")
  assert "| model A | 25.0% | 1.50× | – | – | [a.json](results/a.json) |" in sec.body
  assert "| model B | – | – | 40.0% | -20.0% | [b.json](results/b.json) |" in sec.body
  assert "| model C | see elsewhere |" in sec.body and "| model D | not measured yet |" in sec.body
  assert "TestCPU, 3 CPU cores, jax 9.9; 2030-01-02 to 2030-01-05" in sec.body
  assert "* `python bench/a.py`" in sec.body and "* `python bench/b.py`" in sec.body
  # One file: named in the caption instead of a column.
  one = summary.Summary(columns=spec.columns[:1], rows=spec.rows[:1])
  body = summary.render_summary("one", one, _ctx(tmp_path)).body
  assert "results file" not in body and "From [a.json](results/a.json)." in body


def test_the_repository_summaries_name_existing_files():
  from reporting.summaries import SUMMARIES
  results = _BENCH / "results"
  for name, spec in SUMMARIES.items():
    for row in spec.rows:
      assert row.file is None or (results / row.file).exists(), (name, row.file)


def test_the_repository_docs_are_up_to_date():
  """README.md and docs/ show what bench/results/ holds: after adding or changing a results
  file (or a page's report block), run `python bench/report.py`."""
  root = _BENCH.parent
  stale = [str(p.relative_to(root)) for p, text in pages.build(_BENCH / "results", root,
                                                                 draw=False).items()
           if not p.exists() or p.read_text() != text]
  assert not stale, f"out of date, run python bench/report.py: {stale}"


def test_recipe_eval_ratios_leave_encoder_only_rows_without_a_call_reduction():
  spec = importlib.util.spec_from_file_location("bench_recipe_eval", _BENCH / "recipe_eval.py")
  recipe = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipe)
  rows = [dict(test_set="a", strategy="greedy", calls_per_utt=20.0, decode_s=2.0),
          dict(test_set="a", strategy="verify", calls_per_utt=8.0, decode_s=1.0),
          dict(test_set="a", strategy="ctc", calls_per_utt=0.0, decode_s=0.5)]
  recipe.add_ratios(rows)
  assert rows[1]["calls_reduction"] == pytest.approx(2.5)
  assert rows[1]["speedup"] == pytest.approx(2.0)
  assert rows[2]["calls_reduction"] is None
  assert rows[2]["speedup"] == pytest.approx(4.0)
  assert not any("calls_reduction_ceiling" in r for r in rows)  # no per-utterance calls
  # With greedy's calls per utterance (9 and 5) and K=4: exact strategies get the
  # every-draft-accepted bound, 1 + ceil(8/4) = 3 and 1 + ceil(4/4) = 2 calls.
  rows = [dict(test_set="a", strategy=s, calls_per_utt=c, decode_s=1.0)
          for s, c in (("greedy", 7.0), ("verify:draft_vocab=8", 4.0), ("tree", 3.5),
                       ("threshold", 2.0))]
  recipe.add_ratios(rows, {"a": [9, 5]}, num_heads=4)
  assert [r.get("calls_reduction_ceiling") for r in rows] == [None, 2.8, 2.8, None]


def test_capacity_section_shows_arms_batch_sizes_and_ratios(tmp_path):
  data = {"config": "configs/demo.py", "num_utts": 8, "memory_budget_gb": 0.5,
          "fixed_batch_size": 3, "envelope_shape": [160000, 80],
          "searched_batch_sizes": {"160000x80": 3, "16000x16": 40},
          "arms": [{"arm": "searched/2d", "mean_batch_size": 12.5, "audio_s_per_s": 300.0},
                   {"arm": "fixed/2d", "mean_batch_size": 3.0, "audio_s_per_s": 100.0}],
          "audio_s_per_s_ratios": {"searched_over_fixed_2d": 3.0},
          "machine": dict(MACHINE, date="2030-01-02T00:00:00")}
  sec = training.render_capacity(_write(tmp_path / "results" / "capacity.json", data), data,
                                 _ctx(tmp_path))
  assert "16000x16: 40" in sec.body and "| searched/2d |" in sec.body
  assert "searched / fixed/2d **3.00×**" in sec.body
  assert "--config configs/demo.py" in sec.body


def test_feature_cache_throughput_shows_the_ratio(tmp_path):
  data = {"compare": "feature_cache", "cache_build_s": 11.0,
          "arms": [{"batching": "feature_cache", "audio_s_per_s": 200.0},
                   {"batching": "encoder_in_step", "audio_s_per_s": 100.0}]}
  sec = training.render_train_throughput(tmp_path / "t.json", data, _ctx(tmp_path))
  assert "Feature cache / encoder in every step" in sec.body and "**2.00×**" in sec.body


def test_decode_section_shows_loop_speedup_when_measured(tmp_path):
  rows = [dict(_decode_row("runs/a", "greedy", 0.1, 20.0, 2.0), loop_speedup=1.0),
          dict(_decode_row("runs/a", "verify", 0.1, 8.0, 1.5), loop_speedup=1.6)]
  data = {"machine": dict(MACHINE, date="2030-01-02T00:00:00"), "rows": rows}
  sec = multi_token.render_decode(_write(tmp_path / "results" / "decode_x.json", data), data,
                                  _ctx(tmp_path, draw=False))
  assert "| loop speedup |" in sec.body and "| 1.60× |" in sec.body
  assert "](results/plots/decode_x.png)" in sec.body
  assert not (tmp_path / "results" / "plots").exists()  # draw=False: only the link


def test_step_cost_section_shows_break_even(tmp_path):
  data = {"machine": dict(MACHINE, date="2030-01-02T00:00:00"),
          "rows": [{"config": "configs/demo.py", "batch": 1, "decoder_params": 10,
                    "greedy_step_ms": 0.5, "verify_step_ms": 1.0,
                    "break_even_reduction": 2.0}]}
  sec = multi_token.render_step_cost(tmp_path / "step_cost_cpu.json", data, _ctx(tmp_path))
  assert "| configs/demo.py | 1 |" in sec.body and "| 2.00× |" in sec.body


def test_step_cost_section_has_a_column_per_strategy(tmp_path):
  data = {"machine": dict(MACHINE, date="2030-01-02T00:00:00"),
          "strategies": ["greedy", "verify", "tree"],
          "rows": [{"config": "configs/demo.py", "batch": 16, "decoder_params": 10,
                    "greedy_step_ms": 0.5, "verify_step_ms": 0.6, "tree_step_ms": 0.9,
                    "verify_ratio": 1.2, "tree_ratio": 1.8,
                    "call_ms_by_width": {"1": 1.0, "4": 2.5}}]}
  sec = multi_token.render_step_cost(tmp_path / "step_cost_cpu.json", data, _ctx(tmp_path))
  assert "| tree / greedy |" in sec.body and "| 1.20× | 1.80× |" in sec.body
  assert "| configs/demo.py | 16 | 1.000 (1.00×) | 2.500 (2.50×) |" in sec.body


def test_unembed_layout_section_shows_speedup_and_passes(tmp_path):
  data = {"machine": dict(MACHINE, date="2030-01-02T00:00:00"), "vocab": 100, "d_model": 8,
          "rows": [{"rows": 4, "xEt_ms": 6.0, "xW_ms": 4.0, "layout_speedup": 1.5,
                    "xW_argmax_ms": 4.5, "xW_two_reductions_argmax_ms": 4.1},
                   {"rows": 16, "xEt_ms": 8.0, "xW_ms": 5.0, "layout_speedup": 1.6}],
          "passes": [{"rows": 16, "one_pass_ms": 5.0, "two_passes_ms": 8.0}]}
  sec = multi_token.render_unembed_layout(tmp_path / "unembed_layout_cpu.json", data,
                                          _ctx(tmp_path))
  assert "| 4 | 6 | 4 | 1.50× | 4.5 | 4.1 |" in sec.body
  assert "| 16 | 8 | 5 | 1.60× | – | – |" in sec.body
  assert "M=16: 5 vs 8 ms" in sec.body


def test_race_section(tmp_path):
  _write(tmp_path / "results" / "peer_whisper.json", {
      "machine": MACHINE, "date": "2030-01-02T10:00:00+00:00",
      "command": "python bench/peer_whisper.py --workdirs runs/wt/k4",
      "rows": [{"test_set": "kathleen_test", "system": "faster-whisper tiny.en float32 beam 1",
                "utterances": 3, "skipped": 0, "wer": 0.031, "rtfx": 4.5,
                "latency_p50_s": 0.6, "latency_p90_s": 0.8, "rtfx_vs_peer_fastest_greedy": 1.0},
               {"test_set": "kathleen_test", "system": "ours:k4:verify", "utterances": 3,
                "skipped": 0, "wer": 0.5, "calls_per_utt": 6.0, "rtfx": 45.0,
                "latency_p50_s": 0.06, "latency_p90_s": 0.09,
                "rtfx_vs_peer_fastest_greedy": 10.0}]})
  md, used = pages.render_block("peer_whisper*.json", _ctx(tmp_path))
  assert md.startswith("### Race against faster-whisper (peer_whisper.json)")
  assert "| kathleen_test | ours:k4:verify | 3 | 0 | 50.0% | 6 | 45 |" in md
  assert "10.00×" in md and "--workdirs runs/wt/k4" in md and len(used) == 1


def test_commands_lose_machine_paths():
  cmd = common.portable(f"python bench/x.py --c {common.ROOT}/configs/small.py "
                        "--m /mnt/disk/shared/data/kathleen/test.jsonl --n ../shared/data/a "
                        "--s /tmp/synth/train.jsonl")
  assert cmd == ("python bench/x.py --c configs/small.py --m ../shared/data/kathleen/test.jsonl "
                 "--n ../shared/data/a --s runs/synth/train.jsonl")


def _hxs_row(test_set, strategy, wer, calls, greedy_calls=20.0, speedup=None):
  return {"test_set": test_set, "strategy": strategy, "wer": wer, "calls_per_utt": calls,
          "calls_reduction": greedy_calls / calls, "tokens_per_call": 1.0,
          "acceptance_per_head": [0.9, 0.5], "speedup": speedup, "rtfx": 50.0}


def test_heads_x_strategies_groups_files_and_finds_the_best_exact_reduction(tmp_path):
  res = tmp_path / "results"
  for label, verify_calls in (("latent_k2", 10.0), ("dec2_latent_k2", 16.0)):
    _write(res / f"hxs_{label}_b16.json", {
        "machine": MACHINE, "date": "2030-01-02T10:00:00+00:00",
        "command": f"python bench/recipe_eval.py --workdir runs/{label}",
        "rows": [_hxs_row("kathleen_test", "greedy", 0.5, 20.0),
                 dict(_hxs_row("kathleen_test", "verify", 0.5, verify_calls),
                      calls_reduction_ceiling=2.5),
                 # fewer calls but a worse WER: not counted as the best exact reduction
                 _hxs_row("kathleen_test", "threshold:threshold=0.6", 0.6, 5.0),
                 _hxs_row("fsdd_test", "verify", 0.25, 3.0)]})
  _write(res / "hxs_latent_k2_speed_b1.json", {
      "machine": MACHINE, "rows": [_hxs_row("kathleen_test", "verify", 0.5, 10.0,
                                            speedup=1.5)]})
  # Whisper's-decoder runs (prefix whxs_) get a table of their own; a run timed alone on
  # the machine gives the batch-16 speed when there is no speed_b16 file.
  _write(res / "whxs_independent_k4_b16.json", {
      "machine": MACHINE, "timing": "alone",
      "rows": [_hxs_row("kathleen_test", "greedy", 0.05, 12.0, 12.0, speedup=1.0),
               _hxs_row("kathleen_test", "tree", 0.05, 8.0, 12.0, speedup=0.8)]})
  md, used = pages.render_block("hxs_*.json,whxs_*.json", _ctx(tmp_path))
  assert len(used) == 4
  hxs, whxs = md.split("### Heads × strategies")[1:]
  assert "Whisper's own decoder" in whxs and "latent_k2" not in whxs
  assert "**1.50×** (independent_k4, tree)" in whxs and "independent" not in hxs
  assert "| independent_k4 | tree | 5.0% |" in whxs and "| 0.80× † |" in whxs
  # the ceiling is explained where a row has one
  assert "*ceiling*" in hxs and "*ceiling*" not in whxs
  assert (res / "plots" / "whxs_calls_vs_wer.png").stat().st_size > 0
  assert ("| latent_k2 | verify | 50.0% | 25.0% | – | 10 | 2.00× | 2.50× | 1 | 0.90/0.50 | 50 | "
          "1.50× | – |") in hxs
  assert ("**2.00×** (latent_k2, verify); with every draft accepted, this model's K and "
          "these transcripts' lengths allow at most 2.50×.") in hxs
  # the depth table holds the dec2 model and the recipe's own decoder, greedy/verify/tree
  depth = hxs.split("MTP vs a thinner decoder")[1]
  assert "| dec2_latent_k2 | verify | 50.0% |" in depth and "| latent_k2 | greedy |" in depth
  assert "threshold" not in depth
  assert "--workdir runs/dec2_latent_k2" in hxs


def test_fastadasp_trained_shows_relative_wer_sparse_ranking_and_decode_speedup(tmp_path):
  rows = [{"method": "fastadasp_dense", "schedule": "decay", "target": t, "flops_reduction": t,
           "prefill_speedup": 1.5, "wer": w, "decode_speedup_vs_full": 1.2}
          for t, w in ((0.3, 0.41), (0.4, 0.48))]
  rows.append({"method": "fastadasp_sparse", "schedule": "-", "target": 0.3,
               "flops_reduction": 0.3, "prefill_speedup": 1.4, "wer": 0.45})
  _write(tmp_path / "results" / "fastadasp_x.json", {
      "machine": dict(MACHINE, date="2030-02-03T00:00:00"), "trained": True,
      "args": {"workdir": "runs/x"},
      "sets": {"kathleen_test": {
          "full": {"wer": 0.40}, "rows": rows,
          "sparse_calibration": {"layer": 2, "calib_target": 0.3, "ranking": [2, 0, 1],
                                 "te_losses": {"0": -3.0, "1": -2.0, "2": -4.0},
                                 "layer_wer": {"2": 0.45, "0": 0.46, "1": 0.5}}}}})
  md, _ = pages.render_block("fastadasp_*.json", _ctx(tmp_path))
  # 0.41/0.40 = +2.5%; 0.48/0.40 = +20%.
  assert "| fastadasp_dense | decay | 41.0% (+2.5%) / 1.50× / 1.20× | 48.0% (+20.0%) / 1.50× / 1.20× |" in md
  assert "layer 2 < layer 0 < layer 1; selected: layer 2." in md
  assert "layer 2 (selected) 45.0%, layer 0 46.0%, layer 1 50.0%" in md
