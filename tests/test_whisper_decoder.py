"""The Whisper decoder family (`model.decoder.type='whisper'`) on a tiny random model:
the KV cache (cross-attention keys in the audio slots), padding invariance, every
decoding strategy against greedy, parameter accounting, config refusals and the weight
round trip through both checkpoint formats."""
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax import flops
from mtp_jax.config import ConfigError
from mtp_jax.decode.api import decode
from mtp_jax.interop import whisper as whisper_io
from mtp_jax.interop import whisper_decoder as wd
from mtp_jax.model.speech_llama import SpeechLLaMA
import tiny_models

WHISPER_DEC = tiny_models.WHISPER_DECODER


def cfg_for(head_type="independent", k=3, **kw):
  return tiny_models.tiny_model_config(head_type, k, **tiny_models.merged(WHISPER_DEC, kw))


@functools.lru_cache(maxsize=None)
def model_for(head_type="independent", k=3, seed=0):
  model = SpeechLLaMA(cfg_for(head_type, k))
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4000)),
                      jnp.full((1,), 4000, jnp.int32), jnp.ones((1, 4), jnp.int32))
  return model, nn.unbox(params)


def _text(rng, b, l):
  return jnp.asarray(rng.integers(3, tiny_models.VOCAB, size=(b, l)), jnp.int32).at[:, 0].set(1)


@pytest.mark.parametrize("head_type", [
    pytest.param("independent", marks=pytest.mark.slow),  # CI time: sequential runs
    "sequential"])
def test_kv_cache_decode_equals_full_forward(head_type):
  model, params = model_for(head_type)
  rng = np.random.default_rng(0)
  audio, alen = tiny_models.random_audio(rng, [4000, 2500])
  text = _text(rng, 2, 9)
  full = model.apply(params, audio, alen, text)
  out, cache = model.apply(params, audio, alen, text[:, :1], 16, method=model.prefill)
  logits, idx = [out["logits"]], jnp.ones((2,), jnp.int32)
  for a, b in ((1, 2), (2, 4), (4, 7), (7, 9)):  # one and several tokens per call
    out, cache = model.apply(params, text[:, a:b], idx, cache, method=model.decode_step)
    logits.append(out["logits"])
    idx = idx + (b - a)
  np.testing.assert_allclose(jnp.concatenate(logits, 1), full["logits"], atol=1e-5)


def test_audio_matters_and_padding_does_not():
  model, params = model_for()
  rng = np.random.default_rng(1)
  audio, alen = tiny_models.random_audio(rng, [2500, 4000])
  text = _text(rng, 2, 6)
  base = model.apply(params, audio, alen, text)["logits"]
  # Row 0 alone with more zero padding after its audio, next to a padding row.
  a0 = jnp.concatenate([jnp.pad(audio[:1], ((0, 0), (0, 2000))), jnp.zeros((1, 6000))])
  alone = model.apply(params, a0, jnp.array([2500, 0], jnp.int32),
                      jnp.concatenate([text[:1], text[:1]]))["logits"]
  np.testing.assert_allclose(alone[:1], base[:1], atol=1e-5)
  other = model.apply(params, audio[::-1], alen[::-1], text)["logits"]
  assert np.abs(np.asarray(other[0] - base[0])).max() > 1e-3  # cross-attention reads audio


def _run(model, params, audio, alen, strategy, **kw):
  res = decode(model, params, audio, alen, strategy=strategy, max_new_tokens=10, **kw)
  return jax.tree_util.tree_map(np.asarray, res)


@pytest.mark.parametrize("strategy,kw", [("verify", {}), ("tree", {}),
                                         ("beam", dict(beam=1))])
def test_strategies_equal_greedy(strategy, kw):
  model, params = model_for()
  rng = np.random.default_rng(2)
  audio, alen = tiny_models.random_audio(rng, [4000, 0, 3000])
  g = _run(model, params, audio, alen, "greedy")
  s = _run(model, params, audio, alen, strategy, **kw)
  np.testing.assert_array_equal(s.tokens, g.tokens)
  np.testing.assert_array_equal(s.lengths, g.lengths)
  if strategy != "beam":
    assert np.all(s.calls <= g.calls) and s.calls[1] == 0


