"""Tests of manifests, audio reading/validation and the LibriSpeech importer."""
import json
import os
import pickle

import numpy as np
import pytest
import soundfile

from mtp_jax.data import audio
from mtp_jax.data import librispeech
from mtp_jax.data import manifest
from mtp_jax.data.errors import BadInputError, ManifestError


def _tone(seconds, rate, freq=440.0, channels=1):
  t = np.arange(int(seconds * rate)) / rate
  x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
  return np.stack([x] * channels, axis=1) if channels > 1 else x


def _write_lines(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


# --- manifests ---------------------------------------------------------------

def test_load_manifest_paths_and_fields(tmp_path):
  (tmp_path / "sub").mkdir()
  lines = [
      json.dumps({"audio_filepath": "a/x.flac", "duration": 1.5, "text": "hi"}),
      "",
      json.dumps({"audio_filepath": "/abs/y.wav", "duration": 2, "text": "yo",
                  "speaker": "s1", "lang": "en", "utt_id": "u2"}),
  ]
  m = _write_lines(tmp_path / "sub" / "m.jsonl", lines)
  e1, e2 = manifest.load_manifest(m)
  assert e1.audio_filepath == str(tmp_path / "sub" / "a" / "x.flac")
  assert (e1.line, e1.utt_id, e1.speaker, e1.duration) == (1, "x", "", 1.5)
  assert e1.manifest == str(m) and e1.where == f"{m}:1"
  assert e2.audio_filepath == "/abs/y.wav"
  assert (e2.line, e2.utt_id, e2.speaker, e2.lang) == (3, "u2", "s1", "en")


def test_load_manifests_comma_separated(tmp_path):
  rec = json.dumps({"audio_filepath": "x.wav", "duration": 1.0, "text": "a"})
  a = _write_lines(tmp_path / "a.jsonl", [rec])
  b = _write_lines(tmp_path / "b.jsonl", [rec, rec])
  assert len(manifest.load_manifests(f"{a},{b}")) == 3
  assert len(manifest.load_manifests([a, b])) == 3


@pytest.mark.parametrize("bad, reason", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"duration": 1.0, "text": "a"}', "'audio_filepath'"),
    ('{"audio_filepath": "x.wav", "duration": "long", "text": "a"}', "'duration'"),
    ('{"audio_filepath": "x.wav", "duration": NaN, "text": "a"}', "'duration'"),
    ('{"audio_filepath": "x.wav", "duration": 1.0, "text": 5}', "'text'"),
    ('{"audio_filepath": "x.wav", "duration": 1.0}', "'text'"),
])
def test_malformed_line_names_manifest_and_line(tmp_path, bad, reason):
  good = json.dumps({"audio_filepath": "x.wav", "duration": 1.0, "text": "a"})
  m = _write_lines(tmp_path / "m.jsonl", [good, bad])
  with pytest.raises(ManifestError, match=reason) as info:
    manifest.load_manifest(m)
  assert str(info.value).startswith(f"{m}:2: ")
  assert (info.value.manifest, info.value.line) == (str(m), 2)
  errors = []
  assert len(manifest.load_manifest(m, errors=errors)) == 1
  assert [e.line for e in errors] == [2]


def test_write_manifest_roundtrip(tmp_path):
  recs = [{"audio_filepath": "x.wav", "duration": 1.0, "text": "caf\u00e9"}]
  assert manifest.write_manifest(tmp_path / "m.jsonl", recs) == 1
  assert manifest.load_manifest(tmp_path / "m.jsonl")[0].text == "caf\u00e9"


def test_bad_input_error_pickles():
  err = pickle.loads(pickle.dumps(BadInputError("m.jsonl", 3, "oops")))
  assert (err.manifest, err.line, err.reason, str(err)) == (
      "m.jsonl", 3, "oops", "m.jsonl:3: oops")
  assert isinstance(pickle.loads(pickle.dumps(ManifestError("m", 1, "x"))),
                    ManifestError)


# --- audio --------------------------------------------------------------------

def test_resample_8k_to_16k_keeps_tone_frequency(tmp_path):
  path = tmp_path / "tone8k.wav"
  soundfile.write(path, _tone(1.0, 8000, freq=1000.0), 8000, subtype="PCM_16")
  wav = audio.load_audio(str(path))
  assert wav.dtype == np.float32 and wav.shape == (16000,)
  spectrum = np.abs(np.fft.rfft(wav))
  peak_hz = np.argmax(spectrum) * 16000 / len(wav)
  assert abs(peak_hz - 1000.0) <= 2.0
  assert np.abs(wav).max() <= 1.0


def test_stereo_is_mixed_to_mono(tmp_path):
  left = _tone(0.5, 16000)
  stereo = np.stack([left, -left + 0.25], axis=1)
  soundfile.write(tmp_path / "s.flac", stereo, 16000)
  wav = audio.load_audio(str(tmp_path / "s.flac"))
  assert wav.shape == (8000,)
  np.testing.assert_allclose(wav, 0.125, atol=1e-3)


@pytest.mark.parametrize("fmt", ["ogg", "flac", "wav"])
def test_formats(tmp_path, fmt):
  path = tmp_path / f"x.{fmt}"
  soundfile.write(path, _tone(0.5, 22050), 22050)
  wav = audio.load_audio(str(path))
  assert abs(len(wav) - 8000) <= 1
  info = audio.read_info(str(path))
  assert info.num_samples() >= len(wav)


def _check_raises(fn, where, reason):
  with pytest.raises(BadInputError, match=reason) as info:
    fn()
  assert str(info.value).startswith(where)


