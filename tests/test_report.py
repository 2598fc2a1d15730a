"""bench/report.py renders benchmark JSON into tables/plots and rewrites the README idempotently.

The JSON below is fabricated test input in the formats the bench scripts write; it is
not a result.
"""
import importlib.util
import json
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "report.py"
_spec = importlib.util.spec_from_file_location("bench_report", _PATH)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)

MACHINE = {"platform": "Linux-test", "cpu": "TestCPU", "cpu_count": 3, "jax": "9.9"}


def _write(path: pathlib.Path, obj) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))
  return path


def _decode_row(model, strategy, wer, calls, decode_s):
  return {"model": model, "batch_size": 4, "strategy": strategy, "wer": wer,
          "calls_per_utt": calls, "tokens_per_call": 20.0 / calls, "decode_s": decode_s,
          "calls_reduction": 20.0 / calls, "speedup": 2.0 / decode_s, "rtfx": 7.0}


@pytest.fixture
def results(tmp_path):
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
  _write(res / "mwer.json", {"date": "2030-05-06", "rows": [{"objective": "mwer", "wer": 0.31}],
                              "finetune": {"wer_before": 0.42, "wer_after": 0.4,
                                           "last_train_metrics": {"x": 1}}})
  (res / "broken.json").write_text("{not json")
  demo = _write(tmp_path / "runs" / "demo" / "demo_results.json", {
      "rows": [{"strategy": "greedy", "wer": 0.05, "calls_per_utt": 12.0, "calls_reduction": 1.0,
                "speedup": 1.0}], "args": {"out": "runs/demo", "num": 3000}})
  return tmp_path, res, demo


def test_renders_tables_plots_labels_and_notes(results):
  root, res, demo = results
  sections, notes = report.build_sections(res, demo, res / "plots", root)
  md = report.render_markdown(sections, notes)
  # Decode: head type x strategy with WER, calls, reduction, speedup; machine/date/command.
  assert "| independent (K=4) | runs/a | 4 | verify | 12.5% | 8 | 2.5 | 2.50× | 2.00× | 7 |" in md
  assert "| latent | random-latent-K4 | 4 | verify | 20.0% | 10 | 2 | 2.00× | 1.60× | 7 |" in md
  assert "TestCPU, 3 CPU cores, jax 9.9; 2030-01-02" in md
  assert "`python bench/decode.py --workdirs runs/a,runs/b`" in md
  # FastAdaSP from a random-init model: WER labelled, speedups in method x target cells.
  assert "random init (latency only)" in md
  assert "| fastadasp_dense | decay | – / 1.10× | – / 1.30× |" in md
  assert "−10% FLOPs" in md and "2030-02-03" in md
  assert "--config configs/small.py:K=4 --max_utts 8" in md and "x.json" not in md
  # Padding and the command taken from the JSON's `command`.
  assert "| 2d 8x4 | 17 | – | 9.3% | 23.0% |" in md
  assert "`python bench/data_padding.py --grid 8x4`" in md
  # Missing machine/date: still rendered, labelled from the file.
  assert "| 2d | – | – | 0.625 |" in md and "machine unknown" in md and "(file date)" in md
  # Demo, an unknown benchmark as a generic table, skipped files as notes.
  assert "| greedy | – | 5.0% | 12 |" in md and "--num 3000" in md
  assert "| mwer | 0.31 |" in md
  assert "**finetune**" in md and "| wer_after | 0.4 |" in md
  assert any("kernels.json" in n for n in notes)
  assert any("broken.json" in n for n in notes)
  for name in ("decode_2030-01-02.png", "fastadasp.png", "data_padding.png"):
    png = res / "plots" / name
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"](bench/results/plots/{name})" in md


