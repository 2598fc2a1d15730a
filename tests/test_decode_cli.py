"""decode.py on a manifest: every row decoded or counted and named as skipped, no
training-time limits, clear errors (no tracebacks), WER normalized as in training."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax import text as text_lib
from mtp_jax.config import ConfigError
from mtp_jax.data.tokenizer import Tokenizer
from train_helpers import ROOT, init_workdir, micro_config, write_synthetic_manifest

NUM_GOOD = 8


def _bad_rows(data: pathlib.Path) -> list[dict]:
  """Rows decode.py must skip, count and name: missing, empty text, corrupt, NaN."""
  (data / "audio" / "corrupt.flac").write_bytes(b"no flac at all" * 40)
  nan = np.zeros(8000, np.float32)
  nan[100] = np.nan
  sf.write(data / "audio" / "nan.wav", nan, 16000, subtype="FLOAT")
  return [{"audio_filepath": "audio/nowhere.flac", "duration": 0.5, "text": "alpha"},
          {"audio_filepath": "audio/u00.flac", "duration": 0.4, "text": " ?! "},
          {"audio_filepath": "audio/corrupt.flac", "duration": 0.5, "text": "alpha"},
          {"audio_filepath": "audio/nan.wav", "duration": 0.5, "text": "alpha"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("decode_cli")
  train = write_synthetic_manifest(root / "data", n=NUM_GOOD)
  c = micro_config(k=2)
  c.data.train_manifests = train
  # Training-time limits that test rows exceed (0.6 / 0.7 s audio, 3-word transcripts).
  c.data.update(max_duration=0.5, max_text_tokens=3, numbers_to_words=True)
  workdir = init_workdir(root / "run", c)
  rows = [json.loads(l) for l in open(train)]
  rows[0]["text"] = "21 " + rows[0]["text"]  # "twenty one ...": WER as in training
  test = root / "data" / "test.jsonl"
  test.write_text("".join(json.dumps(r) + "\n" for r in rows + _bad_rows(root / "data")))
  empty = root / "data" / "empty.jsonl"
  empty.write_text("\n")
  return root, workdir, test, empty


def _decode_py(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, str(ROOT / "decode.py"), *map(str, args)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)


def test_every_row_is_decoded_or_counted_and_named(env):
  root, workdir, test, _ = env
  out_path = root / "not" / "yet" / "hyps.jsonl"  # --out into a folder that does not exist
  res = _decode_py("--workdir", workdir, "--manifest", test, "--out", out_path,
                   "--batch_size", 4, "--max_new_tokens", 4)
  assert res.returncode == 0, res.stderr
  summary = json.loads(out_path.with_suffix(".summary.json").read_text())
  records = [json.loads(l) for l in open(out_path)]
  # Rows over training's max_duration / max_text_tokens are decoded too.
  assert summary["utterances"] == len(records) == NUM_GOOD
  assert summary["skipped"] == 4
  named = {r["line"]: r["reason"] for r in summary["skipped_rows"]}
  assert sorted(named) == [9, 10, 11, 12]
  assert "not found" in named[9] and "empty transcript" in named[10]
  assert "corrupt" in named[11] and "NaN" in named[12]
  assert all(r["manifest"] == str(test) for r in summary["skipped_rows"])
  # The table and the listing below it show the skipped rows.
  header, row = res.stdout.splitlines()[:2]
  assert row.split()[header.split().index("skipped")] == "4"
  assert f"{test}:12: audio has NaN/inf samples" in res.stdout
  # WER normalized like train-time eval (data.numbers_to_words=True: "21" is 2 words).
  refs = [r["ref"] for r in records]
  assert summary["num_ref_words"] == sum(len(text_lib.normalize(r, True).split())
                                         for r in refs)
  assert summary["wer"] == pytest.approx(text_lib.wer(
      refs, [r["hyp"] for r in records], numbers_to_words=True)["wer"])


@pytest.mark.parametrize("case", ["fail_on_skip", "empty_manifest", "no_manifest", "beam",
                                  "max_new_tokens"])
def test_clear_errors_without_traceback(env, case):
  root, workdir, test, empty = env
  out = root / f"{case}.jsonl"
  args = ["--workdir", workdir, "--manifest", test, "--out", out]
  expected = {
      "fail_on_skip": f"--fail_on_skip: 3 row(s) of {test} cannot be decoded (found before "
                      f"decoding):\n  {test}:9: audio file not found",
      "empty_manifest": f"--manifest={empty}: no utterance in it (empty manifest)",
      "no_manifest": f"--manifest={root / 'missing.jsonl'}: no such file",
      "beam": "flag --beam=0",
      "max_new_tokens": "flag --max_new_tokens=-2",
  }[case]
  extra = {"fail_on_skip": ["--fail_on_skip"], "beam": ["--beam", 0, "--strategy", "beam"],
           "max_new_tokens": ["--max_new_tokens", -2]}.get(case, [])
  if case == "empty_manifest":
    args[3] = empty
  if case == "no_manifest":
    args[3] = root / "missing.jsonl"
  res = _decode_py(*args, *extra)
  assert res.returncode != 0
  assert expected in res.stderr, res.stderr
  assert "Traceback" not in res.stderr, res.stderr
  assert not out.exists()


def test_tokenizer_with_more_ids_than_the_model_is_refused_at_load(env, tmp_path):
  root, workdir, test, _ = env
  tok = Tokenizer.load(workdir)
  small = json.loads((workdir / "config.json").read_text())
  assert 8 < tok.vocab_size <= small["model"]["decoder"]["vocab_size"]
  # Fewer ids than the model's vocabulary decode fine: ids past the tokenizer are dropped.
  assert tok.decode([5, tok.vocab_size, small["model"]["decoder"]["vocab_size"] - 1, 6]) \
      == tok.decode([5, 6])
  c = micro_config(k=2)
  c.data.train_manifests = str(root / "data" / "train.jsonl")
  c.model.decoder.vocab_size = 8  # fewer than the ids of the tokenizer trained there
  bad = init_workdir(tmp_path / "run", c)
  with pytest.raises(ConfigError, match=rf"model.decoder.vocab_size=8: the tokenizer .* has "
                                        rf"{tok.vocab_size} ids"):
    ckpt_lib.restore_for_inference(bad)


@pytest.mark.parametrize("mode", ["manifest", "audio"])
def test_ctc_on_a_model_without_a_ctc_head_is_a_clear_error(env, mode):
  root, workdir, test, _ = env
  out = root / f"ctc_{mode}.jsonl"
  target = (["--manifest", test, "--out", out] if mode == "manifest"
            else ["--audio", root / "data" / "audio" / "u00.flac"])
  res = _decode_py("--workdir", workdir, "--strategy", "ctc", *target)
  assert res.returncode == 1
  assert ("decode.py: error: --strategy=ctc: strategy 'ctc' needs a model trained with a CTC "
          "head (model.encoder.ctc_head or model.projector.ctc_head)") in res.stderr, res.stderr
  assert "Traceback" not in res.stderr, res.stderr
  assert not res.stdout.strip() and not out.exists()