def test_load_audio_errors(tmp_path):
  kw = dict(manifest="m.jsonl", line=7)
  _check_raises(lambda: audio.load_audio(str(tmp_path / "none.wav"), **kw),
                "m.jsonl:7: ", "not found")
  (tmp_path / "junk.flac").write_bytes(b"definitely not audio" * 20)
  _check_raises(lambda: audio.load_audio(str(tmp_path / "junk.flac"), **kw),
                "m.jsonl:7: ", "cannot decode")
  soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
  _check_raises(lambda: audio.load_audio(str(tmp_path / "empty.wav"), **kw),
                "m.jsonl:7: ", "zero-length")
  nan = _tone(0.2, 16000)
  nan[100] = np.nan
  soundfile.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
  _check_raises(lambda: audio.load_audio(str(tmp_path / "nan.wav"), **kw),
                "m.jsonl:7: ", "NaN/inf")
  full = tmp_path / "full.flac"
  soundfile.write(full, np.random.default_rng(0).uniform(-.5, .5, 32000), 16000)
  (tmp_path / "cut.flac").write_bytes(full.read_bytes()[:len(full.read_bytes()) // 2])
  _check_raises(lambda: audio.load_audio(str(tmp_path / "cut.flac"), **kw),
                "m.jsonl:7: ", "cannot decode")


def test_check_header(tmp_path):
  path = str(tmp_path / "one.wav")
  soundfile.write(path, _tone(1.0, 16000), 16000)
  kw = dict(manifest="m.jsonl", line=2)
  assert audio.check_header(path, 1.2, **kw).frames == 16000
  _check_raises(lambda: audio.check_header(path, 2.0, **kw), "m.jsonl:2: ",
                "far from the real duration")
  _check_raises(lambda: audio.check_header(path, 1.0, max_duration=0.5, **kw),
                "m.jsonl:2: ", "longer than the largest bucket")
  _check_raises(lambda: audio.check_header(path, 1.0, min_duration=2.0, **kw),
                "m.jsonl:2: ", "shorter than min_duration")
  soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
  _check_raises(lambda: audio.check_header(str(tmp_path / "empty.wav"), 0.0, **kw),
                "m.jsonl:2: ", "zero-length")
  (tmp_path / "junk.wav").write_bytes(b"RIFF0000" * 4)
  _check_raises(lambda: audio.check_header(str(tmp_path / "junk.wav"), 1.0, **kw),
                "m.jsonl:2: ", "corrupt")


def test_fsdd_8k_real_recording(shared_data):
  e = manifest.load_manifest(shared_data / "fsdd" / "train.jsonl")[0]
  info = audio.check_header(e.audio_filepath, e.duration)
  assert info.sample_rate == 8000
  wav = audio.load_audio(e.audio_filepath)
  assert abs(len(wav) - round(info.frames * 2)) <= 1
  assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0


# --- LibriSpeech ----------------------------------------------------------------

def _librispeech_tree(root):
  spec = {("19", "198"): ["HELLO WORLD", "NORTHANGER ABBEY"],
          ("26", "495"): ["A THIRD ONE"]}
  for (spk, chap), texts in spec.items():
    d = root / spk / chap
    d.mkdir(parents=True)
    lines = []
    for i, t in enumerate(texts):
      uid = f"{spk}-{chap}-{i:04d}"
      soundfile.write(d / f"{uid}.flac", _tone(0.25 * (i + 1), 16000), 16000)
      lines.append(f"{uid} {t}")
    (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")


def test_librispeech_import(tmp_path):
  root = tmp_path / "LibriSpeech" / "dev-clean"
  _librispeech_tree(root)
  out = tmp_path / "manifests" / "dev.jsonl"
  assert librispeech.main([str(root), str(out)]) == 0
  entries = manifest.load_manifest(out)
  assert [e.utt_id for e in entries] == ["19-198-0000", "19-198-0001",
                                        "26-495-0000"]
  assert [e.text for e in entries] == ["HELLO WORLD", "NORTHANGER ABBEY",
                                      "A THIRD ONE"]
  assert [e.duration for e in entries] == [0.25, 0.5, 0.25]
  assert [e.speaker for e in entries] == ["19", "19", "26"]
  raw = json.loads(out.read_text().splitlines()[0])
  assert not os.path.isabs(raw["audio_filepath"])  # Relative to the manifest.
  assert all(os.path.isfile(e.audio_filepath) for e in entries)
  assert audio.load_audio(entries[1].audio_filepath).shape == (8000,)


def test_librispeech_missing_audio_names_transcript_line(tmp_path):
  root = tmp_path / "ls"
  _librispeech_tree(root)
  os.remove(root / "19" / "198" / "19-198-0001.flac")
  with pytest.raises(ValueError, match=r"19-198\.trans\.txt:2: audio file not found"):
    librispeech.import_librispeech(root, tmp_path / "m.jsonl")


def test_write_subset_makes_paths_absolute(tmp_path):
  from mtp_jax.data.manifest import load_manifest, write_subset
  src_dir = tmp_path / "src"
  src_dir.mkdir()
  src = src_dir / "m.jsonl"
  src.write_text("".join(json.dumps({"audio_filepath": f"audio/{i}.flac", "duration": 1.0,
                                     "text": f"word {i}"}) + "\n" for i in range(5)))
  out = write_subset(src, tmp_path / "sub.jsonl", 3)
  recs = [json.loads(l) for l in open(out)]
  assert [r["text"] for r in recs] == ["word 0", "word 1", "word 2"]
  assert all(r["audio_filepath"] == str(src_dir / "audio" / f"{i}.flac") for i, r in enumerate(recs))
  assert len(load_manifest(out, errors=[])) <= 3
