"""configs/recipes/whisper_llama_gpu.py end to end on tiny random checkpoints: a Whisper
encoder written in Hugging Face and in CTranslate2 format, a Hugging Face LLaMA decoder;
config from the checkpoints, import, frozen-encoder training, decoding."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.config import ConfigError, ModelConfig, load_config_file
from mtp_jax.data.tokenizer import train_tokenizer
from mtp_jax.decode import api
from mtp_jax.interop import hf_llama
from mtp_jax.interop import whisper as whisper_io
from mtp_jax.model.speech_llama import SpeechLLaMA
from mtp_jax.train.loop import train_and_evaluate
from test_pretrained_encoder import _params
from train_helpers import whisper_micro_config
from train_helpers import write_synthetic_manifest

RECIPE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "recipes" / "whisper_llama_gpu.py"


@pytest.mark.slow  # long; `-m slow` runs it
@pytest.mark.parametrize("fmt", ["hf", "ct2"])
def test_whisper_llama_recipe_end_to_end(tmp_path, fmt):
  c = whisper_micro_config(k=2)
  _, src = _params(c, seed=11)
  shp = whisper_io.EncoderShape(32, 1, 2, 2, 80, 64)
  wdir = tmp_path / "whisper"
  if fmt == "hf":
    whisper_io.save_hf_encoder(src["params"]["encoder"], shp, wdir)
  else:
    wdir.mkdir()
    whisper_io.write_ct2_model(wdir / "model.bin", "WhisperSpec",
                               whisper_io.params_to_ct2(src["params"]["encoder"], num_heads=2))
  ldir = hf_llama.save_hf_checkpoint(src["params"], ModelConfig.from_config(c.model).decoder,
                                     tmp_path / "llama")
  manifest = write_synthetic_manifest(tmp_path / "data", n=8)
  with pytest.raises(ConfigError, match="tokenizer.model nor .*tokenizer.json"):
    load_config_file(RECIPE, f"whisper={wdir},llama={ldir},K=2,steps=2")
  # The LLaMA's own tokenizer (here one trained for the random checkpoint) comes with it.
  train_tokenizer(manifest, ldir, vocab_size=48)
  cfg = load_config_file(RECIPE, f"whisper={wdir},llama={ldir},K=2,steps=2")
  assert cfg.data.tokenizer.path == str(ldir / "tokenizer.model")
  m = ModelConfig.from_config(cfg.model)
  assert (m.encoder.type, m.encoder.d_model, m.encoder.max_positions) == ("whisper", 32, 64)
  assert (m.decoder.d_model, m.decoder.vocab_size) == (32, 48)
  cfg.data.update(train_manifests=manifest, dev_manifest="", batching="random", batch_size=4,
                  batch_size_multiple=1, max_duration=1.2)
  cfg.data.tokenizer.vocab_size = 48
  cfg.train.update(log_every=1, checkpoint_every=2, warmup_steps=1)
  out = train_and_evaluate(cfg, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert out["step"] == 2 and np.isfinite(out["train/loss"])
  config, params, tok = ckpt_lib.restore_for_inference(str(tmp_path / "run"))
  # the frozen encoder is exactly the imported checkpoint (bf16 compute, fp32 params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               params["params"]["encoder"], src["params"]["encoder"])
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  audio = jax.random.normal(jax.random.PRNGKey(0), (2, 8000)) * 0.1
  res = api.decode(model, params, audio, jnp.asarray([8000, 5000]), strategy="greedy",
                   max_new_tokens=6)
  assert res.tokens.shape == (2, 6)
