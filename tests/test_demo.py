"""The demo (`python -m mtp_jax.demo`, configs/demo.py): its config is the best model
family and validates with and without real speech, its plan runs the right commands,
its table and ratios are right, its strategies are timed side by side; a tiny
end-to-end run (slow) writes the results and resumes."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from mtp_jax import demo
from mtp_jax.config import ModelConfig, load_config_file
from mtp_jax.train.config import RunConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.py"


def _fake_data(tmp_path: pathlib.Path) -> pathlib.Path:
  data = tmp_path / "data"
  (data / "kathleen").mkdir(parents=True)
  for split in ("train", "test"):
    (data / "kathleen" / f"{split}.jsonl").write_text("")
  return data


def test_config_is_the_whisper_decoder_model_with_latent_heads():
  c = load_config_file(CONFIG)
  run = RunConfig.from_config(c)
  m = ModelConfig.from_config(c.model)
  assert (m.encoder.type, m.decoder.type) == ("whisper", "whisper")
  assert (m.mtp.num_heads, m.mtp.head_type) == (4, "latent")
  assert (c.train.encoder_init, c.train.decoder_init) == ("tiny.en", "tiny.en")
  assert c.train.frozen == "^params/(encoder|embed)/"  # frozen encoder: the cache works
  assert c.train.init_from == "" and c.train.mode == "joint"  # one run, from the import
  assert run.train.steps == 320 and c.data.dev_manifest == ""
  assert c.data.train_manifests.split(",") == [
      "runs/demo/corpus/train.jsonl"] + ["../shared/data/kathleen/train.jsonl"] * 2


def test_config_without_real_speech_trains_on_the_corpus_only():
  c = load_config_file(f"{CONFIG}:data=,corpus=/x/corpus,steps=7")
  RunConfig.from_config(c)
  assert c.data.train_manifests == "/x/corpus/train.jsonl"
  assert "kathleen" not in json.dumps(c.to_dict())
  assert c.train.steps == 7


def test_docstring_gives_the_commands_and_the_measured_result():
  text = CONFIG.read_text()
  assert "python -m mtp_jax.demo" in text and "python train.py --config configs/demo.py" in text
  expected = text[text.index("Expected"):]
  assert re.search(r"Kathleen test[^%]*\d+\.\d+%", expected)  # a measured WER
  assert re.search(r"\d+\.\d+ min", expected)  # and the time it took


@pytest.mark.parametrize("real", [True, False])
def test_plan_with_and_without_real_speech(tmp_path, real):
  data = _fake_data(tmp_path) if real else tmp_path / "absent"
  p = demo.plan(tmp_path / "out", str(data), steps=5)
  assert p["real"] is real
  assert list(p["tests"]) == (["kathleen_test", "synthetic_test"] if real
                              else ["synthetic_test"])
  for key in ("cache", "train"):
    cmd = p[key]
    assert demo.QUIET_ABSL in cmd  # no library INFO lines or warnings
    arg = next(a for a in cmd if a.startswith("--config="))[len("--config="):]
    c = load_config_file(arg.replace("configs/demo.py", str(CONFIG)))  # the arg it runs
    RunConfig.from_config(c)
    assert c.train.steps == 5
    assert ("kathleen" in c.data.train_manifests) is real
  assert any(a.startswith("--config.data.feature_cache=") for a in p["train"])
  assert p["synth"][p["synth"].index("--num") + 1] == str(demo.NUM_SYNTH)


def test_plan_without_data_argument_is_synthetic_only(tmp_path):
  assert not demo.plan(tmp_path, "")["real"]
  assert not demo.has_real_speech(None)


def _row(strategy, calls, seconds, wer=0.1):
  return dict(strategy=strategy, utterances=3, wer=wer, calls_per_utt=calls,
              decode_s=seconds)


def test_ratios_and_table():
  rows = [_row("greedy", 12.0, 6.0), _row("verify", 8.0, 5.0), _row("tree", 6.0, 8.0, 0.2)]
  hyps = {"greedy": ["a b", "c", "d"], "verify": ["a b", "c", "d"], "tree": ["a b", "x", "d"]}
  demo.add_ratios(rows, hyps)
  assert [r["calls_reduction"] for r in rows] == pytest.approx([1.0, 1.5, 2.0])
  assert [r["speedup"] for r in rows] == pytest.approx([1.0, 1.2, 0.75])
  assert [r["same_as_greedy"] for r in rows] == pytest.approx([1.0, 1.0, 2 / 3])
  table = demo.format_table({"kathleen_test": rows, "synthetic_test": rows[:1]})
  lines = table.splitlines()
  assert lines[0].split() == ["test", "set", "utts", "strategy", "WER", "%", "calls/utt",
                              "fewer", "calls", "speed", "=", "greedy"]
  assert lines[3].split() == ["kathleen_test", "3", "verify", "10.00", "8.00", "1.50x",
                              "1.20x", "100%"]
  assert lines[4].split() == ["kathleen_test", "3", "tree", "20.00", "6.00", "2.00x", "0.75x",
                              "67%"]
  assert lines[5].split()[:3] == ["synthetic_test", "3", "greedy"]


class _Tok:
  def decode(self, ids):
    return " ".join(f"w{i}" for i in ids)


def _fake_decode(calls_log):
  """A stand-in for `api.decode`: strategy s emits [1, 2] in 2 + len(s) % 3 calls."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mtp_jax.decode.api import DecodeResult  # pylint: disable=import-outside-toplevel

  def decode(model, params, audio, alen, *, strategy, max_new_tokens):
    del model, params, max_new_tokens
    calls_log.append((strategy, audio.shape))
    b = audio.shape[0]
    calls = np.full((b,), 2 + len(strategy) % 3, np.int32) * (np.asarray(alen) > 0)
    return DecodeResult(tokens=np.tile(np.array([[1, 2, 0]], np.int32), (b, 1)),
                        lengths=np.full((b,), 2, np.int32), calls=calls,
                        total_calls=np.int32(calls.max()),
                        accepted=np.zeros((b, 4), np.int32))
  return decode


