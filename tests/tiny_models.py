"""Tiny models for the tests: the one tiny ModelConfig, and decoding references on it.

* `TINY_MODEL`, `tiny_model_config`: the tests' tiny ModelConfig (width 32, one
  Conformer layer, two decoder layers, V=64, K=3 heads) with per-test overrides
  merged in section by section; tests get it as the `tiny_config` fixture
  (tests/conftest.py).
* `tiny_model`: a random model of that config with a stub audio side (`STUB_AUDIO`:
  no encoder layers), for tests where only the decoder matters (decoding);
  `text_model`: the same around a given decoder config (Hugging Face parity tests).
* `make_predictable`: rewrites a model's parameters so its greedy output follows a
  known token chain x -> perm(x) and heads k >= 2 draft perm^k(x) (exactly for
  `independent` heads, approximately for `latent` heads), so that multi-token
  acceptance paths are exercised (also used by bench/peer_decode.py).
* `reference_beam_search`: plain-python ordinary beam search (K=1 semantics of
  `beam.make_beam`) over full teacher-forced forwards.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.config import DecoderConfig, ModelConfig
from mtp_jax.decode.common import BOS, EOS
from mtp_jax.model.speech_llama import SpeechLLaMA

VOCAB = 64
TINY_MODEL = dict(
    encoder=dict(d_model=32, num_layers=1, num_heads=2, ff_mult=2, conv_kernel=5,
                 subsampling_channels=8, dropout=0.0),
    decoder=dict(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                 ff_dim=64),
)
# The audio side where only the decoder matters: 16 mels, no encoder layers, width 16.
STUB_AUDIO = dict(encoder=dict(d_model=16, num_layers=0, conv_kernel=3, subsampling_channels=4),
                  frontend=dict(num_mels=16))
# A tiny Whisper-style decoder (cross-attending to the audio tokens) on the stub audio side.
WHISPER_DECODER = dict(
    STUB_AUDIO, projector=dict(type="none", stack=1),
    decoder=dict(type="whisper", d_model=16, num_heads=2, num_kv_heads=2, ff_dim=32,
                 max_positions=32, max_text_len=24))


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
  """`base` with `overrides` merged in: dicts key by key (recursively), else replaced."""
  out = dict(base)
  for key, value in overrides.items():
    if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
      value = merged(out[key], value)
    out[key] = value
  return out


def tiny_model_config(head_type: str = "independent", k: int = 3, **overrides) -> ModelConfig:
  """`TINY_MODEL` with `k` heads of `head_type` and `overrides` merged in, e.g.
  `tiny_model_config(k=2, decoder=dict(num_layers=1), scan_layers=True)`.

  Raises:
    ConfigError: an invalid value (named), as `ModelConfig.from_config`.
  """
  mtp = dict(mtp=dict(num_heads=k, head_type=head_type))
  return ModelConfig.from_config(merged(merged(TINY_MODEL, mtp), overrides))


def tiny_model(head_type: str = "independent", k: int = 3, tie: bool = True,
               seed: int = 0, samples: int = 4000):
  """A random tiny model with the stub audio side, and its unboxed params."""
  cfg = tiny_model_config(head_type, k, **merged(STUB_AUDIO, dict(decoder=dict(
      tie_embeddings=tie))))
  model = SpeechLLaMA(cfg)
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, samples)),
                      jnp.full((1,), samples, jnp.int32), jnp.ones((1, 4), jnp.int32))
  return model, nn.unbox(params)


def text_model(decoder: DecoderConfig, k: int = 1, scan_layers: bool = False):
  """(cfg, SpeechLLaMA) around a given decoder (e.g. from a Hugging Face config), with
  the stub audio side: for text-only forwards (`hf_llama.text_logits`)."""
  cfg = dataclasses.replace(
      tiny_model_config("independent", k, scan_layers=scan_layers, **STUB_AUDIO),
      decoder=decoder)
  return cfg, SpeechLLaMA(cfg)


def random_audio(rng: np.random.Generator, lens, samples: int = 4000):
  """[B, S] noise with per-row lengths (0 = empty row)."""
  audio = rng.normal(size=(len(lens), samples)).astype(np.float32) * 0.1
  for i, n in enumerate(lens):
    audio[i, n:] = 0.0
  return jnp.asarray(audio), jnp.asarray(lens, jnp.int32)


def _rms_normed(x):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5)


def make_predictable(model, params, perm: np.ndarray, *, context: float = 0.0,
                     wrong_frac: float = 0.0, decoy_frac: float = 0.0, seed: int = 0):
  """Params whose head 1 maps the current token x to perm[x].

  The decoder blocks' output projections are scaled by `context` (0: the hidden
  state is exactly the token embedding, so the chain is exact), the untied head-1
  projection is set so argmax = perm[x]; `independent` heads k >= 2 get the
  projection for perm^k with a fraction `wrong_frac` of columns scrambled and, for
  a fraction `decoy_frac` of targets, a decoy column that outranks the right token
  (which stays second: tree verification can recover it),
  `latent` heads a map sending the chain's embeddings to perm^(k-1)'s.
  Requires `tie_embeddings=False`.
  """
  cfg = model.cfg
  assert not cfg.decoder.tie_embeddings and cfg.mtp.head_type in ("independent", "latent")
  rng = np.random.default_rng(seed)
  p = jax.tree_util.tree_map(np.array, params)
  pp = p["params"]
  for name, layer in pp["decoder"].items():
    layer["attn"]["o"]["kernel"] *= context
    layer["mlp"]["wo"]["kernel"] *= context
  pp["final_norm"]["scale"][:] = 1.0
  e = _rms_normed(pp["embed"]["embedding"])          # [V, d]
  v = e.shape[0]
  inv = np.argsort(perm)

  def proj_for(power):
    src = np.arange(v)
    for _ in range(power):
      src = inv[src]                                  # column v scores x with perm^power(x)=v
    return 0.5 * e[src].T                            # [d, V]

  pp["unembed"]["proj"]["kernel"] = proj_for(1)
  for kk in range(2, cfg.mtp.num_heads + 1):
    mtp = pp["mtp"]
    if cfg.mtp.head_type == "independent":
      mtp[f"res{kk}"]["kernel"][:] = 0.0
      mtp[f"res{kk}"]["bias"][:] = 0.0
      w = proj_for(kk)
      bad = rng.random(v) < wrong_frac
      w[:, bad] = w[:, rng.permutation(np.flatnonzero(bad))] if bad.any() else w[:, bad]
      cols = np.flatnonzero(~bad & (rng.random(v) < decoy_frac))
      decoys = rng.permutation(np.setdiff1d(np.arange(v), cols))[:len(cols)]
      w[:, decoys] += 1.05 * w[:, cols[:len(decoys)]]
      mtp[f"out{kk}"]["kernel"] = w
    else:
      # A d x d map cannot move all V embeddings; fit it exactly on the chain's tokens
      # (at most d of them), a fraction `wrong_frac` of them towards random targets.
      toks = np.array([BOS] + chain(perm, cfg.decoder.d_model - 1))
      target = toks.copy()
      for _ in range(kk - 1):
        target = perm[target]
      bad = rng.random(len(toks)) < wrong_frac
      target[bad] = rng.integers(0, v, bad.sum())
      m, *_ = np.linalg.lstsq(e[toks], e[target], rcond=None)
      mtp[f"map{kk}"]["kernel"] = m.astype(np.float32)
      mtp[f"norm{kk}"]["scale"][:] = 1.0
  return jax.tree_util.tree_map(jnp.asarray, p)


def chain(perm: np.ndarray, max_new_tokens: int) -> list[int]:
  """Greedy output of a `make_predictable(context=0)` model (EOS excluded)."""
  out, x = [], BOS
  for _ in range(max_new_tokens):
    x = int(perm[x])
    if x == EOS:
      break
    out.append(x)
  return out


@functools.lru_cache(maxsize=None)
def _forward(model):
  return jax.jit(lambda p, a, l, t: model.apply(p, a, l, t)["logits"])


def reference_beam_search(model, params, audio, audio_len, *, beam: int,
                          max_new_tokens: int):
  """Ordinary beam search for one utterance (audio [1, S]) over full forwards.

  Returns [(tokens tuple, total log-prob, normalized score)] sorted best first.
  Semantics of `beam.make_beam` with K=1: live beams expand by their top-`beam`
  tokens, finished ones (EOS or max length) stay as candidates, the best `beam`
  by log-prob / (tokens + [EOS]) survive.
  """
  n, w = max_new_tokens, beam
  fwd = lambda t: _forward(model)(params, audio, audio_len, t)  # noqa: E731

  def logp(tokens):
    t = np.zeros((1, n + 1), np.int32)
    t[0, 0] = BOS
    t[0, 1:len(tokens) + 1] = tokens
    lg = np.asarray(fwd(jnp.asarray(t)))[0, len(tokens), 0]
    return np.asarray(jax.nn.log_softmax(jnp.asarray(lg)))

  def key(h):
    toks, score, fin, eos = h
    return score / max(len(toks) + int(eos), 1)

  beams = [((), 0.0, False, False)]
  first = True
  while first or any(not h[2] for h in beams):
    cands = []
    for h in beams:
      if h[2]:
        cands.append(h)
        continue
      lp = logp(h[0])
      for x in np.argsort(-lp, kind="stable")[:w]:
        x = int(x)
        eos = x == EOS
        toks = h[0] if eos else h[0] + (x,)
        cands.append((toks, h[1] + float(lp[x]), eos or len(toks) >= n, eos))
    beams = sorted(cands, key=lambda h: -key(h))[:w]
    first = False
  return [(h[0], h[1], key(h)) for h in beams]
