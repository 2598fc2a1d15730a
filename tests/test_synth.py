"""Tests of the espeak-ng synthetic corpus generator (mtp_jax.synth)."""
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mtp_jax.synth import corpus as corpus_lib
from mtp_jax.synth import espeak
from mtp_jax.synth import render
from mtp_jax.synth import sentences
from mtp_jax.synth import workers

ROOT = pathlib.Path(__file__).resolve().parents[1]
# f3 and m3 have breath noise (espeak's clock-seeded generator), f1 and m1 not.
SMALL = dict(num=6, seed=3, accents=("en-us", "en-gb-scotland"),
             variants=("f3", "m1", "f1", "m3"), splits="train=0.5,test=0.5",
             shard_size=2, progress=False)


def _read_manifest(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _all_bytes(out_dir):
  out = {}
  for p in sorted(pathlib.Path(out_dir).rglob("*")):
    if p.is_file():
      out[str(p.relative_to(out_dir))] = p.read_bytes()
  return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  out = tmp_path_factory.mktemp("synth_a")
  manifests = corpus_lib.synthesize_corpus(out, None, workers=2, **SMALL)
  return out, manifests


# --- sentences -----------------------------------------------------------------


def test_number_to_words():
  assert sentences.number_to_words(0) == "zero"
  assert sentences.number_to_words(42) == "forty two"
  assert sentences.number_to_words(305) == "three hundred and five"
  assert sentences.number_to_words(12_000) == "twelve thousand"
  assert sentences.number_to_words(1_005) == "one thousand and five"
  assert sentences.year_to_words(1984) == "nineteen eighty four"
  assert sentences.year_to_words(1905) == "nineteen oh five"
  assert sentences.year_to_words(2005) == "two thousand and five"
  with pytest.raises(ValueError, match="1000000"):
    sentences.number_to_words(1_000_000)


def test_sentence_generator_reproducible_and_diverse():
  a = sentences.generate_sentences(1000, seed=7)
  assert a == sentences.generate_sentences(1000, seed=7)
  assert a[:50] != sentences.generate_sentences(50, seed=8)
  keys = [sentences.normalize_text(s) for s in a]
  assert len(set(keys)) == len(a)                      # unique
  lengths = [len(k.split()) for k in keys]
  assert min(lengths) >= 4 and max(lengths) <= 20
  assert np.std(lengths) > 2                           # varied lengths
  vocab = {w for k in keys for w in k.split()}
  assert len(vocab) >= 500, len(vocab)
  assert not any(re.search(r"\d", s) for s in a)       # numbers spelled out
  assert all(s[0].isupper() and s[-1] in ".?!" for s in a)
  short = sentences.generate_sentences(100, seed=0, min_words=4, max_words=6)
  assert all(4 <= len(sentences.normalize_text(s).split()) <= 6 for s in short)


def test_load_sentences(tmp_path):
  txt = tmp_path / "s.txt"
  txt.write_text("Hello there.\n\n  Second   line  \n", encoding="utf-8")
  assert sentences.load_sentences(txt) == ["Hello there.", "Second line"]
  tsv = tmp_path / "p.tsv"
  tsv.write_text("a1\tFirst prompt.\na2\tSecond, prompt.\n", encoding="utf-8")
  assert sentences.load_sentences(tsv) == ["First prompt.", "Second, prompt."]
  (tmp_path / "empty.txt").write_text("\n\n")
  with pytest.raises(ValueError, match="empty.txt"):
    sentences.load_sentences(tmp_path / "empty.txt")


# --- planning --------------------------------------------------------------------


def _plan(**kw):
  args = dict(seed=0, num=200, splits={"train": 0.8, "test": 0.2},
              accents=corpus_lib.DEFAULT_ACCENTS, variants=corpus_lib.DEFAULT_VARIANTS)
  args.update(kw)
  return corpus_lib.plan_corpus(args.pop("sentences"), **args)


def test_plan_splits_disjoint_and_reproducible():
  pool = sentences.generate_sentences(60, seed=1)
  # Variants of the same sentence (case, punctuation) must land in one split.
  pool += [s.upper().rstrip(".?!") + " !" for s in pool[:30]]
  plan = _plan(sentences=pool)
  assert plan == _plan(sentences=pool)
  assert plan != _plan(sentences=pool, seed=1)
  by_split = {}
  for u in plan:
    by_split.setdefault(u.split, set()).add(sentences.normalize_text(u.text))
  assert set(by_split) == {"train", "test"}
  assert not by_split["train"] & by_split["test"]
  assert sum(u.split == "train" for u in plan) == 160
  small = _plan(sentences=pool, num=3, splits={"a": 0.9, "b": 0.05, "c": 0.05})
  assert [u.split for u in small] == ["a", "b", "c"]     # no split left empty
  assert len(by_split["test"]) == 12       # 20% of the 60 distinct sentences
  assert len({u.speaker for u in plan}) > 100
  assert all(130 <= u.rate <= 220 and 30 <= u.pitch <= 70 for u in plan)


def test_plan_noise_does_not_change_voices():
  pool = sentences.generate_sentences(30, seed=2)
  clean, noisy = _plan(sentences=pool), _plan(sentences=pool, snr_db=(5, 15))
  assert all(u.snr_db is None for u in clean)
  assert all(5 <= u.snr_db <= 15 for u in noisy)
  strip = lambda u: dataclasses.replace(u, snr_db=None)  # noqa: E731
  assert [strip(u) for u in noisy] == clean


@pytest.mark.parametrize("kw, pattern", [
    (dict(rate_range=(50, 100)), "rate_range"),
    (dict(pitch_range="20,120"), "pitch_range"),
    (dict(rate_range="fast"), "rate_range"),
    (dict(snr_db="20,10"), "snr_db"),
    (dict(noise_colors=("blue",)), "blue"),
    (dict(splits={"train": 0.5}), "sum"),
    (dict(num=0), "num"),
    (dict(num=1), "num=1"),
])
def test_plan_bad_options_name_the_field(kw, pattern):
  with pytest.raises(ValueError, match=pattern):
    _plan(sentences=["One two three four.", "Five six seven eight."], **kw)


def test_parse_splits():
  assert corpus_lib.parse_splits("train=0.9,test=0.1") == {"train": 0.9, "test": 0.1}
  with pytest.raises(ValueError, match="'dev'"):
    corpus_lib.parse_splits("train=0.9,dev")
  with pytest.raises(ValueError, match="bad split name"):
    corpus_lib.parse_splits("a/b=1")


# --- espeak wrapper ----------------------------------------------------------------


def test_espeak_lists_and_synthesizes():
  accents = espeak.list_accents()
  assert set(corpus_lib.DEFAULT_ACCENTS) <= set(accents)
  assert {"f1", "f5", "m1", "m8", "klatt"} <= set(espeak.list_variants())
  wav = espeak.synthesize("Testing one two three.", accent="en-us", variant="m1",
                          rate=180, pitch=40)
  assert wav.dtype == np.float32 and wav.ndim == 1
  assert 0.5 < len(wav) / espeak.NATIVE_SAMPLE_RATE < 5
  assert 0.05 < np.abs(wav).max() <= 1.0


def test_espeak_bad_names_and_params():
  with pytest.raises(ValueError, match=r"'en-xx'.*en-us"):
    espeak.set_voice("en-xx")
  with pytest.raises(ValueError, match=r"use 'en'"):
    espeak.set_voice("en-gb")
  with pytest.raises(ValueError, match=r"'f9'.*f3"):
    espeak.set_voice("en-us", "f9")
  with pytest.raises(ValueError, match="rate"):
    espeak.set_params(rate=1000)
  with pytest.raises(ValueError, match="pitch"):
    espeak.set_params(pitch=-1)
  with pytest.raises(ValueError, match="text"):
    espeak.synthesize("   ")


def test_corpus_rejects_bad_accent_and_variant(tmp_path):
  with pytest.raises(ValueError, match=r"'en-xx'.*en-us"):
    corpus_lib.synthesize_corpus(tmp_path, None, num=2, accents=["en-us", "en-xx"],
                                 progress=False)
  with pytest.raises(ValueError, match=r"'zz9'.*m1"):
    corpus_lib.synthesize_corpus(tmp_path, None, num=2, variants="f1,zz9",
                                 progress=False)
  assert not list(tmp_path.iterdir())     # nothing written


# --- noise -----------------------------------------------------------------------------


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_add_noise_level(color, snr):
  t = np.arange(32000) / 16000
  clean = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
  noisy = render.add_noise(clean, snr, color, seed=5)
  measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) /
                           np.mean((noisy - clean).astype(np.float64) ** 2))
  assert abs(measured - snr) < 0.05
  np.testing.assert_array_equal(noisy, render.add_noise(clean, snr, color, seed=5))


