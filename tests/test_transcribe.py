"""Transcribing files and arrays: resampling, long audio split at silences or refused."""
import json

import jax
import numpy as np
import pytest
import soundfile as sf

from mtp_jax.decode import api
from mtp_jax.decode.transcribe import LongAudioError, Transcriber, split_at_silence
from mtp_jax.train.loop import train_and_evaluate
from train_helpers import whisper_micro_config
from train_helpers import write_synthetic_manifest


def test_split_at_silence_cuts_in_the_gap():
  rate = 1000
  rng = np.random.default_rng(0)
  wav = rng.standard_normal(25_000).astype(np.float32)
  wav[8_200:8_600] = 0.0  # a gap inside the search window of the first 10-s chunk
  wav[17_100:17_300] = 0.0
  chunks = split_at_silence(wav, 10_000, rate, search_seconds=3.0)
  assert [len(c) for c in chunks][0] in range(8_200, 8_600)
  assert sum(len(c) for c in chunks) == len(wav)
  assert all(len(c) <= 10_000 for c in chunks)
  np.testing.assert_array_equal(np.concatenate(chunks), wav)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp("transcribe")
  c = whisper_micro_config(k=2)
  c.data.update(train_manifests=write_synthetic_manifest(root / "data", n=8),
                batching="random", batch_size=4, batch_size_multiple=1)
  c.train.update(steps=1, warmup_steps=0, log_every=1, checkpoint_every=1)
  train_and_evaluate(c, str(root / "run"), devices=jax.devices()[:1])
  return root


def test_transcribe_files_and_arrays(workdir):
  tr = Transcriber(workdir / "run", batch_size=2, max_new_tokens=6)
  entries = [json.loads(l) for l in open(workdir / "data" / "train.jsonl")][:3]
  paths = [str(workdir / "data" / e["audio_filepath"]) for e in entries]
  texts = tr(paths)
  assert len(texts) == 3
  for p, text in zip(paths, texts):  # the same as decoding the batch directly
    wav = sf.read(p, dtype="float32")[0]
    res = api.decode(tr.model, tr.params, wav[None], np.asarray([len(wav)], np.int32),
                     strategy="greedy", max_new_tokens=6)
    assert text == tr.tokenizer.decode(np.asarray(res.tokens[0, :int(res.lengths[0])]).tolist())
  wav = sf.read(paths[0], dtype="float32")[0]
  import soxr  # pylint: disable=import-outside-toplevel
  at8k = soxr.resample(wav, 16000, 8000)
  assert tr([at8k], sample_rate=8000)[0] == tr([soxr.resample(at8k, 8000, 16000)],
                                               sample_rate=16000)[0]
  with pytest.raises(ValueError, match="sample_rate"):
    tr([wav])


def test_long_audio_is_split_or_refused(workdir, tmp_path):
  tr = Transcriber(workdir / "run", batch_size=2, max_new_tokens=4, max_seconds=0.5)
  long = np.concatenate([np.sin(np.arange(6000) / 5.0), np.zeros(800),
                         np.sin(np.arange(6000) / 7.0)]).astype(np.float32) * 0.3
  path = tmp_path / "long.wav"
  sf.write(path, long, 16000)
  assert len(split_at_silence(long, tr.max_samples, 16000)) == 2
  assert len(tr([str(path)])) == 1
  strict = Transcriber(workdir / "run", max_seconds=0.5, long_audio="error")
  with pytest.raises(LongAudioError, match="long.wav"):
    strict([str(path)])
