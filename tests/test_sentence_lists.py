"""Synthesis sentences never include a held-out test transcript."""
import json

import pytest

from mtp_jax.synth import sentence_lists


def _text_dir(root, ljspeech="", harvard="", arctic=""):
  """The three sentence lists of ../shared/data/text, under `root`/text."""
  text = root / "text"
  text.mkdir()
  (text / "ljspeech_sentences.txt").write_text(ljspeech)
  (text / "harvard_sentences.txt").write_text(harvard)
  (text / "arctic_prompts.tsv").write_text(arctic)


def _manifest(path, *texts):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps({"audio_filepath": "a.flac", "duration": 1.0, "text": t})
                          + "\n" for t in texts))
  return path


def test_held_out_texts_are_removed(tmp_path):
  _text_dir(tmp_path, ljspeech="A sentence that is long enough.\nshort\nGad, do I remember it\n",
            harvard="The birch canoe slid on the smooth planks.\n",
            arctic="arctic_a0001\tAuthor of the danger trail.\n"
                   "arctic_b0001\tGad, do I remember it.\n")
  _manifest(tmp_path / "kathleen" / "test.jsonl", "Gad, do I remember it.")
  got = sentence_lists.sentences(tmp_path)
  assert got == ["A sentence that is long enough.", "The birch canoe slid on the smooth planks.",
                 "Author of the danger trail."]


def test_exclude_manifests_drops_texts_a_training_corpus_used(tmp_path):
  _text_dir(tmp_path, ljspeech="A sentence that is long enough.\nAnother sentence, unseen so far.\n")
  used = _manifest(tmp_path / "synth" / "train.jsonl", "a sentence that is LONG enough")
  assert sentence_lists.sentences(tmp_path, exclude_manifests=[used]) == [
      "Another sentence, unseen so far."]
  # A misspelt path is an error, not a silently empty exclusion.
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    sentence_lists.sentences(tmp_path, exclude_manifests=[tmp_path / "missing.jsonl"])


def test_short_texts_are_word_runs_without_held_out_texts():
  sents = ["Zero, said the man.", "Go west; stop here.", "One two three four five."]
  held = {"zero", "go", "stop"}
  got = sentence_lists.short_texts(sents, 400, seed=3, held_out=held)
  assert len(got) == 400
  assert not set(got) & held
  runs = set()
  for s in sents:  # every run of 1-3 consecutive normalized words
    ws = s.lower().replace(",", "").replace(";", "").replace(".", "").split()
    runs |= {" ".join(ws[i:i + n]) for n in (1, 2, 3) for i in range(len(ws) - n + 1)}
  assert set(got) <= runs
  counts = [sum(len(t.split()) == n for t in got) for n in (1, 2, 3)]
  assert counts[0] > counts[1] > counts[2] > 0  # P = 0.5 / 0.3 / 0.2
  assert sentence_lists.short_texts(sents, 400, seed=3, held_out=held) == got
  assert sentence_lists.short_texts(sents, 400, seed=4, held_out=held) != got
  with pytest.raises(ValueError, match="held-out"):
    sentence_lists.short_texts(["Go."], 5, held_out={"go"})
