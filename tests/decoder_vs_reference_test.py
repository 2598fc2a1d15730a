"""The decoder against the reference LLaMA of `transformers`, via mtp_jax.interop.hf_llama.

Random small models are built locally (no download) and compared on logits in both
directions: HF -> ours (load_decoder_into, then a text-only forward) and ours -> HF
(save_hf_checkpoint, then LlamaForCausalLM.from_pretrained). Skips without torch /
transformers / safetensors (`pip install -e .[interop]`); llama_vs_reference_test.py
checks the HF -> ours direction without them, on a stored checkpoint and its logits.
"""
import dataclasses
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from mtp_jax.interop import hf_llama  # noqa: E402
from tiny_models import text_model  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).with_name("fixtures")))
from make_llama_golden import hf_logits, random_llama  # noqa: E402  pylint: disable=wrong-import-position

jax.config.update("jax_default_matmul_precision", "highest")
torch.set_num_threads(1)

V, D_MODEL, FF, LAYERS = 96, 32, 56, 2
TOL = 1e-4
# (num_heads, num_kv_heads, tied, rope_theta, scan_layers)
CASES = {
    "gqa_tied": (4, 2, True, 5000.0, False),
    "mqa_untied_scan": (4, 1, False, 500000.0, True),
    "mha_untied": (2, 2, False, 2000.0, False),
}


def _tokens(seed, b=2, t=12):
  return np.random.default_rng(seed).integers(0, V, (b, t)).astype(np.int32)


def _hf_model(case, seed=0):
  h, kv, tied, theta, _ = CASES[case]
  return random_llama(seed, vocab_size=V, hidden_size=D_MODEL, intermediate_size=FF,
                      num_hidden_layers=LAYERS, num_attention_heads=h, num_key_value_heads=kv,
                      rope_theta=theta, tie_word_embeddings=tied, rms_norm_eps=1e-5,
                      initializer_range=0.2, max_position_embeddings=64)


def _randomize_norms(params, seed):
  rng = np.random.default_rng(seed)
  def f(path, x):
    if jax.tree_util.keystr(path).endswith("['scale']"):
      return x.replace_boxed(jnp.asarray(rng.normal(1.0, 0.3, x.value.shape), x.value.dtype))
    return x
  return jax.tree_util.tree_map_with_path(f, params,
                                          is_leaf=lambda x: isinstance(x, nn.Partitioned))


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf_to_ours_logits_match(case, tmp_path):
  h, kv, tied, theta, scan = CASES[case]
  ref = _hf_model(case)
  ref.save_pretrained(tmp_path)
  dc = hf_llama.decoder_config_from_hf(tmp_path)
  assert (dc.num_heads, dc.num_kv_heads, dc.tie_embeddings, dc.rope_theta) == (h, kv, tied, theta)
  cfg, model = text_model(dc, scan_layers=scan)
  tokens = _tokens(1)
  fresh = hf_llama.init_decoder_params(model, jax.random.PRNGKey(0), jnp.asarray(tokens))
  # A sharded leaf (vocab axis over all devices) keeps its sharding through the load.
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("x",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x", None))
  box = fresh["params"]["embed"]["embedding"]
  fresh["params"]["embed"]["embedding"] = box.replace_boxed(jax.device_put(box.value, sharding))
  params = hf_llama.load_decoder_into(fresh, tmp_path, cfg)
  assert params["params"]["embed"]["embedding"].value.sharding == sharding
  # Structure and boxing (logical axis names) survive the load.
  is_box = lambda x: isinstance(x, nn.Partitioned)
  assert (jax.tree.structure(params, is_leaf=is_box) == jax.tree.structure(fresh, is_leaf=is_box))
  names = lambda t: [x.names for x in jax.tree.leaves(t, is_leaf=is_box)]
  assert names(params) == names(fresh)
  params = jax.tree.map(np.asarray, params)  # back to one device for the eager forward

  want = hf_logits(ref, tokens)
  got = np.asarray(hf_llama.text_logits(model, params, jnp.asarray(tokens)))
  assert float(np.abs(want).max()) > 0.5  # logits not vanishingly small
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
  # Negative control: the comparison sees the rotary base.
  _, wrong = text_model(dataclasses.replace(dc, rope_theta=theta * 3), scan_layers=scan)
  off = np.asarray(hf_llama.text_logits(wrong, params, jnp.asarray(tokens)))
  assert float(np.abs(off - want).max()) > 100 * TOL


@pytest.mark.parametrize("case", ["gqa_tied", "mqa_untied_scan"])  # (time budget)
def test_ours_to_hf_logits_match(case, tmp_path):
  h, kv, tied, theta, scan = CASES[case]
  dc = hf_llama.decoder_config_from_hf(
      {"vocab_size": V, "hidden_size": D_MODEL, "intermediate_size": FF,
       "num_hidden_layers": LAYERS, "num_attention_heads": h, "num_key_value_heads": kv,
       "rope_theta": theta, "tie_word_embeddings": tied, "rms_norm_eps": 1e-5})
  _, model = text_model(dc, scan_layers=scan)
  tokens = _tokens(2)
  params = hf_llama.init_decoder_params(model, jax.random.PRNGKey(3), jnp.asarray(tokens))
  params = _randomize_norms(params, seed=4)
  # A small shard size exercises the sharded (index.json) format in every case.
  hf_llama.save_hf_checkpoint(params, dc, tmp_path, max_shard_bytes=40_000)
  assert (tmp_path / hf_llama.INDEX_NAME).exists()
  ref = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
  assert ref.config.tie_word_embeddings == tied
  got = hf_logits(ref, tokens)
  want = np.asarray(hf_llama.text_logits(model, params, jnp.asarray(tokens)))
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
  # Re-import is exact.
  back = hf_llama.hf_to_decoder_params(hf_llama.load_hf_tensors(tmp_path), dc, scan_layers=scan)
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, nn.unbox(params)["params"]))


