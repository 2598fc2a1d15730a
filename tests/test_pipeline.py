"""Tests of the grain pipeline: batch contract, resumption, processes, bad inputs."""
import json
import re

import numpy as np
import pytest
import soundfile

from mtp_jax import text as text_lib
from mtp_jax.data import audio
from mtp_jax.data import pipeline
from mtp_jax.data import tokenizer as tok_lib
from mtp_jax.data.config import data_defaults
from mtp_jax.data.errors import BadInputError

_WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
NUM_GOOD = 16


def _wave(seconds, rate, seed):
  rng = np.random.default_rng(seed)
  return (0.3 * rng.uniform(-1, 1, int(seconds * rate))).astype(np.float32)


def _record(path, seconds, text, rate=16000):
  return {"audio_filepath": path, "duration": round(seconds, 4), "text": text}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """NUM_GOOD short utterances (some 8 kHz wav), their manifest and a tokenizer."""
  root = tmp_path_factory.mktemp("corpus")
  (root / "audio").mkdir()
  rng = np.random.default_rng(0)
  records = []
  for i in range(NUM_GOOD):
    seconds = float(rng.uniform(0.2, 1.2))
    rate, ext = (8000, "wav") if i % 4 == 0 else (16000, "flac")
    words = rng.choice(_WORDS, size=rng.integers(1, 7))
    name = f"audio/utt{i:02d}.{ext}"
    soundfile.write(root / name, _wave(seconds, rate, i), rate)
    text = " ".join(words).capitalize() + rng.choice([".", "!", ""])
    records.append(_record(name, seconds, text))
  manifest = root / "train.jsonl"
  manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
  tok = tok_lib.train_tokenizer_from_texts(
      [r["text"] for r in records], root / "tok", vocab_size=40)
  return {"root": root, "manifest": str(manifest), "records": records, "tok": tok}


def _cfg(manifest, **overrides):
  cfg = data_defaults()
  cfg.train_manifests = str(manifest)
  cfg.batch_size_multiple = 1
  cfg.num_duration_bins = 3
  cfg.num_token_bins = 2
  cfg.audio_seconds_per_batch = 2.5
  cfg.tokens_per_batch = 256
  cfg.max_duration = 2.0
  cfg.num_threads = 2
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


def _train_iter(corpus, manifest=None, seed=0, pi=0, pc=1, **overrides):
  cfg = _cfg(manifest or corpus["manifest"], **overrides)
  return pipeline.make_train_iterator(cfg, corpus["tok"], seed=seed,
                                      process_index=pi, process_count=pc)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_contract(corpus):
  it = _train_iter(corpus)
  by_id = {r["audio_filepath"].split("/")[1].split(".")[0]: r
           for r in corpus["records"]}
  shapes = set()
  for batch in _take(it, it.batches_per_epoch):
    assert set(batch) == {"audio", "audio_len", "text", "text_len", "utt_id",
                          "ref_text"}
    b, s = batch["audio"].shape
    l = batch["text"].shape[1]
    shapes.add((b, s, l))
    assert batch["audio"].dtype == np.float32 and s % 1280 == 0
    assert batch["text"].dtype == np.int32 and l % 8 == 0
    assert batch["audio_len"].dtype == batch["text_len"].dtype == np.int32
    assert batch["audio_len"].shape == batch["text_len"].shape == (b,)
    assert batch["utt_id"].dtype.kind == batch["ref_text"].dtype.kind == "U"
    for row in range(b):
      n, t = batch["audio_len"][row], batch["text_len"][row]
      assert 0 < n <= s and 0 < t < l  # Room for an eos after the text.
      assert not batch["audio"][row, n:].any() and not batch["text"][row, t:].any()
      assert np.abs(batch["audio"][row]).max() <= 1.0
      ids = batch["text"][row, :t]
      assert not np.isin(ids, [tok_lib.BOS_ID, tok_lib.EOS_ID, tok_lib.PAD_ID]).any()
      rec = by_id[batch["utt_id"][row]]
      assert batch["ref_text"][row] == rec["text"]
      assert corpus["tok"].decode(ids) == text_lib.normalize(rec["text"])
      wav = audio.load_audio(str(corpus["root"] / rec["audio_filepath"]))
      np.testing.assert_array_equal(batch["audio"][row, :n], wav)
  assert shapes <= set(it.batch_shapes)
  assert len(it.batch_shapes) == len(it.buckets) > 1