def test_readme_rewrite_is_idempotent_and_touches_only_the_markers(results):
  root, res, demo = results
  readme = root / "README.md"
  before = "# Project\n\nSome text.\n\n## Other\n\n| a | b |\n"
  readme.write_text(before)
  argv = ["--results_dir", str(res), "--demo_json", str(demo), "--readme", str(readme),
          "--write_readme"]
  assert report.main(argv) == 0
  first = readme.read_text()
  assert first.startswith(before)
  assert first.count(report.START) == 1 and first.count(report.END) == 1
  # The README keeps the headline and a link; every table goes to docs/results.md.
  assert "[docs/results.md](docs/results.md)" in first
  assert "| independent (K=4) | runs/a | 4 | verify | 12.5% |" not in first
  docs = (root / "docs" / "results.md").read_text()
  assert docs.startswith("# Results")
  assert "| independent (K=4) | runs/a | 4 | verify | 12.5% |" in docs
  assert "](../bench/results/plots/" in docs and "](bench/results/plots/" not in docs
  assert report.main(argv) == 0
  assert readme.read_text() == first and (root / "docs" / "results.md").read_text() == docs
  # Text around existing markers is kept byte for byte; the old section is replaced.
  head, tail = "Intro\n", "\n## After\ntrailing text\n"
  readme.write_text(f"{head}{report.START}\nstale table\n{report.END}{tail}")
  assert report.main(argv) == 0
  text = readme.read_text()
  assert text.startswith(head + report.START) and text.endswith(report.END + tail)
  assert "stale table" not in text and "docs/results.md" in text


def test_replace_rejects_a_lone_marker():
  with pytest.raises(ValueError, match="only one"):
    report.replace_between_markers(f"x\n{report.START}\n", "body")


def test_recipe_eval_ratios_leave_encoder_only_rows_without_a_call_reduction():
  path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "recipe_eval.py"
  spec = importlib.util.spec_from_file_location("bench_recipe_eval", path)
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
  sec = report.render_capacity(_write(tmp_path / "capacity.json", data), data, tmp_path,
                               tmp_path)
  assert "16000x16: 40" in sec.body and "| searched/2d |" in sec.body
  assert "searched / fixed/2d **3.00×**" in sec.body
  assert "--config configs/demo.py" in sec.body


def test_decode_section_shows_loop_speedup_when_measured(tmp_path):
  rows = [dict(_decode_row("runs/a", "greedy", 0.1, 20.0, 2.0), loop_speedup=1.0),
          dict(_decode_row("runs/a", "verify", 0.1, 8.0, 1.5), loop_speedup=1.6)]
  data = {"machine": dict(MACHINE, date="2030-01-02T00:00:00"), "rows": rows}
  sec = report.render_decode(_write(tmp_path / "decode_x.json", data), data, tmp_path, tmp_path)
  assert "| loop speedup |" in sec.body and "| 1.60× |" in sec.body


def test_step_cost_section_shows_break_even(tmp_path):
  data = {"machine": dict(MACHINE, date="2030-01-02T00:00:00"),
          "rows": [{"config": "configs/demo.py", "batch": 1, "decoder_params": 10,
                    "greedy_step_ms": 0.5, "verify_step_ms": 1.0,
                    "break_even_reduction": 2.0}]}
  sec = report.render_step_cost(_write(tmp_path / "step_cost_cpu.json", data), data, tmp_path,
                                tmp_path)
  assert "| configs/demo.py | 1 |" in sec.body and "| 2.00× |" in sec.body


def test_step_cost_section_has_a_column_per_strategy(tmp_path):
  data = {"machine": dict(MACHINE, date="2030-01-02T00:00:00"),
          "strategies": ["greedy", "verify", "tree"],
          "rows": [{"config": "configs/demo.py", "batch": 16, "decoder_params": 10,
                    "greedy_step_ms": 0.5, "verify_step_ms": 0.6, "tree_step_ms": 0.9,
                    "verify_ratio": 1.2, "tree_ratio": 1.8}]}
  sec = report.render_step_cost(_write(tmp_path / "step_cost_cpu.json", data), data, tmp_path,
                                tmp_path)
  assert "| tree / greedy |" in sec.body and "| 1.20× | 1.80× |" in sec.body


