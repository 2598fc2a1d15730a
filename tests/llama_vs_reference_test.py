"""The decoder against a stored Hugging Face LLaMA reference: runs without torch.

tests/fixtures/tiny_llama/ holds a tiny random `LlamaForCausalLM` checkpoint (3 layers,
4 query / 2 key-value heads, untied lm_head, rope theta 5000, random norm scales) and
the float32 logits `transformers` computed for it on fixed token ids, both written by
tests/fixtures/make_llama_golden.py. Imported with `mtp_jax.interop.hf_llama`, our
decoder must reproduce those logits within max |diff| <= 1e-4 (fp32, matmul precision
"highest"; the tolerance of the live comparison in decoder_vs_reference_test.py, which
needs torch; measured 6e-6), and exporting the imported parameters must give back the checkpoint's
tensors bit for bit.
"""
import dataclasses
import json
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.interop import hf_llama
from tiny_models import text_model

FIXTURES = pathlib.Path(__file__).with_name("fixtures")
sys.path.insert(0, str(FIXTURES))
import make_llama_golden  # noqa: E402  pylint: disable=wrong-import-position

jax.config.update("jax_default_matmul_precision", "highest")

CHECKPOINT = make_llama_golden.OUT
TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
  """(tokens [2, 16] int32, logits [2, 16, V] float32) computed by transformers."""
  ref = np.load(CHECKPOINT / "reference_logits.npz")
  assert set(json.loads(str(ref["versions"]))) == {"torch", "transformers"}
  return ref["tokens"], ref["logits"]


def _imported(tokens, **model_kw):
  """(decoder config, model, params): a text model of the checkpoint's decoder with the
  checkpoint loaded into freshly initialized params."""
  dc = hf_llama.decoder_config_from_hf(CHECKPOINT)
  cfg, model = text_model(dc, **model_kw)
  fresh = hf_llama.init_decoder_params(model, jax.random.PRNGKey(0), jnp.asarray(tokens))
  return dc, model, hf_llama.load_decoder_into(fresh, CHECKPOINT, cfg)


def test_config_is_read_from_the_checkpoint():
  c = make_llama_golden.CONFIG
  dc = hf_llama.decoder_config_from_hf(CHECKPOINT)
  assert (dc.vocab_size, dc.d_model, dc.ff_dim, dc.num_layers) == (
      c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"])
  assert (dc.num_heads, dc.num_kv_heads) == (c["num_attention_heads"],
                                             c["num_key_value_heads"])
  assert (dc.rope_theta, dc.norm_eps, dc.tie_embeddings) == (
      c["rope_theta"], c["rms_norm_eps"], c["tie_word_embeddings"])


@pytest.mark.parametrize("scan", [False, True])
def test_logits_match_the_reference(reference, scan):
  tokens, want = reference
  dc, model, params = _imported(tokens, scan_layers=scan)
  got = np.asarray(hf_llama.text_logits(model, params, jnp.asarray(tokens)))
  assert got.shape == want.shape == tokens.shape + (dc.vocab_size,)
  assert float(np.abs(want).max()) > 0.5  # logits not vanishingly small
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
  # Negative control: the comparison sees the rotary base.
  _, wrong = text_model(dataclasses.replace(dc, rope_theta=dc.rope_theta * 3), scan_layers=scan)
  off = np.asarray(hf_llama.text_logits(wrong, params, jnp.asarray(tokens)))
  assert float(np.abs(off - want).max()) > 100 * TOL


def test_full_model_with_heads_matches_the_reference(reference):
  """Into a SpeechLLaMA with K=3 independent heads: head 1 reproduces the reference and
  each head's vocabulary projection starts as the checkpoint's lm_head."""
  tokens, want = reference
  dc = hf_llama.decoder_config_from_hf(CHECKPOINT)
  cfg, model = text_model(dc, k=3)
  audio = jnp.zeros((1, 4000), jnp.float32)
  fresh = jax.jit(model.init)(jax.random.PRNGKey(0), audio, jnp.array([4000]),
                              jnp.ones((1, 3), jnp.int32))
  params = hf_llama.load_decoder_into(fresh, CHECKPOINT, cfg, copy_unembed_to_heads=True)
  np.testing.assert_allclose(np.asarray(hf_llama.text_logits(model, params, jnp.asarray(tokens))),
                             want, atol=TOL, rtol=0)
  p, f = nn.unbox(params)["params"], nn.unbox(fresh)["params"]
  lm_head = hf_llama.load_hf_tensors(CHECKPOINT)["lm_head.weight"]
  for k in (2, 3):
    np.testing.assert_array_equal(p["mtp"][f"out{k}"]["kernel"], lm_head.T)
  jax.tree.map(np.testing.assert_array_equal, p["encoder"], f["encoder"])


def test_export_gives_back_the_checkpoint(reference, tmp_path):
  tokens, _ = reference
  dc, _, params = _imported(tokens)
  hf_llama.save_hf_checkpoint(params, dc, tmp_path)
  assert hf_llama.decoder_config_from_hf(tmp_path) == dc
  want, got = hf_llama.load_hf_tensors(CHECKPOINT), hf_llama.load_hf_tensors(tmp_path)
  assert sorted(got) == sorted(want)
  for name, w in want.items():
    assert got[name].dtype == w.dtype, name
    np.testing.assert_array_equal(got[name], w, err_msg=name)