def test_epochs_cover_everything_and_reshuffle(corpus):
  it = _train_iter(corpus)
  n = it.batches_per_epoch
  epochs = [_take(it, n) for _ in range(2)]
  assert it.epoch == 1
  ids = [[u for b in e for u in b["utt_id"]] for e in epochs]
  assert set(ids[0]) == set(ids[1]) == {f"utt{i:02d}" for i in range(NUM_GOOD)}
  assert ids[0] != ids[1]
  again = _train_iter(corpus)
  _assert_batches_equal(_take(again, n), epochs[0])  # Same seed, same data.


def test_state_restore_mid_epoch_yields_same_remaining_batches(corpus):
  it = _train_iter(corpus, seed=7)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))  # Must survive JSON.
  expected = _take(it, it.batches_per_epoch + 2)   # Crosses an epoch boundary.
  resumed = _train_iter(corpus, seed=7)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, len(expected)), expected)
  with pytest.raises(ValueError, match="fingerprint"):
    _train_iter(corpus, seed=8).set_state(state)


@pytest.mark.slow
def test_state_restore_with_worker_processes(corpus):
  it = _train_iter(corpus, seed=3, num_workers=2)
  _take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  expected = _take(it, 4)
  it.close()
  resumed = _train_iter(corpus, seed=3, num_workers=2)
  resumed.set_state(state)
  got = _take(resumed, 4)
  resumed.close()
  _assert_batches_equal(got, expected)
  in_process = _train_iter(corpus, seed=3)
  in_process.set_state({"grain": {"next_index": 2},
                        "fingerprint": state["fingerprint"]})
  _assert_batches_equal(_take(in_process, 4), expected)


def test_processes_split_each_global_batch(corpus):
  one = _train_iter(corpus, seed=1, pc=1, batch_size_multiple=2)
  halves = [_train_iter(corpus, seed=1, pi=p, pc=2) for p in range(2)]
  assert all(b.batch_size % 2 == 0 for b in one.buckets)
  for _ in range(one.batches_per_epoch):
    full, a, b = next(one), next(halves[0]), next(halves[1])
    assert a["audio"].shape == b["audio"].shape  # Same shape on every process.
    for k in full:
      np.testing.assert_array_equal(full[k], np.concatenate([a[k], b[k]]))


def test_random_batching_has_one_shape(corpus):
  cfg = _cfg(corpus["manifest"], batch_size=4)
  it = pipeline.make_random_iterator(cfg, corpus["tok"], seed=0,
                                     process_index=0, process_count=1)
  shapes = {(b["audio"].shape, b["text"].shape) for b in _take(it, 6)}
  assert len(shapes) == 1 and len(it.batch_shapes) == 1
  assert next(iter(shapes))[0][0] == 4
  assert cfg.batching == "2d"  # The caller's config is left alone.


def test_eval_batches(corpus):
  cfg = _cfg(corpus["manifest"])
  ev = pipeline.make_eval_batches(corpus["manifest"], corpus["tok"], cfg,
                                  batch_size=5, process_index=0, process_count=1)
  batches = list(ev)
  assert len(batches) == len(ev) == 4  # 16 = 5 + 5 + 5 + 1.
  ids = [u for b in batches for u in b["utt_id"]]
  assert ids == [f"utt{i:02d}" for i in range(NUM_GOOD)] + [""] * 4
  last = batches[-1]
  assert last["audio"].shape[0] == 5
  assert (last["audio_len"][1:] == 0).all() and (last["text_len"][1:] == 0).all()
  assert not last["audio"][1:].any() and list(last["ref_text"][1:]) == [""] * 4
  for b in batches:
    assert b["audio"].shape[1] % 32000 == 0 and b["text"].shape[1] % 32 == 0
  _assert_batches_equal(list(ev), batches)  # Re-iterable and deterministic.
  halves = [pipeline.make_eval_batches(corpus["manifest"], corpus["tok"], cfg,
                                       batch_size=6, process_index=p,
                                       process_count=2) for p in range(2)]
  ids = [u for a, b in zip(*halves) for u in list(a["utt_id"]) + list(b["utt_id"])]
  assert ids[:NUM_GOOD] == [f"utt{i:02d}" for i in range(NUM_GOOD)]


