"""Transcribing files and arrays: resampling, long audio split at silences or in overlapping
windows (or refused), timed segments, chunks batched, guards, errors per input."""
import io
import json

import jax
import numpy as np
import pytest
import soundfile as sf

from mtp_jax.data.errors import BadInputError
from mtp_jax.decode import api, chunking
from mtp_jax.decode.guards import Guards, cut_repetitions
from mtp_jax.decode.segments import Segment
from mtp_jax.decode.transcribe import (LongAudioError, ProgressPrinter, Transcriber,
                                       TranscribeError, split_at_silence)
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


NO_GUARDS = Guards(tokens_per_second=0, max_ngram=0)


def test_transcribe_files_and_arrays(workdir):
  tr = Transcriber(workdir / "run", batch_size=2, max_new_tokens=6, guards=NO_GUARDS)
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
  # The untrained model loops ("echo echo echo ..."): the default guards cut the loop.
  guarded = Transcriber(workdir / "run", batch_size=2, max_new_tokens=6)(paths)
  assert guarded == [" ".join(cut_repetitions(t.split(), 8, 4)) for t in texts]


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


def _recording(seconds: float, seed: int = 0) -> np.ndarray:
  """Tone bursts of 0.3-0.9 s with 0.1-0.3 s pauses, 16 kHz."""
  rng = np.random.default_rng(seed)
  parts, n = [], 0
  while n < seconds * 16000:
    k = int(rng.uniform(0.3, 0.9) * 16000)
    parts.append(0.3 * np.sin(np.arange(k) * rng.uniform(0.05, 0.3)))
    parts.append(np.zeros(int(rng.uniform(0.1, 0.3) * 16000)))
    n += len(parts[-2]) + len(parts[-1])
  return np.concatenate(parts)[:int(seconds * 16000)].astype(np.float32)


class _Spy:
  """Wraps a recognizer, recording the chunks of each call."""

  def __init__(self, inner):
    self.inner, self.calls = inner, []
    self.sample_rate, self.max_seconds = inner.sample_rate, inner.max_seconds
    self.batch_size = inner.batch_size

  def recognize(self, chunks, caps):
    self.calls.append([np.array(c) for c in chunks])
    return self.inner.recognize(chunks, caps)


def _decode_one(tr, wav, max_new_tokens):
  res = api.decode(tr.model, tr.params, wav[None], np.asarray([len(wav)], np.int32),
                   strategy="greedy", max_new_tokens=max_new_tokens)
  return tr.tokenizer.decode(np.asarray(res.tokens[0, :int(res.lengths[0])]).tolist())