def test_unembed_layout_section_shows_speedup_and_passes(tmp_path):
  data = {"machine": dict(MACHINE, date="2030-01-02T00:00:00"), "vocab": 100, "d_model": 8,
          "rows": [{"rows": 4, "xEt_ms": 6.0, "xW_ms": 4.0, "layout_speedup": 1.5,
                    "xW_argmax_ms": 4.5, "xW_two_reductions_argmax_ms": 4.1},
                   {"rows": 16, "xEt_ms": 8.0, "xW_ms": 5.0, "layout_speedup": 1.6}],
          "passes": [{"rows": 16, "one_pass_ms": 5.0, "two_passes_ms": 8.0}]}
  sec = report.render_unembed_layout(_write(tmp_path / "unembed_layout_cpu.json", data), data,
                                     tmp_path, tmp_path)
  assert "| 4 | 6 | 4 | 1.50× | 4.5 | 4.1 |" in sec.body
  assert "| 16 | 8 | 5 | 1.60× | – | – |" in sec.body
  assert "M=16: 5 vs 8 ms" in sec.body


def test_peer_whisper_section(tmp_path):
  res = tmp_path / "results"
  _write(res / "peer_whisper.json", {
      "machine": MACHINE, "date": "2030-01-02T10:00:00+00:00",
      "command": "python bench/peer_whisper.py --workdirs runs/wt/k4",
      "rows": [{"test_set": "kathleen_test", "system": "faster-whisper tiny.en float32 beam 1",
                "utterances": 3, "skipped": 0, "wer": 0.031, "rtfx": 4.5,
                "latency_p50_s": 0.6, "latency_p90_s": 0.8, "rtfx_vs_peer_fastest_greedy": 1.0},
               {"test_set": "kathleen_test", "system": "ours:k4:verify", "utterances": 3,
                "skipped": 0, "wer": 0.5, "calls_per_utt": 6.0, "rtfx": 45.0,
                "latency_p50_s": 0.06, "latency_p90_s": 0.09,
                "rtfx_vs_peer_fastest_greedy": 10.0}]})
  sections, _ = report.build_sections(res, None, tmp_path / "plots", root=tmp_path)
  sec = [s for s in sections if s.title.startswith("Race against faster-whisper")][0]
  assert "| kathleen_test | ours:k4:verify | 3 | 0 | 50.0% | 6 | 45 |" in sec.body
  assert "10.00×" in sec.body and "--workdirs runs/wt/k4" in sec.body


def test_readme_headline_is_the_race_table(tmp_path):
  res = tmp_path / "results"
  _write(res / "peer_whisper.json", {
      "machine": MACHINE, "date": "2030-01-02T10:00:00+00:00",
      "rows": [{"test_set": "kathleen_test", "system": "faster-whisper tiny.en float32 beam 1",
                "utterances": 3, "skipped": 0, "wer": 0.031, "rtfx": 4.5},
               {"test_set": "kathleen_test", "system": "ours greedy", "utterances": 3,
                "skipped": 0, "wer": 0.6, "rtfx": 45.0, "rtfx_vs_peer_fastest_greedy": 10.0}]})
  text = report.render_headline(res, tmp_path, "docs/results.md")
  assert text.startswith("## Results") and "Headline: Race against faster-whisper" in text
  assert "| kathleen_test | ours greedy | 3 | 0 | 60.0% |" in text
  assert "[docs/results.md](docs/results.md)" in text
  assert "No headline yet" in report.render_headline(tmp_path / "empty", tmp_path, "d.md")
  # The best model's race, when there is one, comes before any other race.
  _write(res / "peer_whisper_wdec.json", {
      "machine": MACHINE, "date": "2030-01-03T10:00:00+00:00",
      "rows": [{"test_set": "kathleen_test", "system": "ours:wdec:greedy", "utterances": 3,
                "skipped": 0, "wer": 0.05, "rtfx": 40.0}]})
  text = report.render_headline(res, tmp_path, "docs/results.md")
  assert "ours:wdec:greedy" in text and "ours greedy" not in text


