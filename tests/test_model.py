"""Speech-LLaMA model core: shapes, causality, padding invariance, KV cache, annotations."""
import dataclasses
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax import flops
from mtp_jax.config import HEAD_TYPES, ConfigError, ModelConfig, load_config_file
from mtp_jax.model.speech_llama import SpeechLLaMA, audio_token_count

jax.config.update("jax_default_matmul_precision", "highest")

def inputs(seed=0, b=2, s=12000, l=7, lens=None):
  rng = np.random.default_rng(seed)
  audio = rng.normal(size=(b, s)).astype(np.float32) * 0.1
  lens = lens or [s - 1000 * i for i in range(b)]
  for i, n in enumerate(lens):
    audio[i, n:] = 0.0
  text = rng.integers(4, 64, (b, l)).astype(np.int32)
  return jnp.asarray(audio), jnp.asarray(lens, jnp.int32), jnp.asarray(text)


def init(cfg, audio, alen, text):
  model = SpeechLLaMA(cfg)
  return model, model.init(jax.random.PRNGKey(1), audio, alen, text)


# Independent heads are the simplest; their run is kept for `-m slow` (CI time).
@pytest.mark.parametrize("head_type", [
    pytest.param(h, marks=pytest.mark.slow) if h == "independent" else h for h in HEAD_TYPES])
def test_shapes_and_heads_differ(head_type, tiny_config):
  cfg = tiny_config(head_type, k=3)
  audio, alen, text = inputs()
  model, params = init(cfg, audio, alen, text)
  out = model.apply(params, audio, alen, text)
  assert out["logits"].shape == (2, 7, 3, 64)
  assert out["logits"].dtype == jnp.float32
  assert out["hidden"].shape == (2, 7, 32)
  np.testing.assert_array_equal(out["audio_len"], [audio_token_count(int(n), cfg) for n in alen])
  for k in (1, 2):
    assert float(jnp.abs(out["logits"][:, :, k] - out["logits"][:, :, 0]).max()) > 1e-3


def test_k1_baseline_has_no_extra_heads(tiny_config):
  cfg = tiny_config("independent", k=1)
  audio, alen, text = inputs()
  model, params = init(cfg, audio, alen, text)
  assert "mtp" not in params["params"] or not jax.tree_util.tree_leaves(params["params"]["mtp"])
  assert model.apply(params, audio, alen, text)["logits"].shape == (2, 7, 1, 64)
  n = sum(x.size for x in jax.tree_util.tree_leaves(nn.unbox(params)))
  assert n == flops.param_counts(cfg)["total"]


@pytest.mark.parametrize("head_type", HEAD_TYPES)
def test_causality(head_type, tiny_config):
  cfg = tiny_config(head_type)
  audio, alen, text = inputs()
  model, params = init(cfg, audio, alen, text)
  base = model.apply(params, audio, alen, text)["logits"]
  changed = text.at[:, 4].set((text[:, 4] + 7) % 60 + 4)
  out = model.apply(params, audio, alen, changed)["logits"]
  np.testing.assert_allclose(out[:, :4], base[:, :4], atol=1e-6)
  assert float(jnp.abs(out[:, 4:] - base[:, 4:]).max()) > 1e-4


def test_padding_invariance_extra_audio_and_batch(tiny_config):
  cfg = tiny_config("sequential")
  audio, alen, text = inputs(b=2, s=12000, lens=[9000, 12000])
  model, params = init(cfg, audio, alen, text)
  base = model.apply(params, audio, alen, text)["logits"]
  # Extra padded audio samples (a longer bucket).
  longer = jnp.pad(audio, ((0, 0), (0, 5000)))
  out = model.apply(params, longer, alen, text)["logits"]
  np.testing.assert_allclose(out, base, atol=1e-5)
  # A row alone equals the same row in a batch with a padding row.
  alone = model.apply(params, audio[:1], alen[:1], text[:1])["logits"]
  np.testing.assert_allclose(alone, base[:1], atol=1e-5)
  padded = model.apply(params, jnp.concatenate([audio[:1], jnp.zeros_like(audio[:1])]),
                       jnp.array([9000, 0], jnp.int32),
                       jnp.concatenate([text[:1], jnp.zeros_like(text[:1])]))["logits"]
  np.testing.assert_allclose(padded[:1], base[:1], atol=1e-5)


@pytest.mark.parametrize("head_type,scan", [
    pytest.param("independent", False, marks=pytest.mark.slow),  # CI time: the others run
    ("latent", True), ("sequential", False)])
def test_kv_cache_decode_equals_full_forward(head_type, scan, tiny_config):
  cfg = tiny_config(head_type, scan_layers=scan)
  audio, alen, text = inputs(seed=3, l=9, lens=[12000, 7000])
  model, params = init(cfg, audio, alen, text)
  full = model.apply(params, audio, alen, text)
  out, cache = model.apply(params, audio, alen, text[:, :1], 16, method=model.prefill)
  logits, idx = [out["logits"]], jnp.ones((2,), jnp.int32)
  for a, b in ((1, 2), (2, 3), (3, 6), (6, 7), (7, 9)):  # one and several tokens per call
    out, cache = model.apply(params, text[:, a:b], idx, cache, method=model.decode_step)
    logits.append(out["logits"])
    idx = idx + (b - a)
  np.testing.assert_allclose(jnp.concatenate(logits, 1), full["logits"], atol=1e-5)


