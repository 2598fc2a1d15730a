"""LoRA adapters (mtp_jax/train/lora.py) and the text prompt between audio and transcript."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.config import ConfigError
from mtp_jax.model.speech_llama import SpeechLLaMA, audio_token_count
from mtp_jax.train import lora as lora_lib
from mtp_jax.train import optimizer as opt_lib
from mtp_jax.train.config import train_defaults
from tiny_models import STUB_AUDIO, merged, random_audio, tiny_model_config

jax.config.update("jax_default_matmul_precision", "highest")

CFG = lora_lib.LoRAConfig(rank=4, alpha=8.0,
                          targets=r"^params/decoder/.*/(attn/(q|v|o)|mlp/wo)/kernel$")


def _model(**overrides):
  cfg = tiny_model_config("independent", 2, **merged(STUB_AUDIO, overrides))
  return SpeechLLaMA(cfg)


def _inputs(model, seed=0):
  audio, audio_len = random_audio(np.random.default_rng(seed), [4000, 2500])
  text = jnp.asarray(np.random.default_rng(seed + 1).integers(
      3, model.cfg.decoder.vocab_size, (2, 6)), jnp.int32)
  return audio, audio_len, text


def _params_with_adapters(model, cfg=CFG, seed=0):
  audio, audio_len, text = _inputs(model)
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), audio, audio_len, text))
  found = lora_lib.targets(model, (audio, audio_len, text), cfg)
  params = lora_lib.add_adapters(params, found, cfg, jax.random.PRNGKey(seed + 1))
  # Trained adapters are not zero: give B random values so the adapters matter.
  def randomize(path, x):
    if getattr(path[-1], "key", None) == lora_lib.B:
      return jax.random.normal(jax.random.PRNGKey(len(path)), x.shape) * 0.3
    return x
  return found, jax.tree_util.tree_map_with_path(randomize, params)


def test_targets_find_the_matched_kernels_with_their_shapes():
  model = _model()
  audio, audio_len, text = _inputs(model)
  found = lora_lib.targets(model, (audio, audio_len, text), CFG)
  d, h, hd = model.cfg.decoder.d_model, model.cfg.decoder.num_heads, model.cfg.decoder.head_dim
  n = model.cfg.decoder.num_layers
  assert len(found) == 4 * n
  assert found["params/decoder/layer0/attn/q/kernel"] == (1, (d, h, hd))
  assert found["params/decoder/layer0/attn/o/kernel"] == (2, (h, hd, d))
  with pytest.raises(ConfigError, match="matches no dense kernel"):
    lora_lib.targets(model, (audio, audio_len, text),
                     dataclasses.replace(CFG, targets="^params/nothing/"))


def test_fresh_adapters_change_nothing():
  model = _model()
  audio, audio_len, text = _inputs(model)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), audio, audio_len, text))
  found = lora_lib.targets(model, (audio, audio_len, text), CFG)
  with_a = lora_lib.add_adapters(params, found, CFG, jax.random.PRNGKey(1))
  base = model.apply(params, audio, audio_len, text)["logits"]
  got = lora_lib.apply(model, CFG, with_a, audio, audio_len, text)["logits"]
  np.testing.assert_array_equal(np.asarray(got), np.asarray(base))


def test_merged_equals_unmerged_and_differs_from_the_base():
  """Decoding runs the merged kernels: the same logits as training's unmerged forward
  (float32, within 1e-4 absolute), and adapters that are not zero change the output."""
  model = _model()
  audio, audio_len, text = _inputs(model)
  _, params = _params_with_adapters(model)
  unmerged = lora_lib.apply(model, CFG, params, audio, audio_len, text)["logits"]
  merged_params = lora_lib.merge(params, CFG)
  assert not lora_lib.has_adapters(merged_params)
  merged_out = model.apply(merged_params, audio, audio_len, text)["logits"]
  np.testing.assert_allclose(np.asarray(merged_out), np.asarray(unmerged), atol=1e-4, rtol=0)
  plain = {"params": {k: v for k, v in params["params"].items()}}
  base = model.apply(lora_lib.merge(plain, dataclasses.replace(CFG, alpha=1e-9)),
                     audio, audio_len, text)["logits"]
  assert float(jnp.max(jnp.abs(base - unmerged))) > 1e-2


def test_adapter_dropout_is_active_only_in_training():
  model = _model()
  audio, audio_len, text = _inputs(model)
  _, params = _params_with_adapters(model)
  cfg = dataclasses.replace(CFG, dropout=0.5)
  run = lambda det, seed: lora_lib.apply(model, cfg, params, audio, audio_len, text,
                                         deterministic=det,
                                         rngs={"dropout": jax.random.PRNGKey(seed)})["logits"]
  np.testing.assert_array_equal(np.asarray(run(True, 0)), np.asarray(run(True, 1)))
  assert float(jnp.max(jnp.abs(run(False, 0) - run(False, 1)))) > 1e-3


def test_only_adapters_train_on_a_frozen_decoder_and_get_gradients():
  model = _model()
  audio, audio_len, text = _inputs(model)
  _, params = _params_with_adapters(model)
  tcfg = train_defaults()
  tcfg.frozen = "^params/(encoder|embed|decoder|final_norm|mtp|projector)/"
  labels = opt_lib.trainable_labels(params, tcfg)
  flat = {opt_lib.param_path(p): l for p, l in jax.tree_util.tree_flatten_with_path(labels)[0]}
  trained = sorted(k for k, l in flat.items() if l == "train")
  assert trained and all(k.endswith(("/lora_a", "/lora_b")) for k in trained)
  tcfg.lora.frozen = True
  with pytest.raises(ValueError, match="no parameter to train"):
    opt_lib.trainable_labels(params, tcfg)
  # The optimizer keeps state for the adapters alone.
  tcfg.lora.frozen = False
  tx = opt_lib.make_optimizer(tcfg, params)
  state = tx.init(params)
  n_state = sum(x.size for x in jax.tree.leaves(state) if hasattr(x, "size") and x.ndim)
  n_adapters = sum(int(np.prod(v.shape)) for k, v in jax.tree_util.tree_flatten_with_path(
      params)[0] if opt_lib.param_path(k).endswith(("lora_a", "lora_b")))
  assert n_state == 2 * n_adapters  # Adam's mu and nu

  def loss(p):
    return jnp.mean(lora_lib.apply(model, CFG, p, audio, audio_len, text)["logits"] ** 2)
  grads = jax.grad(loss)(params)
  g = {opt_lib.param_path(k): v for k, v in jax.tree_util.tree_flatten_with_path(grads)[0]}
  assert float(jnp.abs(g["params/decoder/layer0/attn/q/lora_a"]).max()) > 0
  assert float(jnp.abs(g["params/decoder/layer0/attn/q/lora_b"]).max()) > 0


def test_lora_config_is_checked():
  with pytest.raises(ConfigError, match="train.lora.dropout"):
    lora_lib.LoRAConfig.from_config({"rank": 4, "dropout": 1.5})
  with pytest.raises(ConfigError, match="train.lora.targets"):
    lora_lib.LoRAConfig.from_config({"rank": 4, "targets": "("})
  with pytest.raises(ConfigError, match="train.lora.rnk"):
    lora_lib.LoRAConfig.from_config({"rnk": 4})


# ------------------------------------------------------------------------------ prompt


def test_prompt_sits_after_each_rows_audio_and_is_not_scored():
  """With a prompt the text logits equal a forward whose audio tokens are followed by the
  prompt embeddings by hand; rows with less audio get it earlier (no padding between)."""
  prompt = (5, 9, 11)
  model = _model(prompt_ids=prompt)
  plain = _model()
  audio, audio_len, text = _inputs(model)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), audio, audio_len, text))
  out = model.apply(params, audio, audio_len, text)
  assert out["logits"].shape[1] == text.shape[1]  # only the transcript is scored

  def by_hand(m):
    emb, valid, alen = m.encode(audio, audio_len)
    pe = m.embed(jnp.asarray(prompt))
    rows = []
    for b in range(emb.shape[0]):
      n = int(alen[b])
      rows.append(jnp.concatenate([emb[b, :n], pe, emb[b, n:]], axis=0))
    emb2 = jnp.stack(rows)
    valid2 = jnp.arange(emb2.shape[1])[None] < (alen + len(prompt))[:, None]
    return m.forward_text(emb2, valid2, alen + len(prompt), text)["logits"]
  ref = plain.apply(params, method=by_hand)
  np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(ref), atol=1e-5, rtol=0)
  assert int(audio_token_count(4000, model.cfg)) == int(audio_token_count(4000, plain.cfg)) + 3


def test_prompt_ids_are_checked():
  with pytest.raises(ConfigError, match="prompt_ids"):
    tiny_model_config("independent", 1, prompt_ids=(1, 10 ** 6))