def test_decode_interleaved_rotates_strategies_and_matches_decode_batches(monkeypatch):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mtp_jax.decode import summary  # pylint: disable=import-outside-toplevel
  log = []
  monkeypatch.setattr(summary, "decode", _fake_decode(log))
  batches = [dict(audio=np.zeros((1, n), np.float32), audio_len=np.array([n]),
                  utt_id=np.array([f"u{i}"]), ref_text=np.array(["w1 w2"]))
             for i, n in enumerate([8, 8, 16, 8])]
  strategies = ["greedy", "verify", "tree"]
  progress = []
  outs = summary.decode_interleaved(None, None, _Tok(), batches, strategies=strategies,
                                    max_new_tokens=3,
                                    on_batch=lambda n, t: progress.append((n, t)))
  assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
  # Batch n starts with strategy n mod 3; a new shape is run twice (compile, then timed).
  firsts = [log[0][0], log[6][0], log[9][0], log[15][0]]
  assert firsts == ["greedy", "verify", "tree", "greedy"]
  assert len(log) == 4 * 3 + 2 * 3  # 2 shapes compiled once per strategy
  for s in strategies:
    log.clear()
    alone = summary.decode_batches(None, None, _Tok(), batches, strategy=s, max_new_tokens=3)
    assert outs[s]["records"] == alone["records"]
    keep = ("strategy", "utterances", "wer", "calls_per_utt", "batches", "batch_calls")
    assert {k: outs[s]["summary"][k] for k in keep} == {k: alone["summary"][k] for k in keep}
    assert outs[s]["summary"]["calls_per_utt"] == 2 + len(s) % 3
    assert outs[s]["summary"]["wer"] == 0.0


def test_dry_run_prints_the_commands(tmp_path):
  out = subprocess.run([sys.executable, "-m", "mtp_jax.demo", "--dry_run", "--out",
                        str(tmp_path / "out"), "--data", ""], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0].startswith("python -m mtp_jax.synth --out ")
  assert lines[2].startswith("python train.py --config=configs/demo.py:corpus=")
  assert "bench/recipe_eval.py --workdir" in out.stdout
  assert "bench/longform.py" in out.stdout and "--chunk_seconds" in out.stdout
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tiny_demo_runs_writes_results_and_resumes(tmp_path):
  """Synthetic speech only, 16 utterances, 2 steps, 2 test utterances (minutes)."""
  cmd = [sys.executable, "-m", "mtp_jax.demo", "--out", str(tmp_path / "demo"), "--data", "",
         "--num", "16", "--steps", "2", "--test_utts", "2"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  assert "NO REAL SPEECH" in first.stdout
  assert first.stdout.count("step 2/2 ") == 1  # each progress line once
  # No absl log lines ("I1207 12:00:00.0 ...", "W1207 ...") and no Python warnings.
  assert not re.search(r"^[IW]\d{4} ", first.stderr, re.M), first.stderr[-3000:]
  assert "Warning" not in first.stderr, first.stderr[-3000:]
  result = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
  assert list(result["tables"]) == ["synthetic_test"] and result["real_speech"] is False
  assert [r["strategy"] for r in result["rows"]] == list(demo.STRATEGIES)
  assert result["step"] == 2 and result["machine"]["cpu_count"] and result["date"]
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "is trained (2 steps)" in again.stdout and "reusing" in again.stdout
  assert "$ " not in again.stdout  # nothing run again