def test_pink_noise_spectrum_falls():
  noise = render.colored_noise(1 << 16, "pink", seed=0).astype(np.float64)
  psd = np.abs(np.fft.rfft(noise)) ** 2
  low, high = psd[64:128].mean(), psd[8192:16384].mean()  # 128x apart in frequency
  assert 50 < low / high < 300                           # ~128 for 1/f
  white = np.abs(np.fft.rfft(render.colored_noise(1 << 16, "white", 0))) ** 2
  assert 0.7 < white[64:128].mean() / white[8192:16384].mean() < 1.4


# --- corpus ----------------------------------------------------------------------------


def test_corpus_format_and_durations(corpus):
  out, manifests = corpus
  assert set(manifests) == {"train", "test"}
  texts = {}
  for split, path in manifests.items():
    assert path == str(out / f"{split}.jsonl")
    rows = _read_manifest(path)
    assert len(rows) == 3
    for row in rows:
      assert set(row) == {"audio_filepath", "duration", "text", "speaker"}
      assert row["audio_filepath"].startswith("audio/")
      assert re.fullmatch(r"[a-z0-9-]+\+[A-Za-z0-9]+_r\d+_p\d+", row["speaker"])
      info = sf.info(str(out / row["audio_filepath"]))
      assert (info.samplerate, info.channels) == (16000, 1)
      assert (info.format, info.subtype) == ("FLAC", "PCM_16")
      assert abs(info.frames / 16000 - row["duration"]) < 1e-9
      assert 0.5 < row["duration"] < 15
      audio, _ = sf.read(str(out / row["audio_filepath"]), dtype="int16")
      assert np.abs(audio).max() > 10000                 # normalised to -3 dBFS
      assert not np.any(audio[:400]) and not np.any(audio[-400:])  # kept silences
    texts[split] = {sentences.normalize_text(r["text"]) for r in rows}
  assert not texts["train"] & texts["test"]
  config = json.loads((out / "synth_config.json").read_text())
  assert config["seed"] == SMALL["seed"] and config["espeak_ng"].startswith("1.")


