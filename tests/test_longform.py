"""Long recordings: the long-form test sets, chunk boundaries (silence split, overlapping
windows and the merge of their words), runaway-decoding guards, subtitle formats, and
bench/longform.py end to end on a tiny stand-in model."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import soundfile as sf

from mtp_jax.data import longform
from mtp_jax.decode import chunking, guards, segments
from mtp_jax.decode.segments import Segment
from train_helpers import ROOT, init_workdir, micro_config, write_synthetic_manifest


# ------------------------------------------------------------------ test-set builder
def _fake_data(root: pathlib.Path) -> pathlib.Path:
  """kathleen/test.jsonl (14 clips of 1-2 s at 16 kHz) and fsdd/test.jsonl (2 speakers x
  20 digits at 8 kHz), 16-bit-exact samples so FLAC round trips are lossless."""
  rng = np.random.default_rng(0)
  for name, rate, n in (("kathleen", 16000, 14), ("fsdd", 8000, 40)):
    (root / name / "audio").mkdir(parents=True)
    with open(root / name / "test.jsonl", "w") as f:
      for i in range(n):
        samples = int(rate * (1.0 + 0.07 * i if name == "kathleen" else 0.3 + 0.01 * i))
        x = np.round(rng.uniform(-0.3, 0.3, samples) * 32768) / 32768
        sf.write(root / name / "audio" / f"c{i:02d}.flac", x, rate, subtype="PCM_16")
        row = {"audio_filepath": f"audio/c{i:02d}.flac", "duration": samples / rate}
        if name == "kathleen":
          row["text"] = f"Sentence number {i}."
        else:
          row.update(text=longform.DIGITS[i % 10], speaker=["ann", "bob"][i // 20])
        f.write(json.dumps(row) + "\n")
  return root


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
  return _fake_data(tmp_path_factory.mktemp("longform_data"))


def test_join_keeps_every_clip_in_order_with_seeded_pauses(fake_data, tmp_path):
  s = longform.build_set("kathleen_60s", str(fake_data), str(tmp_path), seed=3)
  assert s["recordings"] == 1 and s["utterances"] == 14  # ~30 s: one recording
  (row,) = longform.load_recordings(s["manifest"])
  wav, rate = sf.read(row["audio_filepath"], dtype="float32")
  assert rate == 16000 and row["duration"] == pytest.approx(len(wav) / rate, abs=1e-3)
  src = [json.loads(l) for l in open(fake_data / "kathleen" / "test.jsonl")]
  assert row["text"] == " ".join(r["text"] for r in src)
  assert [u["text"] for u in row["utterances"]] == [r["text"] for r in src]
  prev_end = None
  for u, r in zip(row["utterances"], src):
    clip = sf.read(fake_data / "kathleen" / r["audio_filepath"], dtype="float32")[0]
    a = int(round(u["start"] * rate))
    np.testing.assert_array_equal(wav[a:a + len(clip)], clip)  # the clip, exactly, there
    assert u["end"] == pytest.approx(u["start"] + len(clip) / rate, abs=1e-3)
    assert u["source"] == "kathleen/" + r["audio_filepath"]
    if prev_end is not None:  # a pause of digital silence, 0.3-1.0 s
      assert 0.3 - 1e-3 <= u["start"] - prev_end <= 1.0 + 1e-3
      assert not np.any(wav[int(round(prev_end * rate)):a])
    prev_end = u["end"]


def test_build_is_reproducible_and_seeded(fake_data, tmp_path):
  a = longform.main(["--data", str(fake_data), "--out", str(tmp_path / "a")])
  b = longform.main(["--data", str(fake_data), "--out", str(tmp_path / "b")])
  c = longform.main(["--data", str(fake_data), "--out", str(tmp_path / "c"), "--seed", "1"])
  assert a == b == c == 0
  files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                 if p.is_file() and p.name != "build.json")
  assert len(files) > 5
  for f in files:
    assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
  assert ((tmp_path / "a" / "kathleen_60s.jsonl").read_text()
          != (tmp_path / "c" / "kathleen_60s.jsonl").read_text())
  build = json.loads((tmp_path / "a" / "build.json").read_text())
  assert [s["set"] for s in build["sets"]] == list(longform.TEST_SETS)


def test_fsdd_digit_strings(fake_data, tmp_path):
  s = longform.build_set("fsdd_digits", str(fake_data), str(tmp_path), seed=0)
  rows = longform.load_recordings(s["manifest"])
  src = {json.loads(l)["audio_filepath"]: json.loads(l)
         for l in open(fake_data / "fsdd" / "test.jsonl")}
  used = []
  for row in rows:
    assert 8 <= len(row["utterances"]) <= 12 and row["score"] == "digits"
    speakers = {src[u["source"].removeprefix("fsdd/")]["speaker"] for u in row["utterances"]}
    assert len(speakers) == 1  # one voice reads the number
    assert row["text"] == " ".join(u["text"] for u in row["utterances"])
    info = sf.info(row["audio_filepath"])
    assert info.samplerate == 16000  # resampled from 8 kHz
    last = row["utterances"][-1]
    assert info.duration == pytest.approx(last["end"], abs=1e-3)
    first = src[row["utterances"][0]["source"].removeprefix("fsdd/")]
    assert row["utterances"][0]["end"] == pytest.approx(first["duration"], abs=1e-3)
    used += [u["source"] for u in row["utterances"]]
  assert sorted(used) == sorted("fsdd/" + k for k in src)  # each digit exactly once
  assert used != ["fsdd/" + k for k in src]  # shuffled: not the manifest's order


def test_grouping_and_digit_string_lengths():
  groups = longform.group_by_duration([20.0] * 10, 60.0, pauses=[1.0] * 10)
  assert groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]  # 62 s, 62 s, 20 s joins the last
  assert longform.group_by_duration([20.0] * 5, 60.0) == [[0, 1, 2], [3, 4]]  # 40 s kept
  rng = np.random.default_rng(0)
  for n in (8, 12, 16, 24, 50, 97):
    lengths = longform.digit_string_lengths(n, rng)
    assert sum(lengths) == n and all(8 <= x <= 12 for x in lengths), (n, lengths)
  assert longform.digit_string_lengths(13, rng) == [13]


def test_training_windows_fit_their_length_and_keep_every_clip_in_order():
  rng = np.random.default_rng(1)
  durations = rng.uniform(1.0, 7.0, 200)
  pauses = rng.uniform(0.3, 1.0, 200)
  targets = rng.uniform(8.0, 28.0, 200)
  groups = longform.group_into_windows(durations, targets, pauses, start=3)
  assert [i for g in groups for i in g] == list(range(3, 200))
  for g, target in zip(groups, targets):
    total = sum(durations[i] for i in g) + sum(pauses[i] for i in g[1:])
    assert total <= target or len(g) == 1
    if g[-1] + 1 < 200 and g is not groups[-1]:  # closed because the next clip did not fit
      assert total + pauses[g[-1] + 1] + durations[g[-1] + 1] > target
  # A clip longer than its window is a window of its own, not dropped.
  assert longform.group_into_windows([30.0, 2.0, 2.0], [10.0, 10.0], [0.5] * 3) == [[0], [1, 2]]


def test_real_kathleen_recordings(shared_data, tmp_path):
  s = longform.build_set("kathleen_60s", str(shared_data), str(tmp_path), max_recordings=2)
  rows = longform.load_recordings(s["manifest"])
  src = [json.loads(l) for l in open(shared_data / "kathleen" / "test.jsonl")]
  n = sum(len(r["utterances"]) for r in rows)
  assert [u["text"] for r in rows for u in r["utterances"]] == [x["text"] for x in src[:n]]
  for r in rows:
    assert 60.0 <= r["duration"] <= 70.0
    assert sf.info(r["audio_filepath"]).duration == pytest.approx(r["duration"], abs=1e-3)


def test_scoring_over_whole_recordings():
  rows = [{"text": "four one five five five five one two three zero", "score": "digits"},
          {"text": "Gad, do I remember it.", "score": "words"}]
  w = longform.score_recordings(rows, ["415-555 1230", "gad do i remember it"])
  assert w["wer"] == 0.0 and w["num_ref_words"] == 15
  w = longform.score_recordings(rows, ["four one five five five five one two three oh", ""])
  assert w["substitutions"] == 0 and w["deletions"] == 5  # "oh" is a zero, not an error
  assert longform.score_text("4155551234", "words").startswith("four billion")


# ------------------------------------------------------------------ chunk boundaries
def _speechy(rng, seconds, rate=1000):
  return rng.uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)


def test_silence_chunks_stream_like_the_whole_and_cut_in_pauses():
  rate, rng = 1000, np.random.default_rng(1)
  parts, pauses, pos = [], [], 0
  for k in range(12):
    s = _speechy(rng, 3.0 + (k % 3))
    parts.append(s)
    pos += len(s)
    gap = int(0.4 * rate)
    parts.append(np.zeros(gap, np.float32))
    pauses.append((pos, pos + gap))
    pos += gap
  wav = np.concatenate(parts)
  # Speech runs of 3-5 s: a 6-s search window always holds a pause.
  whole = list(chunking.silence_chunks([wav], 10 * rate, rate, search_seconds=6.0))
  for size in (777, 5000, 30000):
    blocks = [wav[i:i + size] for i in range(0, len(wav), size)]
    streamed = list(chunking.silence_chunks(blocks, 10 * rate, rate, search_seconds=6.0))
    assert [(c.start, len(c.wav)) for c in streamed] == [(c.start, len(c.wav)) for c in whole]
  np.testing.assert_array_equal(np.concatenate([c.wav for c in whole]), wav)
  assert all(len(c.wav) <= 10 * rate for c in whole) and len(whole) >= 5
  for c in whole[1:]:  # every cut lies inside a pause, away from its edges
    assert any(a + 100 <= c.start <= b - 100 for a, b in pauses), c.start


def test_silence_cut_prefers_a_pause_to_a_stop_consonant():
  rate, rng = 1000, np.random.default_rng(2)
  wav = _speechy(rng, 14.0)
  wav[6000:6400] *= 0.01  # a quiet pause, 0.4 s
  wav[8500:8540] = 0.0    # a 40 ms closure inside a word: the single quietest frames
  smooth = chunking.split_at_silence(wav, 10 * rate, rate, search_seconds=5.0)
  assert 6000 < len(smooth[0]) < 6400
  raw = chunking.split_at_silence(wav, 10 * rate, rate, search_seconds=5.0, smooth_seconds=0)
  assert 8500 <= len(raw[0]) <= 8540  # the old rule: the quietest 20 ms, inside the word


def test_overlap_windows_cover_the_recording():
  wav = np.arange(35, dtype=np.float32)
  for size in (1, 4, 35):
    blocks = [wav[i:i + size] for i in range(0, len(wav), size)]
    chunks = list(chunking.overlap_chunks(blocks, window=10, overlap=3))
    assert [c.start for c in chunks] == [0, 7, 14, 21, 25]  # the last one ends at 35
    for c in chunks:
      np.testing.assert_array_equal(c.wav, wav[c.start:c.end])
      assert len(c.wav) == 10
  (short,) = chunking.overlap_chunks([wav[:6]], window=10, overlap=3)
  assert short.start == 0 and len(short.wav) == 6
  with pytest.raises(ValueError, match="overlap=10"):
    list(chunking.overlap_chunks([wav], window=10, overlap=10))


def test_merge_drops_the_words_cut_by_either_edge():
  truth = [f"w{i}" for i in range(20)]  # one word a second
  a = truth[:11] + ["garbleA"]            # window [0, 12): w11 cut by its end
  b = ["garbleB"] + truth[9:]             # window [8, 20): w8 cut by its start
  i, j = chunking.merge_words(a, b, (0, 12), (8, 20))
  assert a[:i] + b[j:] == truth
  m = chunking.OverlapMerger()
  segs = m.add(" ".join(a), 0, 12) + m.add(" ".join(b), 8, 20) + m.finish()
  assert " ".join(s.text for s in segs) == " ".join(truth)
  assert [(s.start, s.end) for s in segs] == [(0, 10), (10, 20)]  # cut mid-overlap
  # Case and punctuation do not hide an agreement; the later window's spelling wins.
  i, j = chunking.merge_words(["Hello,", "world.", "How"], ["world", "how", "are", "you"],
                              (0, 3), (1, 4))
  assert (i, j) == (1, 0)


def test_merge_keeps_the_window_that_did_not_lose_words():
  # The earlier window stopped after one sentence (a recognizer that gave up, a guard's
  # cut): the later window's words before the shared run are kept, not dropped.
  a = "now you understand".split()                                  # window [25, 55)
  b = [f"x{k}" for k in range(16)] + a + [f"y{k}" for k in range(10)]  # [33.4, 63.4)
  assert chunking.merge_words(a, b, (25, 55), (33.4, 63.4)) == (0, 0)
  # No shared word: the window with the denser overlap keeps all of it.
  many = [f"w{i}" for i in range(12)]
  assert chunking.merge_words(many, ["x"], (0, 12), (8, 20)) == (12, 0)
  assert chunking.merge_words(["x"], many, (0, 12), (8, 20)) == (1, 0)


def test_merge_without_agreement_cuts_mid_overlap_by_rank():
  a = [f"a{i}" for i in range(12)]
  b = [f"b{i}" for i in range(12)]
  i, j = chunking.merge_words(a, b, (0, 12), (8, 20))
  assert (i, j) == (10, 2)  # the middle of the overlap, 10 s, at one word a second
  assert chunking.merge_words(a, [], (0, 12), (8, 20)) == (12, 0)
  assert chunking.merge_words([], b, (0, 12), (8, 20)) == (0, 0)


# ------------------------------------------------------------------ guards
def test_repeated_ngram_cutoff():
  loop = "and then I said thank you. Thank you thank you, thank you! thank you and more"
  assert " ".join(guards.cut_repetitions(loop.split(), 8, 4)) == \
      "and then I said thank you. Thank you thank you, thank you!"
  words = "a b c a b c a b c a b c a b c x".split()
  assert guards.cut_repetitions(words, 8, 4) == words[:12]
  assert guards.cut_repetitions(words, 2, 4) == words  # trigram loops only
  phone = "five five five five one two".split()  # 4 in a row: allowed
  assert guards.cut_repetitions(phone, 8, 4) == phone
  assert guards.cut_repetitions(["the"] * 9, 8, 4) == ["the"] * 4
  g = guards.Guards(max_ngram=0)
  assert g.cut("no no no no no no") == ("no no no no no no", False)
  assert guards.Guards().cut("no no no no no no") == ("no no no no", True)


def test_token_cap():
  assert guards.token_cap(2.0, 15.0, 10) == 30
  assert guards.token_cap(0.1, 15.0, 10) == 10
  assert guards.token_cap(30.0, 0.0, 10) is None
  assert guards.Guards(tokens_per_second=4, min_tokens=2).cap(1.5) == 6
  with pytest.raises(ValueError, match="max_repeats=0"):
    guards.Guards(max_repeats=0)


# ------------------------------------------------------------------ formats
SEGS = [Segment(0.0, 2.5, "hello there"), Segment(2.5, 2.5, ""),
        Segment(3725.5, 3729.25, "a --> b\n\nc")]


def test_srt_vtt_txt_jsonl(tmp_path):
  assert segments.to_srt(SEGS) == ("1\n00:00:00,000 --> 00:00:02,500\nhello there\n\n"
                                   "2\n01:02:05,500 --> 01:02:09,250\na -> b c\n")
  assert segments.to_vtt(SEGS) == ("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nhello there\n\n"
                                   "01:02:05.500 --> 01:02:09.250\na -> b c\n")
  assert segments.to_txt(SEGS) == "hello there a --> b c\n"
  paths = segments.write_transcript(tmp_path / "x", SEGS, ["jsonl", "srt", "jsonl"])
  assert [pathlib.Path(p).name for p in paths] == ["x.jsonl", "x.srt"]
  rows = [json.loads(l) for l in open(tmp_path / "x.jsonl")]
  assert rows[1] == {"start": 3725.5, "end": 3729.25, "text": "a --> b\n\nc"}
  with pytest.raises(ValueError, match="'doc'"):
    segments.check_formats(["srt", "doc"])


# ------------------------------------------------------------------ the benchmark
def test_bench_runs_on_a_stand_in_model(fake_data, tmp_path):
  spec = importlib.util.spec_from_file_location("bench_longform", ROOT / "bench" / "longform.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  s = longform.build_set("kathleen_60s", str(fake_data), str(tmp_path / "lf"))
  c = micro_config(k=2)
  c.data.train_manifests = write_synthetic_manifest(tmp_path / "train", n=8)
  workdir = init_workdir(tmp_path / "run", c)
  out = tmp_path / "longform.json"
  assert bench.main(["--sets", s["manifest"], "--workdirs", str(workdir), "--peer_beams", "",
                     "--peer_chunked", "", "--in_process", "--per_utterance",
                     "--across_files", "--data", str(fake_data), "--out", str(out)]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert [r["system"] for r in rows] == [
      "ours:run:greedy:silence", "ours:run:greedy:silence:across", "ours:run:greedy:overlap",
      "ours:run:greedy:overlap:across", "ours:run:greedy:utterances"]
  for one, across in (rows[0:2], rows[2:4]):  # one recording: the same batches either way
    assert across["across_files"] and across["hyps"] == one["hyps"]
    assert across["calls_per_rec"] == one["calls_per_rec"]
  utts = rows.pop()
  assert utts["calls_per_rec"] >= 14  # 14 clips, each decoded on its own
  for r in rows:
    assert r["calls_reduction"] == pytest.approx(1.0) and r["speedup"] == pytest.approx(1.0)
    if utts["wer"] > 0:
      assert r["wer_vs_utterances"] == pytest.approx(r["wer"] / utts["wer"])
    assert r["recordings"] == 1 and r["errors"] == [] and len(r["hyps"]) == 1
    assert r["rtfx"] > 0 and r["peak_rss_mib"] >= r["rss_loaded_mib"] > 0
    assert r["calls_per_rec"] >= 3  # ~30 s at 12-s chunks: at least 3 chunks decoded
    assert r["wer"] == pytest.approx(longform.score_recordings(
        longform.load_recordings(s["manifest"]), r["hyps"])["wer"])