# --- bad inputs --------------------------------------------------------------

def _bad_case(root, case):
  """Writes the bad utterance of `case`; returns (manifest line, reason regexp)."""
  wav = _wave(0.5, 16000, 99)
  path = f"audio/bad_{case}.flac"
  full = root / path
  if case == "malformed_json":
    return '{"audio_filepath": "x.flac", "duration": 1.0, "text": "oops"', "invalid JSON"
  if case == "non_text_transcript":
    soundfile.write(full, wav, 16000)
    return json.dumps({"audio_filepath": path, "duration": 0.5, "text": 42}), "'text'"
  if case == "empty_transcript":
    soundfile.write(full, wav, 16000)
    return json.dumps(_record(path, 0.5, " ?! ")), "empty transcript"
  if case == "too_many_tokens":
    soundfile.write(full, wav, 16000)
    return json.dumps(_record(path, 0.5, "alpha " * 200)), "more than max_text_tokens"
  if case == "missing_file":
    return json.dumps(_record("audio/nowhere.flac", 0.5, "alpha")), "not found"
  if case == "corrupt_file":
    full.write_bytes(b"this is no flac" * 50)
    return json.dumps(_record(path, 0.5, "alpha")), "corrupt"
  if case == "zero_length":
    path = "audio/bad_zero.wav"
    soundfile.write(root / path, np.zeros(0, np.float32), 16000)
    return json.dumps(_record(path, 0.0, "alpha")), "zero-length|not positive"
  if case == "nan_samples":
    path = "audio/bad_nan.wav"
    nan = wav.copy()
    nan[1000] = np.nan
    soundfile.write(root / path, nan, 16000, subtype="FLOAT")
    return json.dumps(_record(path, 0.5, "alpha")), "NaN/inf"
  if case == "truncated_flac":
    soundfile.write(full, _wave(1.5, 16000, 5), 16000)
    data = full.read_bytes()
    full.write_bytes(data[:len(data) // 2])
    return json.dumps(_record(path, 1.5, "alpha")), "cannot decode"
  if case == "duration_mismatch":
    soundfile.write(full, wav, 16000)
    return json.dumps(_record(path, 1.5, "alpha")), "far from the real duration"
  if case == "too_long":
    soundfile.write(full, _wave(2.6, 16000, 6), 16000)
    return json.dumps(_record(path, 2.6, "alpha")), "longer than the largest bucket"
  if case == "too_short":
    soundfile.write(full, _wave(0.05, 16000, 7), 16000)
    return json.dumps(_record(path, 0.05, "alpha")), "shorter than min_duration"
  raise ValueError(case)


BAD_CASES = ["malformed_json", "non_text_transcript", "empty_transcript",
             "too_many_tokens", "missing_file", "corrupt_file", "zero_length",
             "nan_samples", "truncated_flac", "duration_mismatch", "too_long",
             "too_short"]
DECODE_TIME = {"nan_samples", "truncated_flac"}


@pytest.fixture
def bad_manifest(corpus, tmp_path, request):
  """The corpus with one bad line inserted as line 4."""
  case = request.param
  root = corpus["root"]
  line, reason = _bad_case(root, case)
  lines = [json.dumps(r) for r in corpus["records"]]
  lines.insert(3, line)
  manifest = root / f"bad_{case}.jsonl"
  manifest.write_text("\n".join(lines) + "\n")
  return case, str(manifest), reason


def _all_ids(batches):
  return {u for b in batches for u in b["utt_id"] if u}


@pytest.mark.parametrize("bad_manifest", BAD_CASES, indirect=True)
def test_bad_input_skip(corpus, bad_manifest):
  case, manifest, reason = bad_manifest
  it = _train_iter(corpus, manifest=manifest, bad_input_policy="skip",
                   max_text_tokens=64)
  batches = _take(it, it.batches_per_epoch)
  assert _all_ids(batches) == {f"utt{i:02d}" for i in range(NUM_GOOD)}
  report = it.bad_input_report()
  assert report["num_skipped"] >= 1
  records = report["prepared"] + [r for v in report["epochs"].values() for r in v]
  assert {(r["manifest"], r["line"]) for r in records} == {(manifest, 4)}
  assert all(re.search(reason, r["reason"]) for r in records)
  if case in DECODE_TIME:  # Found while decoding, in epoch 0; row left empty.
    assert report["prepared"] == [] and list(report["epochs"]) == ["0"]
    assert any((b["audio_len"] == 0).any() for b in batches)
  else:
    assert report["epochs"] == {}
  ev = pipeline.make_eval_batches(manifest, corpus["tok"], _cfg(
      manifest, max_text_tokens=64), batch_size=8, process_index=0,
                                  process_count=1)
  assert _all_ids(list(ev)) == {f"utt{i:02d}" for i in range(NUM_GOOD)}
  assert ev.bad_input_report()["num_skipped"] == 1


@pytest.mark.parametrize("bad_manifest", BAD_CASES, indirect=True)
def test_bad_input_error(corpus, bad_manifest):
  case, manifest, reason = bad_manifest
  with pytest.raises(BadInputError, match=reason) as info:
    it = _train_iter(corpus, manifest=manifest, bad_input_policy="error",
                     max_text_tokens=64)
    assert case in DECODE_TIME  # Others fail while building.
    _take(it, it.batches_per_epoch)
  assert str(info.value).startswith(f"{manifest}:4: ")
  assert (info.value.manifest, info.value.line) == (manifest, 4)


def test_no_usable_data(corpus, tmp_path):
  m = tmp_path / "empty.jsonl"
  m.write_text(json.dumps(_record("nowhere.flac", 1.0, "alpha")) + "\n")
  with pytest.raises(ValueError, match="no usable utterance"):
    _train_iter(corpus, manifest=str(m))
  with pytest.raises(ValueError, match="no manifest"):
    _train_iter(corpus, manifest=" , ")
  with pytest.raises(ValueError, match="bad_input_policy"):
    _train_iter(corpus, bad_input_policy="ignore")


@pytest.mark.parametrize("bad_manifest", ["nan_samples"], indirect=True)
def test_read_failure_is_read_counted_and_logged_once(corpus, bad_manifest, monkeypatch,
                                                     caplog):
  _, manifest, _ = bad_manifest
  bad_path = str(corpus["root"] / "audio" / "bad_nan.wav")
  reads = []
  load = pipeline.audio_lib.load_audio

  def counting_load(path, **kw):
    reads.append(path)
    return load(path, **kw)

  monkeypatch.setattr(pipeline.audio_lib, "load_audio", counting_load)
  it = _train_iter(corpus, manifest=manifest, max_text_tokens=64, num_threads=1)
  with caplog.at_level("WARNING", logger=pipeline.__name__):
    _take(it, 3 * it.batches_per_epoch)
  assert it.epoch == 2
  report = it.bad_input_report()
  assert report["num_skipped"] == 1 and list(report["epochs"]) == ["0"]
  assert [(r["line"], r["stage"]) for r in report["rows"]] == [(4, "decode")]
  assert reads.count(bad_path) == 1  # not re-read in later epochs
  assert sum("skipping bad input" in r.message for r in caplog.records) == 1
  ev = pipeline.make_eval_batches(manifest, corpus["tok"], _cfg(manifest, max_text_tokens=64),
                                  batch_size=8, process_index=0, process_count=1)
  list(ev), list(ev)  # iterated twice (e.g. calibration, then decoding)
  assert ev.bad_input_report()["num_skipped"] == 1