@pytest.mark.parametrize("head_type", HEAD_TYPES)
def test_decode_step_partial_heads_and_heads_at_one_position(head_type, tiny_config):
  """num_heads=n gives heads 1..n of the full step; heads() on one position's hidden
  state gives every head's logits there (what the decoding loops use for drafts)."""
  cfg = tiny_config(head_type, k=3)
  audio, alen, text = inputs(seed=5, l=6)
  model, params = init(cfg, audio, alen, text)
  _, cache = model.apply(params, audio, alen, text[:, :1], 12, method=model.prefill)
  idx = jnp.ones((2,), jnp.int32)
  full, _ = model.apply(params, text[:, 1:5], idx, cache, method=model.decode_step)
  for n in (1, 2):
    part, _ = model.apply(params, text[:, 1:5], idx, cache, num_heads=n,
                          method=model.decode_step)
    assert part["logits"].shape == (2, 4, n, 64)
    np.testing.assert_array_equal(part["logits"], full["logits"][:, :, :n])
  none, _ = model.apply(params, text[:, 1:5], idx, cache, num_heads=0, method=model.decode_step)
  assert set(none) == {"hidden"}
  at2 = model.apply(params, full["hidden"][:, 2:3], method=model.heads)
  np.testing.assert_allclose(at2[:, 0], full["logits"][:, 2], atol=1e-6)
  with pytest.raises(ValueError, match="num_heads"):
    model.apply(params, full["hidden"], num_heads=4, method=model.heads)


def test_kv_cache_per_row_offsets_and_stale_slots(tiny_config):
  """Rows at different text offsets in one call; stale slots beyond are never seen."""
  cfg = tiny_config("independent")
  audio, alen, text = inputs(seed=4, l=8)
  model, params = init(cfg, audio, alen, text)
  full = model.apply(params, audio, alen, text)["logits"]
  _, cache = model.apply(params, audio, alen, text[:, :1], 16, method=model.prefill)
  # Row 0 gets 4 tokens, row 1 gets 4 where the last two are garbage (a rejected draft).
  garbage = text.at[1, 3:5].set(5)
  _, cache = model.apply(params, garbage[:, 1:5], jnp.array([1, 1]), cache,
                         method=model.decode_step)
  # Row 1 "rejects" its last two tokens and resumes at text index 3 with the true tokens.
  toks = jnp.stack([text[0, 5:8], text[1, 3:6]])
  out, _ = model.apply(params, toks, jnp.array([5, 3]), cache, method=model.decode_step)
  np.testing.assert_allclose(out["logits"][0], full[0, 5:8], atol=1e-5)
  np.testing.assert_allclose(out["logits"][1], full[1, 3:6], atol=1e-5)


def test_every_param_has_logical_axes(tiny_config):
  cfg = tiny_config("sequential", scan_layers=True)
  audio, alen, text = inputs()
  _, params = init(cfg, audio, alen, text)
  leaves = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), f"unannotated param of shape {leaf.shape}"
    assert len(leaf.names) == leaf.value.ndim


@pytest.mark.parametrize("cfg_name,k", [("paper", 1), ("paper", 4), ("small", 4),
                                        ("shift/deep_decoder", 4), ("shift/deep_encoder", 4)])
def test_config_initializes_abstractly_with_expected_count(cfg_name, k):
  path = pathlib.Path(__file__).resolve().parents[1] / "configs" / f"{cfg_name}.py"
  cfg = ModelConfig.from_config(load_config_file(path, f"K={k}").model)
  model = SpeechLLaMA(cfg)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16000)),
                          jnp.array([16000]), jnp.zeros((1, 8), jnp.int32))
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(shapes)))
  counts = flops.param_counts(cfg)
  assert n == counts["total"]
  if cfg_name == "paper":
    assert 124e6 < counts["decoder"] < 126e6


@pytest.mark.parametrize("override,field", [
    (dict(mtp=dict(num_heads=0)), "model.mtp.num_heads"),
    (dict(mtp=dict(head_type="medusa2")), "model.mtp.head_type"),
    (dict(decoder=dict(d_model=30, num_heads=4)), "model.decoder.num_heads"),
    (dict(decoder=dict(num_kv_heads=3)), "model.decoder.num_kv_heads"),
    (dict(decoder=dict(nonsense=1)), "model.decoder.nonsense"),
    (dict(decoder=dict(d_model="wide")), "model.decoder.d_model"),
])
def test_invalid_config_names_field(override, field, tiny_config):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    tiny_config(**override)


def test_specaugment_and_dropout_only_in_training(tiny_config):
  cfg = tiny_config("independent")
  audio, alen, text = inputs()
  model, params = init(cfg, audio, alen, text)
  a = model.apply(params, audio, alen, text)["logits"]
  b = model.apply(params, audio, alen, text)["logits"]
  np.testing.assert_array_equal(a, b)
  train_model = SpeechLLaMA(cfg, train=True)
  rngs = {"specaug": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
  c = train_model.apply(params, audio, alen, text, rngs=rngs)["logits"]
  assert float(jnp.abs(c - a).max()) > 1e-4


def test_bfloat16_compute_runs(tiny_config):
  cfg = dataclasses.replace(tiny_config("latent"), dtype="bfloat16")
  audio, alen, text = inputs()
  model, params = init(cfg, audio, alen, text)
  out = model.apply(params, audio, alen, text)["logits"]
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