def test_commands_lose_machine_paths():
  cmd = report.portable(f"python bench/x.py --c {report.ROOT}/configs/small.py "
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
  # Whisper's-decoder runs (prefix whxs_) get a table of their own.
  _write(res / "whxs_independent_k4_b16.json", {
      "machine": MACHINE, "rows": [_hxs_row("kathleen_test", "greedy", 0.05, 12.0, 12.0),
                                   _hxs_row("kathleen_test", "tree", 0.05, 8.0, 12.0)]})
  sections, _ = report.build_sections(res, None, tmp_path / "plots", root=tmp_path)
  sec = [s for s in sections if s.title.startswith("Heads × strategies")]
  assert len(sec) == 2 and not any("hxs_" in s.title for s in sections)
  assert "Whisper's own decoder" in sec[1].title and "latent_k2" not in sec[1].body
  assert "**1.50×** (independent_k4, tree)" in sec[1].body and "independent" not in sec[0].body
  # the ceiling is explained where a row has one
  assert "*ceiling*" in sec[0].body and "*ceiling*" not in sec[1].body
  assert [pathlib.Path(p).name for p in sec[1].plots] == ["whxs_calls_vs_wer.png"]
  assert pathlib.Path(sec[1].plots[0]).stat().st_size > 0
  body = sec[0].body
  assert ("| latent_k2 | verify | 50.0% | 25.0% | – | 10 | 2.00× | 2.50× | 1 | 0.90/0.50 | 50 | "
          "1.50× | – |") in body
  assert ("**2.00×** (latent_k2, verify); the goal is ≥ 3.5×, and with every draft accepted "
          "this model's K and these transcripts' lengths allow at most 2.50×.") in body
  # the depth table holds the dec2 model and the 4-layer base, greedy/verify/tree only
  depth = body.split("MTP vs a thinner decoder")[1]
  assert "| dec2_latent_k2 | verify | 50.0% |" in depth and "| latent_k2 | greedy |" in depth
  assert "threshold" not in depth
  assert "--workdir runs/dec2_latent_k2" in body


def test_fastadasp_trained_reports_goals_sparse_ranking_and_decode_speedup(tmp_path):
  res = tmp_path / "bench" / "results"
  rows = [{"method": "fastadasp_dense", "schedule": "decay", "target": t, "flops_reduction": t,
           "prefill_speedup": 1.5, "wer": w, "decode_speedup_vs_full": 1.2}
          for t, w in ((0.3, 0.41), (0.4, 0.48))]
  rows.append({"method": "fastadasp_sparse", "schedule": "-", "target": 0.3,
               "flops_reduction": 0.3, "prefill_speedup": 1.4, "wer": 0.45})
  _write(res / "fastadasp_x.json", {
      "machine": dict(MACHINE, date="2030-02-03T00:00:00"), "trained": True,
      "args": {"workdir": "runs/x"},
      "sets": {"kathleen_test": {
          "full": {"wer": 0.40}, "rows": rows,
          "sparse_calibration": {"layer": 2, "calib_target": 0.3, "ranking": [2, 0, 1],
                                 "te_losses": {"0": -3.0, "1": -2.0, "2": -4.0},
                                 "layer_wer": {"2": 0.45, "0": 0.46, "1": 0.5}}}}})
  sections, _ = report.build_sections(res, None, res / "plots", tmp_path)
  md = report.render_markdown(sections, [])
  assert "| fastadasp_dense | decay | 41.0% / 1.50× / 1.20× | 48.0% / 1.50× / 1.20× |" in md
  # 0.41/0.40 = +2.5% (goal +3%: met); 0.48/0.40 = +20% (goal +15%: not met).
  assert "−30% FLOPs +2.5% relative WER (goal ≤ +3%: met)" in md
  assert "−40% FLOPs +20.0% relative WER (goal ≤ +15%: not met)" in md
  assert "layer 2 < layer 0 < layer 1; selected: layer 2." in md
  assert "layer 2 (selected) 45.0%, layer 0 46.0%, layer 1 50.0%" in md