def test_silence_segments_have_times_and_a_recording_decodes_as_one_batch(workdir):
  tr = Transcriber(workdir / "run", batch_size=16, max_new_tokens=5, guards=NO_GUARDS)
  spy = tr.recognizer = _Spy(tr.recognizer)
  wav = _recording(6.0)
  out = io.StringIO()
  (t,) = tr.transcribe_many([wav], 16000, on_progress=ProgressPrinter(out, min_seconds=0))
  chunks = list(chunking.silence_chunks([wav], tr.max_samples, 16000))
  assert all(len(c.wav) >= tr.max_samples // 2 for c in chunks[:-1])
  loud = [c for c in chunks if np.any(c.wav)]  # a silent tail is not decoded
  assert 5 <= len(loud) <= 16 and len(spy.calls) == 1  # all of them in one batch
  assert [len(c) for c in spy.calls[0]] == [len(c.wav) for c in loud]
  texts = [_decode_one(tr, c.wav, 5) for c in loud]  # one by one: the same words
  assert t.segments == [Segment(c.start / 16000, c.end / 16000, x)
                        for c, x in zip(loud, texts) if x]
  assert t.text == " ".join(x for x in texts if x) and t.duration == pytest.approx(6.0)
  assert t.stats["chunks"] == len(chunks) and t.stats["decoded_chunks"] == len(loud)
  assert t.stats["decoder_calls"] >= len(loud)
  assert "<array 0>: [####################] 0:00:06 / 0:00:06 (100%)" in out.getvalue()
  # A batch smaller than the recording: several calls, the same text.
  small = Transcriber(workdir / "run", batch_size=2, max_new_tokens=5, guards=NO_GUARDS)
  small.recognizer = _Spy(small.recognizer)
  assert small.transcribe_many([wav], 16000)[0].segments == t.segments
  assert [len(c) for c in small.recognizer.calls[:-1]] == [2] * (len(small.recognizer.calls) - 1)


def test_overlap_windows_are_merged(workdir):
  tr = Transcriber(workdir / "run", batch_size=16, max_new_tokens=5, guards=NO_GUARDS,
                   segmenter="overlap", overlap_seconds=0.4)
  spy = tr.recognizer = _Spy(tr.recognizer)
  wav = _recording(5.0, seed=1)
  (t,) = tr.transcribe_many([wav], 16000)
  windows = list(chunking.overlap_chunks([wav], tr.max_samples, int(0.4 * 16000)))
  assert [len(c) for c in spy.calls[0]] == [len(w.wav) for w in windows]
  merger, want = chunking.OverlapMerger(), []
  for w in windows:
    want += merger.add(_decode_one(tr, w.wav, 5), w.start / 16000, w.end / 16000)
  want = [s for s in want + merger.finish() if s.text]
  assert t.segments == want and t.text == " ".join(s.text for s in want)
  cuts = [(a.end + b.start) / 2 for a, b in zip(windows, windows[1:])]
  assert {s.end for s in t.segments[:-1]} <= {c / 16000 for c in cuts}  # mid-overlap
  with pytest.raises(ValueError, match="overlap=1.2 s"):
    Transcriber(workdir / "run", segmenter="overlap", overlap_seconds=1.2)


def test_token_cap_and_repetition_cut(workdir):
  wav = _recording(4.0, seed=2)
  capped = Transcriber(workdir / "run", guards=Guards(tokens_per_second=2, min_tokens=1,
                                                      max_ngram=0))
  (t,) = capped.transcribe_many([wav], 16000)
  n = t.stats["decoded_chunks"]
  assert n >= 3 and t.stats["capped_chunks"] == n  # the looping model hits every cap
  assert t.stats["tokens"] <= 3 * n  # 1.2-s chunks: ceil(2.4) = 3 tokens each
  assert all(len(s.text.split()) <= 3 for s in t.segments)
  (g,) = Transcriber(workdir / "run").transcribe_many([wav], 16000)  # default guards
  assert g.stats["repetition_cuts"] >= 1
  assert all(cut_repetitions(s.text.split(), 8, 4) == s.text.split() for s in g.segments)


def test_errors_stay_with_their_input(workdir, tmp_path):
  tr = Transcriber(workdir / "run", batch_size=4, max_new_tokens=4, guards=NO_GUARDS)
  good = tmp_path / "good.wav"
  sf.write(good, _recording(2.0), 16000)
  nan = _recording(1.0)
  nan[5] = np.nan
  missing = str(tmp_path / "missing.flac")
  res = tr.transcribe_many([str(good), missing, nan, np.zeros(16000, np.float32),
                            _recording(2.0)], 16000)
  assert [r.ok for r in res] == [True, False, False, True, True]
  assert res[1].error == f"audio file not found: {missing}"
  assert res[2].error == "<array 2>: the waveform has NaN/inf samples"
  assert res[0].text == tr([str(good)])[0] == res[4].text  # the same audio
  assert res[3].text == "" and res[3].stats["decoded_chunks"] == 0  # silence: not decoded
  with pytest.raises(BadInputError, match="missing.flac"):
    tr([str(good), missing])
  with pytest.raises(TranscribeError, match="needs a model trained with a CTC head"):
    Transcriber(workdir / "run", strategy="ctc")
