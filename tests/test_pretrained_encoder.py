"""A pretrained (Whisper) encoder in training: import, freezing by regex, the feature cache."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.config import ModelConfig
from mtp_jax.data import feature_cache as cache_lib
from mtp_jax.data import pipeline
from mtp_jax.data import tokenizer as tok_lib
from mtp_jax.data.errors import BadInputError
from mtp_jax.interop import whisper as whisper_io
from mtp_jax.model.speech_llama import SpeechLLaMA
from mtp_jax.train import optimizer as opt_lib
from mtp_jax.train import pretrained
from mtp_jax.train import state as state_lib
from mtp_jax.train.loop import train_and_evaluate
from train_helpers import whisper_micro_config, write_synthetic_manifest


def _params(c, seed=0):
  model = SpeechLLaMA(ModelConfig.from_config(c.model))
  return model, nn.unbox(model.init(jax.random.PRNGKey(seed),
                                    *state_lib.dummy_inputs(model.cfg, seconds=0.5)))


def _write_ct2(params, directory):
  directory.mkdir(parents=True, exist_ok=True)
  whisper_io.write_ct2_model(directory / "model.bin", "WhisperSpec",
                             whisper_io.params_to_ct2(params["params"]["encoder"], num_heads=2))
  return str(directory)


@pytest.mark.slow  # long; `-m slow` runs it
def test_freezing_by_regex():
  c = whisper_micro_config()
  _, params = _params(c)
  c.train.update(frozen="^params/encoder/", warmup_steps=0)  # lr > 0 at the first update
  labels = opt_lib.trainable_labels(params, c.train)
  flat = {opt_lib.param_path(p): l for p, l in jax.tree_util.tree_flatten_with_path(labels)[0]}
  assert {l for p, l in flat.items() if p.startswith("params/encoder/")} == {"freeze"}
  assert {l for p, l in flat.items() if not p.startswith("params/encoder/")} == {"train"}
  tx = opt_lib.make_optimizer(c.train, params)
  state = tx.init(params)
  # optimizer state only for trained leaves: no Adam moments for the encoder
  n_state = sum(x.size for x in jax.tree.leaves(state))
  n_trained = sum(x.size for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
                  if not opt_lib.param_path(p).startswith("params/encoder/"))
  assert 2 * n_trained <= n_state <= 2 * n_trained + 8  # mu, nu (+ step counts)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  for (p, u) in jax.tree_util.tree_flatten_with_path(updates)[0]:
    assert bool(jnp.any(u != 0)) == (flat[opt_lib.param_path(p)] == "train"), p
  # trainable + frozen: top encoder block trains, the rest of the encoder is frozen
  c.train.update(frozen="", trainable="^params/(encoder/block0|projector)/")
  labels = opt_lib.trainable_labels(params, c.train)
  trained = {opt_lib.param_path(p) for p, l in jax.tree_util.tree_flatten_with_path(labels)[0]
             if l == "train"}
  assert trained and all(p.startswith(("params/encoder/block0/", "params/projector/"))
                         for p in trained)
  c.train.update(trainable="(", frozen="")
  with pytest.raises(ValueError, match=r"train.trainable='\(': invalid regex"):
    opt_lib.trainable_labels(params, c.train)
  c.train.update(trainable="", frozen=".")
  with pytest.raises(ValueError, match="no parameter to train"):
    opt_lib.trainable_labels(params, c.train)
  c.train.update(frozen="", mode="heads_only", trainable="x")
  with pytest.raises(ValueError, match="set one"):
    opt_lib.trainable_labels(params, c.train)


@pytest.fixture(scope="module")
def cached_env(tmp_path_factory):
  root = tmp_path_factory.mktemp("pretrained")
  manifest = write_synthetic_manifest(root / "data", n=12)
  c = whisper_micro_config()
  c.data.train_manifests = manifest
  _, src_params = _params(c, seed=7)  # "pretrained" weights: another init than the run's
  c.train.encoder_init = _write_ct2(src_params, root / "ct2")
  c.train.frozen = "^params/encoder/"
  res = pretrained.build_cache(c, str(root / "cache"), log=lambda m: None)
  return root, c, src_params, res


def test_cache_holds_the_encoder_frames(cached_env):
  root, c, src_params, res = cached_env
  assert res["utterances"] == 12 and not res["skipped"]
  model, _ = _params(c)
  cache = cache_lib.FeatureCache(root / "cache")
  entries = [json.loads(l) for l in open(c.data.train_manifests)]
  wav_path = str(root / "data" / entries[3]["audio_filepath"])
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  wav = sf.read(wav_path, dtype="float32")[0]
  frames, flen = model.apply(src_params, jnp.asarray(wav[None]), jnp.asarray([len(wav)]),
                             method="encode_frames")
  got = cache.frames(wav_path)
  assert got.dtype == np.float16 and got.shape == (int(flen[0]), 32)
  np.testing.assert_allclose(got.astype(np.float32), np.asarray(frames[0, :int(flen[0])]),
                             atol=2e-3 * float(np.abs(frames).max()))
  with pytest.raises(BadInputError, match="not in the feature cache"):
    cache.frames(str(root / "nope.flac"), manifest="m.jsonl", line=3)
  with pytest.raises(ValueError, match="fingerprint"):
    cache.check("0" * 24)


def test_forward_frames_equals_the_audio_forward(cached_env):
  _, c, src_params, _ = cached_env
  model, _ = _params(c)
  audio = jax.random.normal(jax.random.PRNGKey(0), (2, 9600)) * 0.1
  alen = jnp.asarray([9600, 6000])
  text = jnp.asarray([[1, 5, 6, 7], [1, 8, 9, 0]])
  full = model.apply(src_params, audio, alen, text)
  frames, flen = model.apply(src_params, audio, alen, method="encode_frames")
  part = model.apply(src_params, frames, flen, text, method="forward_frames")
  np.testing.assert_allclose(np.asarray(part["logits"]), np.asarray(full["logits"]), atol=1e-5)


def test_pipeline_delivers_cached_frames(cached_env):
  root, c, _, _ = cached_env
  tok = tok_lib.train_tokenizer(c.data.train_manifests, root / "tok", vocab_size=48)
  cache = cache_lib.FeatureCache(root / "cache")
  mcfg = ModelConfig.from_config(c.model)
  import functools  # pylint: disable=import-outside-toplevel
  it = pipeline.make_train_iterator(c.data, tok, seed=0, process_index=0, process_count=1,
                                    feature_cache=cache,
                                    frames_for=functools.partial(pretrained.frames_for, mcfg=mcfg))
  batch = next(it)
  it.close()
  assert "audio" not in batch and batch["frames"].dtype == np.float16
  for r in np.flatnonzero(batch["audio_len"] > 0):
    n = int(batch["frames_len"][r])
    assert n == pretrained.frames_for(int(batch["audio_len"][r]), mcfg)
    assert np.all(batch["frames"][r, n:] == 0) and np.any(batch["frames"][r, :n] != 0)


def test_train_with_cache_keeps_the_pretrained_encoder(cached_env, tmp_path):
  root, c, src_params, _ = cached_env
  cfg = c.copy_and_resolve_references()
  cfg.data.feature_cache = str(root / "cache")
  cfg.data.batching = "random"
  cfg.data.batch_size = 4
  cfg.data.batch_size_multiple = 1
  cfg.train.update(steps=3, warmup_steps=1, checkpoint_every=3, log_every=1)
  out = train_and_evaluate(cfg, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert out["step"] == 3 and np.isfinite(out["train/loss"])
  from mtp_jax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  params = ckpt_lib.load_params(str(tmp_path / "run"))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               params["params"]["encoder"], src_params["params"]["encoder"])
  _, fresh = _params(c)
  assert not np.allclose(np.asarray(params["params"]["projector"]["fc1"]["kernel"]),
                         np.asarray(fresh["params"]["projector"]["fc1"]["kernel"]))
  # an unfrozen encoder cannot train from cached frames
  cfg.train.frozen = ""
  with pytest.raises(ValueError, match="needs a frozen encoder"):
    train_and_evaluate(cfg, str(tmp_path / "run2"), devices=jax.devices()[:1])


def test_whisper_speech_llama_counts_and_lengths():
  from mtp_jax import flops  # pylint: disable=import-outside-toplevel
  from mtp_jax.model.speech_llama import audio_token_count  # pylint: disable=import-outside-toplevel
  c = whisper_micro_config(k=3)
  model, params = _params(c)
  assert sum(x.size for x in jax.tree.leaves(params)) == flops.param_counts(model.cfg)["total"]
  assert flops.encoder_flops_per_second(model.cfg) > 0
  audio = jax.random.normal(jax.random.PRNGKey(2), (2, 9600)) * 0.1
  alen = jnp.asarray([9600, 4321])
  emb, valid, length = model.apply(params, audio, alen, method="encode")
  # 50 frames/s Whisper frames, stacked by 2
  assert [int(x) for x in length] == [audio_token_count(int(n), model.cfg) for n in alen] == [
      15, 7]
  assert valid.shape[1] == emb.shape[1] >= 15


def test_whisper_model_decodes_like_its_full_forward():
  """Greedy decoding over the KV cache == argmax of the teacher-forced forward."""
  from mtp_jax.decode import api  # pylint: disable=import-outside-toplevel
  c = whisper_micro_config(k=2)
  model, params = _params(c, seed=5)
  audio = jax.random.normal(jax.random.PRNGKey(3), (2, 9600)) * 0.1
  alen = jnp.asarray([9600, 7000])
  res = api.decode(model, params, audio, alen, strategy="greedy", max_new_tokens=5)
  ver = api.decode(model, params, audio, alen, strategy="verify", max_new_tokens=5)
  np.testing.assert_array_equal(np.asarray(res.tokens), np.asarray(ver.tokens))
  for r in range(2):
    n = int(res.lengths[r])
    text = jnp.concatenate([jnp.asarray([1]), res.tokens[r, :n]])[None]
    out = model.apply(params, audio[r:r + 1, :int(alen[r])], alen[r:r + 1], text)
    want = np.asarray(jnp.argmax(out["logits"][0, :, 0], -1))[:n]
    np.testing.assert_array_equal(np.asarray(res.tokens[r, :n]), want)


def test_projector_ctc_head():
  from mtp_jax import flops  # pylint: disable=import-outside-toplevel
  from mtp_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  from mtp_jax.decode import api  # pylint: disable=import-outside-toplevel
  c = whisper_micro_config(k=2)
  c.model.projector.ctc_head = True
  model, params = _params(c)
  assert model.cfg.ctc_head == "projector"
  assert sum(x.size for x in jax.tree.leaves(params)) == flops.param_counts(model.cfg)["total"]
  assert flops.param_counts(model.cfg)["ctc_head"] == 32 * 48 + 48  # d_dec -> vocab
  audio = jax.random.normal(jax.random.PRNGKey(2), (2, 9600)) * 0.1
  alen = jnp.asarray([9600, 4321])
  out = model.apply(params, audio, alen, jnp.ones((2, 3), jnp.int32))
  _, _, length = model.apply(params, audio, alen, method="encode")
  assert out["ctc_logits"].shape[:2] == (2, int(length.max()))
  np.testing.assert_array_equal(np.asarray(out["ctc_len"]), np.asarray(length))
  res = api.decode(model, params, audio, alen, strategy="ctc", max_new_tokens=8)
  assert int(res.total_calls) == 0 and res.tokens.shape == (2, 8)
  c.model.encoder.ctc_head = True
  with pytest.raises(ConfigError, match="set one"):
    ModelConfig.from_config(c.model)
