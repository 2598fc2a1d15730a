"""One tokenizer interface for every family: SentencePiece (ours), Whisper's BPE and a
pretrained LM's own (a Hugging Face tokenizer.json, or a GGUF's); special ids come from
the tokenizer and are moved onto the project's fixed PAD/BOS/EOS ids."""
import json
import pathlib
import sys

import pytest

from mtp_jax.data import lm_tokenizer as lt
from mtp_jax.data.tokenizer import Tokenizer, train_tokenizer_from_texts

FIXTURES = pathlib.Path(__file__).with_name("fixtures")
sys.path.insert(0, str(FIXTURES))
import make_gguf_golden  # noqa: E402  pylint: disable=wrong-import-position


def _hf_dir(tmp_path, bos="<|im_start|>", eos="<|im_end|>", pad=None):
  """A HF tokenizer directory built from the tiny GGUF fixture's vocabulary."""
  tokens, merges, types = make_gguf_golden.vocabulary()
  meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.merges": merges, "tokenizer.ggml.token_type": types}
  d = tmp_path / "hf"
  d.mkdir()
  (d / "tokenizer.json").write_text(lt.tokenizer_json_from_gguf(meta, "test"))
  cfg = {"bos_token": bos, "eos_token": eos}
  if pad:
    cfg["pad_token"] = pad
  (d / "tokenizer_config.json").write_text(json.dumps(cfg))
  return d


def test_special_permutation_puts_pad_bos_eos_first():
  perm = lt.special_permutation(10, (7, 5, 6))
  assert sorted(perm.tolist()) == list(range(10))
  assert perm[:3].tolist() == [7, 5, 6]
  assert lt.special_permutation(10, (0, 1, 2)).tolist() == list(range(10))
  with pytest.raises(lt.LMTokenizerError, match="distinct"):
    lt.special_permutation(10, (1, 1, 2))


def test_hf_tokenizer_loads_through_the_one_interface(tmp_path):
  d = _hf_dir(tmp_path)
  tok = Tokenizer.load(d)
  assert isinstance(tok, lt.LMTokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.specials == (0, 1, 2)  # <|endoftext|> pads: the first other control token
  ids = tok.encode("tea at noon")
  assert tok.decode(ids) == "tea at noon"
  # Stored in a workdir as one file, and loaded from there.
  work = tmp_path / "work"
  work.mkdir()
  tok.save(work)
  again = Tokenizer.load(work)
  assert again.encode("tea at noon") == ids and again.specials == tok.specials


def test_specials_elsewhere_are_permuted_onto_ours(tmp_path):
  """A tokenizer whose bos/eos are not 1/2: ids are permuted so BOS=1, EOS=2 hold."""
  tokens = make_gguf_golden.vocabulary()[0]
  d = _hf_dir(tmp_path, bos="e", eos="t", pad="<|im_end|>")
  tok = Tokenizer.load(d)
  bos, eos = tokens.index("e"), tokens.index("t")
  assert tok.specials == (2, bos, eos)
  assert tok.id_to_piece(tok.bos_id) == "e" and tok.id_to_piece(tok.eos_id) == "t"
  ids = tok.encode("ah no")
  assert tok.decode(ids) == "ah no" and tok.eos_id not in ids
  assert tok.decode(ids + [tok.eos_id] + ids) == "ah no"


def test_missing_config_and_unknown_token_are_named(tmp_path):
  d = _hf_dir(tmp_path, bos="<|nope|>")
  with pytest.raises(lt.LMTokenizerError, match="bos_token='<\\|nope\\|>'"):
    Tokenizer.load(d)
  (d / "tokenizer_config.json").unlink()
  with pytest.raises(lt.LMTokenizerError, match="tokenizer_config.json: not found"):
    Tokenizer.load(d)


def test_sentencepiece_workdir_and_whisper_json_are_not_lm(tmp_path):
  tok = train_tokenizer_from_texts(["the cat sat", "a dog ran far"] * 20, tmp_path,
                                   vocab_size=30)
  assert (tmp_path / "tokenizer.json").is_file()  # the SentencePiece sidecar
  assert not lt.is_lm(tmp_path) and not lt.is_lm(tmp_path / "tokenizer.json")
  assert type(Tokenizer.load(tmp_path)) is type(tok)
  whisper_like = tmp_path / "w.json"
  whisper_like.write_text(json.dumps({"added_tokens": [{"content": "<|startoftranscript|>"}]}))
  assert not lt.is_lm(whisper_like)


def test_gguf_specials_avoid_padding_with_eos():
  _, _, types = make_gguf_golden.vocabulary()
  meta = {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
          "tokenizer.ggml.padding_token_id": 2, "tokenizer.ggml.token_type": types}
  assert lt.specials_from_gguf(meta, "x") == (0, 1, 2)
  with pytest.raises(lt.LMTokenizerError, match="bos_token_id"):
    lt.specials_from_gguf({}, "x.gguf")


def test_fewer_merges_spell_words_in_shorter_pieces_with_the_same_ids(tmp_path):
  """`data.tokenizer.merges`: only the first N merges; the ids keep their meaning."""
  from mtp_jax.data import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  from mtp_jax.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  d = _hf_dir(tmp_path)
  tokens, merges, _ = make_gguf_golden.vocabulary()
  full, few = Tokenizer.load(d), tok_lib.load_configured(d, 9)
  assert few.num_merges == 9 and full.num_merges == len(merges)
  text = "tea at noon, oh hat"
  a, b = full.encode(text), few.encode(text)
  assert len(b) > len(a)
  assert few.decode(b) == full.decode(b) == full.decode(a) == text
  kept = {m.replace(" ", "") for m in merges[:9]}
  for i in b:  # every piece is one byte symbol or the result of a kept merge
    piece = tokens[i]
    assert len(piece) == 1 or piece in kept, piece
  assert any(len(tokens[i]) == 2 for i in b)  # the kept merges are used
  # Stored in the workdir with its merges; a resumed run with other merges is refused.
  work = tmp_path / "work"
  work.mkdir()
  from mtp_jax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  ckpt_lib.copy_tokenizer(d, work, 9)
  assert Tokenizer.load(work).encode(text) == b
  workdir_lib.check_tokenizer_unchanged(str(work), str(d), 9)
  with pytest.raises(workdir_lib.ResumeError, match="merges=0"):
    workdir_lib.check_tokenizer_unchanged(str(work), str(d), 0)
  with pytest.raises(lt.LMTokenizerError, match=r"merges=999: must be in \[1, 61\]"):
    full.with_merges(999)
  sp = train_tokenizer_from_texts(["the cat sat", "a dog ran far"] * 20, tmp_path / "sp",
                                  vocab_size=30)
  with pytest.raises(ValueError, match="merges=9: .* not a pretrained LM's tokenizer"):
    tok_lib.load_configured(sp.path, 9)


def test_merges_need_a_pretrained_tokenizer_path():
  from mtp_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  from mtp_jax.data import config as data_config  # pylint: disable=import-outside-toplevel
  cfg = data_config.data_defaults()
  cfg.tokenizer.merges = 100
  with pytest.raises(ConfigError, match="tokenizer.merges=100: .*tokenizer.path"):
    data_config.validate(cfg)
  cfg.tokenizer.path = "smollm2-135m"
  cfg.tokenizer.merges = -1
  with pytest.raises(ConfigError, match="tokenizer.merges"):
    data_config.validate(cfg)
