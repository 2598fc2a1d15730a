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
