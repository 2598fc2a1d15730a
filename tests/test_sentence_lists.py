"""Synthesis sentences never include a held-out test transcript."""
import json

import pytest

from mtp_jax.synth import sentence_lists


def test_held_out_texts_are_removed(tmp_path):
  text = tmp_path / "text"
  text.mkdir()
  (text / "ljspeech_sentences.txt").write_text(
      "A sentence that is long enough.\nshort\nGad, do I remember it\n")
  (text / "harvard_sentences.txt").write_text("The birch canoe slid on the smooth planks.\n")
  (text / "arctic_prompts.tsv").write_text("arctic_a0001\tAuthor of the danger trail.\n"
                                           "arctic_b0001\tGad, do I remember it.\n")
  (tmp_path / "kathleen").mkdir()
  (tmp_path / "kathleen" / "test.jsonl").write_text(json.dumps(
      {"audio_filepath": "a.flac", "duration": 1.0, "text": "Gad, do I remember it."}) + "\n")
  got = sentence_lists.sentences(tmp_path)
  assert got == ["A sentence that is long enough.", "The birch canoe slid on the smooth planks.",
                 "Author of the danger trail."]


def test_exclude_manifests_drops_texts_a_training_corpus_used(tmp_path):
  text = tmp_path / "text"
  text.mkdir()
  (text / "ljspeech_sentences.txt").write_text(
      "A sentence that is long enough.\nAnother sentence, unseen so far.\n")
  (text / "harvard_sentences.txt").write_text("")
  (text / "arctic_prompts.tsv").write_text("")
  used = tmp_path / "synth" / "train.jsonl"
  used.parent.mkdir()
  used.write_text(json.dumps({"audio_filepath": "a.flac", "duration": 1.0,
                              "text": "a sentence that is LONG enough"}) + "\n")
  assert sentence_lists.sentences(tmp_path, exclude_manifests=[used]) == [
      "Another sentence, unseen so far."]
  # A misspelt path is an error, not a silently empty exclusion.
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    sentence_lists.sentences(tmp_path, exclude_manifests=[tmp_path / "missing.jsonl"])
