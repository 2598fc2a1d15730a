"""The projector's audio tokens at the decoder embeddings' size (`projector.out_rms`)."""
import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.model.speech_llama import SpeechLLaMA
from tiny_models import STUB_AUDIO, merged, random_audio, tiny_model_config


def _tokens(out_rms):
  cfg = tiny_model_config("independent", 1, **merged(STUB_AUDIO, dict(
      projector=dict(out_rms=out_rms))))
  model = SpeechLLaMA(cfg)
  audio, audio_len = random_audio(np.random.default_rng(0), [4000, 2000])
  params = model.init(jax.random.PRNGKey(0), audio, audio_len, jnp.ones((2, 3), jnp.int32))
  emb, valid, _ = model.apply(params, audio, audio_len, method="encode")
  return np.asarray(emb), np.asarray(valid)


def test_out_rms_sets_each_audio_tokens_rms():
  emb, valid = _tokens(0.136)
  rms = np.sqrt(np.mean(emb[valid] ** 2, axis=-1))
  np.testing.assert_allclose(rms, 0.136, rtol=1e-3)
  assert np.all(emb[~valid] == 0)
  plain, _ = _tokens(0.0)
  assert abs(np.sqrt(np.mean(plain[valid] ** 2)) - 0.136) > 0.05
