"""Any audio file for `decode.py --audio`: every format soundfile reads, 8-64-bit, 8-48 kHz,
stereo, truncated, tiny, empty, silent, noisy and 2-hour files. Each file gets a transcript
or an error naming it; no file stops the others; memory stays bounded. The files are
generated here with soundfile."""
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from mtp_jax.data.audio import AudioStream
from mtp_jax.data.errors import BadInputError
from mtp_jax.decode.transcribe import Transcriber
from train_helpers import ROOT, init_workdir, micro_config, write_synthetic_manifest


def _signal(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
  """A voiced-like test signal: harmonics of 150 Hz plus a little noise, peak < 0.5."""
  t = np.arange(int(seconds * rate)) / rate
  x = sum(0.1 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 6) if 150 * k < rate / 2)
  return (x + 0.01 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def _read(path: str, **kw) -> np.ndarray:
  return np.concatenate(list(AudioStream(path, **kw).blocks()))


def _reference(path: str) -> np.ndarray:
  """Whole-file read, channels averaged, resampled to 16 kHz: what streaming must equal."""
  data, rate = sf.read(path, dtype="float32", always_2d=True)
  mono = data.mean(axis=1, dtype=np.float32)
  if rate != 16000:
    mono = soxr.resample(mono, rate, 16000, quality="HQ").astype(np.float32)
  return np.clip(mono, -1, 1)


def _writable_formats():
  for fmt in sorted(sf.available_formats()):
    if fmt == "RAW":  # header-less: unreadable without being told rate and encoding
      continue
    yield fmt


@pytest.mark.parametrize("fmt", list(_writable_formats()))
def test_every_soundfile_format_streams_like_a_whole_read(fmt, tmp_path):
  rate = 8000 if fmt == "WVE" else 16000  # Psion WVE is 8 kHz only
  path = str(tmp_path / f"x.{fmt.lower()}")
  sf.write(path, _signal(1.0, rate), rate, format=fmt, subtype=sf.default_subtype(fmt))
  got = _read(path, block_seconds=0.3)  # several blocks
  ref = _reference(path)
  assert len(got) == len(ref) > 0
  np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("subtype,atol", [("PCM_U8", 2e-2), ("PCM_16", 1e-3),
                                          ("PCM_24", 1e-3), ("PCM_32", 1e-3),
                                          ("FLOAT", 1e-3), ("DOUBLE", 1e-3)])
@pytest.mark.parametrize("rate", [8000, 11025, 22050, 24000, 32000, 44100, 48000])
def test_depths_rates_and_stereo(subtype, atol, rate, tmp_path):
  x = _signal(0.7, rate)
  stereo = np.stack([x, 0.5 * x], axis=1)  # channels averaged: 0.75 x
  path = str(tmp_path / "s.wav")
  sf.write(path, stereo, rate, subtype=subtype)
  got = _read(path, block_seconds=0.25)
  want = soxr.resample(0.75 * x, rate, 16000, quality="HQ")
  assert len(got) == len(want)
  np.testing.assert_allclose(got, want, atol=atol)


@pytest.mark.parametrize("fmt,subtype,rate", [("FLAC", "PCM_S8", 11025), ("FLAC", "PCM_24", 48000),
                                              ("OGG", "VORBIS", 22050), ("OGG", "OPUS", 48000),
                                              ("MP3", "MPEG_LAYER_III", 24000),
                                              ("AIFF", "PCM_32", 32000), ("CAF", "ALAW", 8000)])
def test_compressed_and_other_containers(fmt, subtype, rate, tmp_path):
  path = str(tmp_path / f"c.{fmt.lower()}")
  x = _signal(1.0, rate)
  sf.write(path, np.stack([x, x], axis=1), rate, format=fmt, subtype=subtype)
  got = _read(path)
  assert abs(len(got) - 16000) <= 0.05 * 16000  # lossy codecs pad a little
  rms = float(np.sqrt(np.mean(np.square(_signal(1.0, 16000)))))
  assert float(np.sqrt(np.mean(np.square(got)))) == pytest.approx(rms, rel=0.2)


def test_truncated_empty_corrupt_and_nan_files(tmp_path):
  x = _signal(4.0, 16000)
  for ext in ("flac", "wav", "ogg"):
    sf.write(tmp_path / f"full.{ext}", x, 16000)
    data = (tmp_path / f"full.{ext}").read_bytes()
    (tmp_path / f"cut.{ext}").write_bytes(data[:len(data) // 2])
  s = AudioStream(str(tmp_path / "cut.flac"), block_seconds=0.5)
  got = np.concatenate(list(s.blocks()))
  assert 0.5 * 16000 < len(got) < len(x)  # the audio before the damage
  np.testing.assert_allclose(got, x[:len(got)], atol=1e-4)
  assert len(s.warnings) == 1 and "cut.flac: unreadable after" in s.warnings[0]
  got = _read(str(tmp_path / "cut.wav"))  # libsndfile reads up to the end of the data
  np.testing.assert_allclose(got, x[:len(got)], atol=1e-4)
  assert 1.5 * 16000 < len(got) < len(x)
  got = _read(str(tmp_path / "cut.ogg"))  # up to its last complete page
  assert 0 < len(got) < len(x)
  full = (tmp_path / "full.ogg").read_bytes()
  (tmp_path / "headers.ogg").write_bytes(full[:4500])  # the Vorbis headers, no audio page
  with pytest.raises(BadInputError, match="zero-length audio: .*headers.ogg"):
    AudioStream(str(tmp_path / "headers.ogg"))
  (tmp_path / "stub.ogg").write_bytes(full[:200])
  with pytest.raises(BadInputError, match="corrupt or unsupported audio file .*stub.ogg"):
    AudioStream(str(tmp_path / "stub.ogg"))
  sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
  with pytest.raises(BadInputError, match="zero-length audio: .*empty.wav"):
    AudioStream(str(tmp_path / "empty.wav"))
  (tmp_path / "junk.wav").write_bytes(os.urandom(3000))
  with pytest.raises(BadInputError, match="corrupt or unsupported audio file .*junk.wav"):
    AudioStream(str(tmp_path / "junk.wav"))
  nan = x.copy()
  nan[40_000] = np.nan
  sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
  with pytest.raises(BadInputError, match=r"NaN/inf samples \(first at 2.50 s\): .*nan.wav"):
    _read(str(tmp_path / "nan.wav"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """An untrained micro Conformer run (12-s chunks)."""
  root = tmp_path_factory.mktemp("robust")
  c = micro_config(k=2)
  c.data.train_manifests = write_synthetic_manifest(root / "data", n=8)
  return init_workdir(root / "run", c)


def test_two_hour_file_in_bounded_memory(workdir, tmp_path):
  rate, path = 8000, tmp_path / "two_hours.flac"
  tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(2 * rate) / rate)
  with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:  # written a minute at a time
    for minute in range(120):
      block = np.zeros(60 * rate, np.float32)
      if minute % 20 == 0:
        block[30 * rate:32 * rate] = tone  # a 2-s tone every 20 minutes
      f.write(block)
  tr = Transcriber(workdir, batch_size=8, max_new_tokens=4)
  seen = []
  tracemalloc.start()
  try:
    (t,) = tr.transcribe_many([str(path)], on_progress=lambda t, total, _: seen.append(
        (t.duration, total)))
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  # Whole, the file would be 7200 s x 16 kHz x 4 bytes = 461 MB as float32.
  assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"
  assert t.error is None and t.duration == pytest.approx(7200.0, abs=0.01)
  # 12-s chunks, or down to 9.5 s in silence (cut mid-way through the 5-s search window)
  assert 600 <= t.stats["chunks"] <= 760
  assert 6 <= t.stats["decoded_chunks"] <= 12  # the silent chunks are not decoded
  durations = [d for d, _ in seen]
  assert durations == sorted(durations) and durations[-1] == pytest.approx(7200.0, abs=0.01)
  assert all(total == pytest.approx(7200.0) for _, total in seen) and len(seen) >= 70
  for s in t.segments:  # the segments hold the tones (30-32 s into every 20th minute)
    assert any(s.start <= 60 * m + 31 <= s.end for m in range(0, 120, 20)), s


def _write_batch(d) -> tuple[list[str], list[str]]:
  """(files that must get a transcript, files that must get a named error)."""
  good = {
      "stereo_24bit_44k.wav": (np.stack([_signal(2, 44100), _signal(2, 44100, 1)], 1), 44100,
                               dict(subtype="PCM_24")),
      "u8_8k.wav": (_signal(1.5, 8000), 8000, dict(subtype="PCM_U8")),
      "pcm32_32k.wav": (_signal(1.5, 32000), 32000, dict(subtype="PCM_32")),
      "float_48k.wav": (_signal(1.5, 48000), 48000, dict(subtype="FLOAT")),
      "s8_11k.flac": (_signal(1.5, 11025), 11025, dict(subtype="PCM_S8")),
      "vorbis_22k.ogg": (_signal(1.5, 22050), 22050, dict(format="OGG", subtype="VORBIS")),
      "opus_48k.opus": (_signal(1.5, 48000), 48000, dict(format="OGG", subtype="OPUS")),
      "mp3_24k.mp3": (_signal(1.5, 24000), 24000, dict(format="MP3")),
      "short_0.05s.wav": (_signal(0.05, 16000), 16000, {}),
      "silence.wav": (np.zeros(3 * 16000, np.float32), 16000, {}),
      "noise.flac": (np.random.default_rng(0).uniform(-0.5, 0.5, 48000).astype(np.float32),
                     16000, {}),
      "tones.flac": (np.concatenate([0.3 * np.sin(2 * np.pi * f * np.arange(5 * 16000) / 16000)
                                     for f in (220, 330, 440, 550)]).astype(np.float32), 16000,
                     {}),
  }
  paths = []
  for name, (x, rate, kw) in good.items():
    sf.write(d / name, x, rate, **kw)
    paths.append(str(d / name))
  x = _signal(4.0, 16000)
  for ext in ("flac", "ogg"):
    sf.write(d / f"full.{ext}", x, 16000)
    data = (d / f"full.{ext}").read_bytes()
    (d / f"truncated.{ext}").write_bytes(data[:len(data) // 2])
  (d / "headers_only.ogg").write_bytes((d / "full.ogg").read_bytes()[:4500])
  # The audio before the damage is transcribed.
  paths += [str(d / "truncated.flac"), str(d / "truncated.ogg")]
  sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
  (d / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(2000))
  nan = x.copy()
  nan[100] = np.inf
  sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
  sf.write(d / "headerless.raw", x, 16000, subtype="PCM_16")
  bad = [str(d / n) for n in ("headers_only.ogg", "empty.wav", "corrupt.wav", "nan.wav",
                              "headerless.raw", "missing.wav")]
  return paths, bad


def test_decode_cli_transcribes_each_file_or_names_its_error(workdir, tmp_path):
  audio = tmp_path / "audio"
  audio.mkdir()
  good, bad = _write_batch(audio)
  order = [p for pair in zip(good, bad) for p in pair] + good[len(bad):]  # interleaved
  out = tmp_path / "out"
  res = subprocess.run(
      [sys.executable, str(ROOT / "decode.py"), "--workdir", str(workdir), "--batch_size", "4",
       "--max_new_tokens", "6", "--format", "txt,srt,vtt,jsonl", "--output_dir", str(out),
       "--progress", "--audio", *order],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
      timeout=900)
  assert res.returncode == 1, res.stderr
  assert "Traceback" not in res.stderr, res.stderr
  lines = res.stdout.splitlines()
  assert [l.split("\t")[0] for l in lines] == [p for p in order if p in good]  # input order
  errors = [l for l in res.stderr.splitlines() if l.startswith("decode.py: error: ")
            and "could not be transcribed" not in l]  # one line per file, then a summary
  for p in bad:
    assert sum(p in l for l in errors) == 1, (p, errors)
  assert f"{len(bad)} of {len(order)} file(s) could not be transcribed" in res.stderr
  named = {os.path.basename(p): next(l for l in errors if p in l) for p in bad}
  assert "zero-length" in named["empty.wav"] and "NaN/inf" in named["nan.wav"]
  assert "not found" in named["missing.wav"] and "zero-length" in named["headers_only.ogg"]
  assert "truncated.flac: unreadable after" in res.stderr  # a warning, and a transcript
  assert f"{audio / 'silence.wav'}\t" in lines  # silence: an empty transcript
  assert "tones.flac: [####################] 0:00:20 / 0:00:20 (100%)" in res.stderr
  for p in good:
    stem = out / os.path.splitext(os.path.basename(p))[0]
    for ext in ("txt", "srt", "vtt", "jsonl"):
      assert os.path.isfile(f"{stem}.{ext}"), f"{stem}.{ext}"
    assert open(f"{stem}.vtt").read().startswith("WEBVTT\n")
  assert not any(os.path.exists(out / f"{os.path.splitext(os.path.basename(p))[0]}.txt")
                 for p in bad)
