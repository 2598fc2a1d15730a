"""Synthesis sentences never include a held-out test transcript."""
import json

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