def test_params_counted_exactly_with_logical_axes():
  cfg = cfg_for("sequential", 3)
  model = SpeechLLaMA(cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4000)),
                                            jnp.full((1,), 4000, jnp.int32),
                                            jnp.ones((1, 4), jnp.int32)))
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  n = sum(int(np.prod(x.value.shape)) for x in leaves)
  assert n == flops.param_counts(cfg)["total"]
  assert flops.param_counts(cfg)["projector"] == 0


@pytest.mark.parametrize("override,field", [
    (dict(decoder=dict(num_kv_heads=1)), "decoder.num_kv_heads"),
    (dict(reduction=dict(method="fastadasp_dense", ratio=0.2)), "reduction.method"),
    (dict(decoder=dict(max_text_len=40)), "decoder.max_text_len"),
    (dict(decoder=dict(tie_embeddings=False)), "decoder.tie_embeddings"),
    (dict(projector=dict(stack=2)), "projector.type"),
    (dict(projector=dict(type="linear")), "projector.type"),
    (dict(decoder=dict(type="gpt")), "decoder.type"),
])
def test_invalid_whisper_configs_name_the_field(override, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    cfg_for(**override)


def _write_tokenizer_json(path, specials):
  names = wd.SPECIAL_NAMES
  path.write_text(json.dumps({"added_tokens": [
      {"id": i, "content": n} for i, n in zip(specials, names)]}))


def test_weights_round_trip_both_formats(tmp_path):
  """Our params -> a CTranslate2 model.bin and an HF safetensors directory -> the same
  params (the vocabulary swap applied and undone), and into a model's tree."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  model, params = model_for("independent", 3, seed=5)
  p = params["params"]
  dec = {k: p[k] for k in ("embed", "decoder", "final_norm")}
  specials = (61, 60, 59)  # <|notimestamps|>, <|startoftranscript|>, <|endoftext|>
  t = wd.params_to_canonical(dec, specials)
  # Whisper's id 60 (<|startoftranscript|>) is our BOS (1): the rows trade places.
  np.testing.assert_array_equal(t["embed"][60], np.asarray(dec["embed"]["embedding"][1]))
  ct2_dir, hf_dir = tmp_path / "ct2", tmp_path / "hf"
  ct2_dir.mkdir()
  hf_dir.mkdir()
  whisper_io.write_ct2_model(ct2_dir / "model.bin", "WhisperSpec",
                             wd.canonical_to_ct2(t, num_heads=2, dtype=np.float16))
  save_file(wd.canonical_to_hf(t), str(hf_dir / "model.safetensors"))
  (hf_dir / "config.json").write_text(json.dumps({"decoder_layers": 2,
                                                  "decoder_attention_heads": 2}))
  for d in (ct2_dir, hf_dir):
    _write_tokenizer_json(d / "tokenizer.json", specials)
  for d, atol in ((hf_dir, 0.0), (ct2_dir, 2e-3)):  # CTranslate2 stored float16 here
    shp, got, sp = wd.load_decoder(d)
    assert sp == specials and shp.vocab_size == tiny_models.VOCAB and shp.num_layers == 2
    flat_a = dict(jax.tree_util.tree_leaves_with_path(dec))
    flat_b = dict(jax.tree_util.tree_leaves_with_path(got))
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
      np.testing.assert_allclose(flat_b[key], value, atol=atol, err_msg=str(key))
  # Into a fresh model: decoder replaced, heads copied from the unembedding.
  fresh = model_for("independent", 3, seed=6)[1]
  loaded = wd.load_decoder_into(fresh, hf_dir, model.cfg, copy_unembed_to_heads=True)
  np.testing.assert_array_equal(loaded["params"]["embed"]["embedding"], dec["embed"]["embedding"])
  np.testing.assert_array_equal(loaded["params"]["mtp"]["out2"]["kernel"],
                                np.asarray(dec["embed"]["embedding"]).T)
  # Latent heads: their norms' gains start at the RMS of the final LayerNorm's output.
  lat_model, lat = model_for("latent", 3, seed=7)
  loaded_lat = wd.load_decoder_into(lat, hf_dir, lat_model.cfg, copy_unembed_to_heads=True)
  fin = dec["final_norm"]
  rms = np.sqrt(np.mean(np.square(fin["scale"])) + np.mean(np.square(fin["bias"])))
  np.testing.assert_allclose(loaded_lat["params"]["mtp"]["norm2"]["scale"],
                             np.full(16, rms), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(loaded["params"]["encoder"]),
                  jax.tree.leaves(fresh["params"]["encoder"])):
    np.testing.assert_array_equal(a, b)  # the rest of the model is untouched

def test_checkpoint_that_does_not_fit_is_named(tmp_path):
  model, params = model_for()
  cfg = cfg_for(decoder=dict(num_layers=1))
  dec = {k: params["params"][k] for k in ("embed", "decoder", "final_norm")}
  t = wd.params_to_canonical(dec, (61, 60, 59))
  whisper_io.write_ct2_model(tmp_path / "model.bin", "WhisperSpec",
                             wd.canonical_to_ct2(t, num_heads=2))
  with pytest.raises(whisper_io.WhisperConversionError, match="tokenizer.json"):
    wd.load_decoder(tmp_path)
  _write_tokenizer_json(tmp_path / "tokenizer.json", (61, 60, 59))
  with pytest.raises(whisper_io.WhisperConversionError, match=r"decoder\.num_layers=1"):
    wd.load_decoder_into(params, tmp_path, cfg)
  del model


def test_thinner_decoder_keeps_the_chosen_pretrained_blocks(tmp_path):
  """`layers=(1,)` of a 2-block checkpoint: a 1-block model whose block is the source's
  block 1, embeddings and final norm as in the source; bad indices are named; a repeated
  index copies its block (a thicker decoder)."""
  _, params = model_for("independent", 3, seed=5)
  dec = {k: params["params"][k] for k in ("embed", "decoder", "final_norm")}
  specials = (61, 60, 59)
  whisper_io.write_ct2_model(tmp_path / "model.bin", "WhisperSpec",
                             wd.canonical_to_ct2(wd.params_to_canonical(dec, specials),
                                                 num_heads=2))
  _write_tokenizer_json(tmp_path / "tokenizer.json", specials)
  thin_cfg = cfg_for(decoder=dict(num_layers=1))
  thin = SpeechLLaMA(thin_cfg)
  fresh = nn.unbox(thin.init(jax.random.PRNGKey(1), jnp.zeros((1, 4000)),
                             jnp.full((1,), 4000, jnp.int32), jnp.ones((1, 4), jnp.int32)))
  got = wd.load_decoder_into(fresh, tmp_path, thin_cfg, layers=(1,))["params"]
  assert set(got["decoder"]) == {"layer0", "pos_embed"}
  for a, b in ((got["decoder"]["layer0"], dec["decoder"]["layer1"]),
               (got["final_norm"], dec["final_norm"]), (got["embed"], dec["embed"])):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)
  with pytest.raises(whisper_io.WhisperConversionError, match=r"decoder_init_layers=\(2,\)"):
    wd.load_decoder_into(fresh, tmp_path, thin_cfg, layers=(2,))
  # Depth up-scaling: a repeated block is a copy of the source block in each slot.
  thick_cfg = cfg_for(decoder=dict(num_layers=3))
  thick = SpeechLLaMA(thick_cfg)
  fresh3 = nn.unbox(thick.init(jax.random.PRNGKey(1), jnp.zeros((1, 4000)),
                               jnp.full((1,), 4000, jnp.int32), jnp.ones((1, 4), jnp.int32)))
  got = wd.load_decoder_into(fresh3, tmp_path, thick_cfg, layers=(0, 1, 1))["params"]
  for j, i in enumerate((0, 1, 1)):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y),
                 got["decoder"][f"layer{j}"], dec["decoder"][f"layer{i}"])
  with pytest.raises(whisper_io.WhisperConversionError, match=r"decoder\.num_layers=1"):
    wd.load_decoder_into(fresh, tmp_path, thin_cfg, layers=(0, 1))