def test_corpus_is_byte_identical_for_a_seed(corpus, tmp_path):
  out_a, _ = corpus
  corpus_lib.synthesize_corpus(tmp_path, None, workers=1, **SMALL)
  a, b = _all_bytes(out_a), _all_bytes(tmp_path)
  assert a.keys() == b.keys() and len(a) == 6 + 4
  assert [k for k in a if a[k] != b[k]] == []


def test_corpus_noise_at_requested_snr(corpus, tmp_path):
  out_clean, manifests = corpus
  corpus_lib.synthesize_corpus(tmp_path, None, workers=2, snr_db=10, **SMALL)
  for split, path in manifests.items():
    for row in _read_manifest(path):
      clean, _ = sf.read(str(out_clean / row["audio_filepath"]), dtype="float64")
      noisy, _ = sf.read(str(tmp_path / row["audio_filepath"]), dtype="float64")
      assert clean.shape == noisy.shape, split
      gain = noisy @ clean / (clean @ clean)             # clip guard may rescale
      noise = noisy - gain * clean
      nz = np.nonzero(clean)[0]
      speech = gain * clean[nz[0]:nz[-1] + 1]             # without edge silences
      snr = 10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2))
      assert abs(snr - 10) < 0.3, (row["audio_filepath"], snr)


def test_worker_failure_is_reported(tmp_path):
  utt = corpus_lib.plan_corpus(["Hello there friend."], seed=0, num=1, splits={"x": 1.0},
                               accents=["en-us"], variants=["m1"])[0]
  bad = dataclasses.replace(utt, audio_filepath="no_such_dir/x.flac")
  with pytest.raises(corpus_lib.SynthesisError, match=r"shard 0 failed"):
    workers.run_shards(str(tmp_path), [[bad]], 16000, 1,
                       workers.Progress(1, enabled=False))


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-m", "mtp_jax.synth", *args],
                        capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=120)


def test_cli_single_split_and_errors(tmp_path):
  res = _cli("--out", str(tmp_path), "--num", "3", "--name", "dev", "--workers", "1",
             "--accents", "en-029", "--variants", "m2", "--rate_range", "200,200",
             "--pitch_range", "40")
  assert res.returncode == 0, res.stderr
  assert res.stdout.strip() == str(tmp_path / "dev.jsonl")
  assert "audio s/s" in res.stderr and "ETA" in res.stderr
  rows = _read_manifest(tmp_path / "dev.jsonl")
  assert [r["speaker"] for r in rows] == ["en-029+m2_r200_p40"] * 3
  bad = _cli("--out", str(tmp_path / "x"), "--num", "2", "--variants", "nope")
  assert bad.returncode == 2 and "'nope'" in bad.stderr


@pytest.mark.slow
def test_corpus_deterministic_all_variants_file_sentences(tmp_path, shared_data):
  """Byte-identical across worker counts with every variant and real sentences."""
  text = sentences.load_sentences(shared_data / "text" / "harvard_sentences.txt")
  kw = dict(num=40, seed=11, variants="all", shard_size=7, progress=False,
            snr_db=(5, 30), noise_fraction=0.5)
  corpus_lib.synthesize_corpus(tmp_path / "a", text, workers=2, **kw)
  corpus_lib.synthesize_corpus(tmp_path / "b", text, workers=1, **kw)
  a, b = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b")
  assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