def test_load_into_full_model_keeps_rest(tmp_path):
  """Loading into a full SpeechLLaMA tree (encoder + K=3 independent heads)."""
  ref = _hf_model("gqa_tied", seed=5)
  ref.save_pretrained(tmp_path)
  # A tied checkpoint into an untied model: unembed starts as the embedding transposed.
  dc = dataclasses.replace(hf_llama.decoder_config_from_hf(tmp_path), tie_embeddings=False)
  cfg, model = text_model(dc, k=3, scan_layers=False)
  audio = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4000)).astype(np.float32))
  fresh = jax.jit(model.init)(jax.random.PRNGKey(0), audio, jnp.array([4000]),
                              jnp.ones((1, 3), jnp.int32))
  params = hf_llama.load_decoder_into(fresh, tmp_path, cfg, copy_unembed_to_heads=True)
  p, f = nn.unbox(params)["params"], nn.unbox(fresh)["params"]
  jax.tree.map(np.testing.assert_array_equal, p["encoder"], f["encoder"])
  jax.tree.map(np.testing.assert_array_equal, p["mtp"]["res2"], f["mtp"]["res2"])
  emb = ref.model.embed_tokens.weight.detach().numpy()
  np.testing.assert_array_equal(p["unembed"]["proj"]["kernel"], emb.T)
  np.testing.assert_array_equal(p["mtp"]["out3"]["kernel"], emb.T)
  tokens = _tokens(6)
  np.testing.assert_allclose(np.asarray(hf_llama.text_logits(model, params, jnp.asarray(tokens))),
                             hf_logits(ref, tokens), atol=TOL, rtol=0)


def test_mismatches_are_named(tmp_path):
  ref = _hf_model("gqa_tied")
  ref.save_pretrained(tmp_path)
  dc = hf_llama.decoder_config_from_hf(tmp_path)
  cfg, _ = text_model(dataclasses.replace(dc, vocab_size=V + 8), scan_layers=False)
  with pytest.raises(hf_llama.HFConversionError, match=r"model\.decoder\.vocab_size"):
    hf_llama.load_decoder_into({"params": {}}, tmp_path, cfg)
  with pytest.raises(hf_llama.HFConversionError, match=r"rope_scaling\.rope_type='llama3'"):
    hf_llama.decoder_config_from_hf(dict(ref.config.to_dict(), rope_parameters=None,
                                         rope_scaling={"rope_type": "llama3", "factor": 8.0}))
  with pytest.raises(hf_llama.HFConversionError, match="head_dim=4"):
    hf_llama.decoder_config_from_hf(dict(ref.config.to_dict(), head_dim=4))
