"""Tests of the SentencePiece tokenizer wrapper."""
import json
import pickle

import numpy as np
import pytest

from mtp_jax import text
from mtp_jax.data import tokenizer as tok_lib
from mtp_jax.data.config import data_defaults

_WORDS = ("the quick brown fox jumps over lazy dog she sells sea shells by "
          "shore don't o'clock seven cats eleven dogs speech model").split()


def _corpus(n=300, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    words = rng.choice(_WORDS, size=rng.integers(3, 10))
    out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
  return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return tok_lib.train_tokenizer_from_texts(
      _corpus(), tmp_path_factory.mktemp("tok"), vocab_size=64)


def test_special_ids(trained):
  assert (tok_lib.PAD_ID, tok_lib.BOS_ID, tok_lib.EOS_ID, tok_lib.UNK_ID) == (0, 1, 2, 3)
  assert [trained.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
  assert trained.vocab_size <= 64


@pytest.mark.parametrize("s", ["The lazy dog, by the shore!",
                               "Don't jump at seven o'clock...",
                               "she sells sea shells"])
def test_round_trip(trained, s):
  ids = trained.encode(s)
  assert ids and all(i > tok_lib.UNK_ID for i in ids)  # No bos/eos/unk.
  assert trained.decode(ids) == text.normalize(s)


def test_decode_stops_at_eos_and_skips_pad_bos(trained):
  ids = trained.encode("quick fox")
  noisy = [tok_lib.BOS_ID] + ids + [tok_lib.EOS_ID] + trained.encode("dog")
  assert trained.decode(noisy) == "quick fox"
  assert trained.decode(np.array(ids + [tok_lib.PAD_ID] * 5)) == "quick fox"
  assert trained.decode([]) == ""


def test_load_and_pickle(trained, tmp_path):
  by_dir = tok_lib.Tokenizer.load(trained.path.rsplit("/", 1)[0])
  by_file = tok_lib.Tokenizer.load(trained.path)
  clone = pickle.loads(pickle.dumps(trained))
  s = "The brown fox."
  assert by_dir.encode(s) == by_file.encode(s) == clone.encode(s) == trained.encode(s)
  with pytest.raises(FileNotFoundError):
    tok_lib.Tokenizer.load(tmp_path / "nothing.model")


def test_bpe_and_tiny_corpus(tmp_path):
  tok = tok_lib.train_tokenizer_from_texts(["hello world", "a cat"], tmp_path,
                                           vocab_size=256, model_type="bpe")
  assert tok.vocab_size < 256  # Soft limit: a tiny corpus does not fail.
  assert tok.decode(tok.encode("Hello, cat!")) == "hello cat"


def test_numbers_to_words_is_remembered(tmp_path):
  tok = tok_lib.train_tokenizer_from_texts(
      ["I have 2 cats", "ten dogs and 3 birds"], tmp_path, vocab_size=64,
      numbers_to_words=True)
  again = tok_lib.Tokenizer.load(tmp_path)
  assert again.numbers_to_words
  assert again.decode(again.encode("2 cats")) == "two cats"


def test_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="vocab_size must be at least"):
    tok_lib.train_tokenizer_from_texts(_corpus(20), tmp_path, vocab_size=8)
  with pytest.raises(ValueError, match="no non-empty transcript"):
    tok_lib.train_tokenizer_from_texts(["...", " "], tmp_path)
  with pytest.raises(ValueError, match="unigram or bpe"):
    tok_lib.train_tokenizer_from_texts(_corpus(20), tmp_path, model_type="word")


def test_get_tokenizer_trains_into_workdir_once(tmp_path):
  m = tmp_path / "train.jsonl"
  m.write_text("".join(json.dumps({"audio_filepath": f"{i}.wav", "duration": 1.0,
                                   "text": t}) + "\n"
                       for i, t in enumerate(_corpus(100))))
  cfg = data_defaults()
  cfg.train_manifests = str(m)
  cfg.tokenizer.vocab_size = 48
  workdir = tmp_path / "run"
  first = tok_lib.get_tokenizer(cfg, workdir)
  assert (workdir / "tokenizer.model").exists()
  mtime = (workdir / "tokenizer.model").stat().st_mtime_ns
  second = tok_lib.get_tokenizer(cfg, workdir)
  assert (workdir / "tokenizer.model").stat().st_mtime_ns == mtime
  assert first.encode("lazy dog") == second.encode("lazy dog")
  cfg.tokenizer.path = first.path
  assert tok_lib.get_tokenizer(cfg, tmp_path / "elsewhere").path == first.path


def test_decode_drops_ids_past_the_vocabulary(tmp_path):
  tok = tok_lib.train_tokenizer_from_texts(["alpha bravo charlie delta"] * 20, tmp_path,
                                           vocab_size=24)
  ids = tok.encode("alpha bravo")
  assert tok.decode(ids + [tok.vocab_size, 10_000] + [tok_lib.EOS_ID, ids[0]]) == "alpha bravo"
