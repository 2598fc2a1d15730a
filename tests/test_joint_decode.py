"""Joint CTC / decoder beam search (`strategy="joint"`): CTC prefix scores against brute
force, ctc_weight 0 at beam 1 is greedy, every returned score is the decoder's and the
CTC head's log-probs recomputed from scratch, rows are independent, bad options fail."""
import dataclasses
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtp_jax.decode import api
from mtp_jax.decode.common import BOS, EOS
from mtp_jax.decode.joint import advance, initial_forward, prefix_scores
from mtp_jax.model.speech_llama import SpeechLLaMA
from tiny_models import STUB_AUDIO, make_predictable, merged, random_audio, tiny_model_config

jax.config.update("jax_default_matmul_precision", "highest")


def _collapse(path):
  out, prev = [], 0
  for x in path:
    if x != 0 and x != prev:
      out.append(int(x))
    prev = x
  return out


def _brute(logp, h, exact):
  """log of the total probability of the frame paths whose collapse is h (exact) or
  starts with h."""
  t, v = logp.shape
  total = 0.0
  for path in itertools.product(range(v), repeat=t):
    out = _collapse(path)
    if (out == h) if exact else (out[:len(h)] == h):
      total += np.exp(sum(logp[i, p] for i, p in enumerate(path)))
  return np.log(total) if total > 0 else -np.inf


@pytest.mark.parametrize("frames", [5, 3])
def test_prefix_scores_and_forward_variables_match_brute_force(frames):
  """Hypotheses over labels {1, 3, 4} (2 is EOS: the exact probability of h), grown
  token by token with `advance`, against sums over all 5^5 frame paths."""
  rng = np.random.default_rng(frames)
  t, v = 5, 5
  logp = np.asarray(jax.nn.log_softmax(rng.normal(size=(t, v)) * 1.5, -1))
  cand = jnp.asarray([[1, 3, 4, EOS, 0]], jnp.int32)
  tok_lp = jnp.asarray(logp.T[np.asarray(cand[0])][None])                # [1, M, T]
  blank = jnp.asarray(logp[None, :, 0])
  n = jnp.asarray([frames], jnp.int32)
  for h in ([], [3], [1, 1], [4, 1], [1, 3, 4]):
    r_n, r_b = initial_forward(blank)
    last = jnp.asarray([-1], jnp.int32)
    for x in h:
      r_n, r_b = advance(jnp.asarray(logp[None, :, x]), blank, r_n, r_b, last,
                         jnp.asarray([x], jnp.int32))
      last = jnp.asarray([x], jnp.int32)
    got = np.asarray(prefix_scores(tok_lp, r_n, r_b, last, cand, n))[0]
    want = [_brute(logp[:frames], h + [c], exact=False) for c in (1, 3, 4)]
    want += [_brute(logp[:frames], h, exact=True), -np.inf]  # EOS: exactly h; blank: none
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _ctc_model(untied=False, seed=0):
  over = dict(projector=dict(ctc_head=True, ctc_tied=not untied, ctc_compress=not untied),
              decoder=dict(vocab_size=40, num_layers=1, tie_embeddings=not untied))
  cfg = tiny_model_config(k=2, **merged(STUB_AUDIO, over))
  model = SpeechLLaMA(cfg)
  audio, alen = random_audio(np.random.default_rng(seed), [4000, 2500, 0, 3200])
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), audio, alen,
                               jnp.ones((4, 3), jnp.int32)))
  return model, params, audio, alen


@pytest.mark.parametrize("reduced", [False, True])
def test_without_ctc_weight_beam_1_is_greedy(reduced):
  """Also under FastAdaSP prefill merging (the same reduced model for both)."""
  model, params, audio, alen = _ctc_model(untied=True)
  perm = np.random.default_rng(1).permutation(40)
  params = make_predictable(model, params, perm, context=0.6)
  if reduced:
    red = dataclasses.replace(model.cfg.reduction, method="fastadasp_dense", ratio=0.3,
                              start_layer=0)
    model = SpeechLLaMA(dataclasses.replace(model.cfg, reduction=red))
  g = api.decode(model, params, audio, alen, strategy="greedy", max_new_tokens=12)
  j = api.decode(model, params, audio, alen, strategy="joint", max_new_tokens=12, beam=1,
                 ctc_weight=0.0, pre_beam=3)
  assert len(set(np.asarray(g.lengths).tolist())) > 1  # rows differ; some end with EOS
  np.testing.assert_array_equal(j.tokens, g.tokens)
  np.testing.assert_array_equal(j.lengths, g.lengths)
  np.testing.assert_array_equal(j.calls, g.calls)
  assert int(j.total_calls) == int(g.total_calls)


@pytest.mark.parametrize("lam,bonus", [(0.4, 0.0), (1.0, 0.5)])
def test_every_hypothesis_score_is_recomputed_from_scratch(lam, bonus):
  """nbest_logprob = the decoder's teacher-forced log-prob of h (+ EOS when it ended),
  nbest_scores = (1 - w) * that + w * CTC (log p of exactly h, optax's CTC loss) + bonus
  * |h|; the best hypothesis is the first; a padding row returns nothing."""
  model, params, audio, alen = _ctc_model()
  n = 8
  r = api.decode(model, params, audio, alen, strategy="joint", max_new_tokens=n, beam=3,
                 ctc_weight=lam, pre_beam=5, length_bonus=bonus)
  logits, clen = model.apply(params, audio, alen, method="ctc")
  checked = 0
  for b in range(audio.shape[0]):
    if int(alen[b]) == 0:
      assert int(r.lengths[b]) == 0 and not np.isfinite(np.asarray(r.nbest_scores[b])).any()
      continue
    np.testing.assert_array_equal(r.tokens[b], r.nbest[b, 0])
    scores = np.asarray(r.nbest_scores[b])
    assert (np.diff(scores[np.isfinite(scores)]) <= 0).all()
    for k in range(3):
      if not np.isfinite(scores[k]):
        continue
      h = np.asarray(r.nbest[b, k, :int(r.nbest_lengths[b, k])]).tolist()
      assert 0 not in h
      ended = len(h) < n  # otherwise cut at max_new_tokens: no EOS, CTC prefix score
      text = jnp.asarray([[BOS] + h + ([EOS] if ended else [])], jnp.int32)
      out = model.apply(params, audio[b:b + 1], alen[b:b + 1], text[:, :-1])
      lp = jax.nn.log_softmax(out["logits"][0, :, 0], -1)
      dec = float(jnp.sum(lp[jnp.arange(text.shape[1] - 1), text[0, 1:]]))
      np.testing.assert_allclose(float(r.nbest_logprob[b, k]), dec, rtol=1e-4, atol=1e-4)
      if not ended:
        continue
      lab = jnp.asarray([h + [0]], jnp.int32)
      nll = optax.ctc_loss(logits[b:b + 1], (jnp.arange(logits.shape[1]) >= clen[b])[None]
                           .astype(jnp.float32), lab,
                           (jnp.arange(len(h) + 1) >= len(h))[None].astype(jnp.float32))
      want = (1 - lam) * dec - lam * float(nll[0]) + bonus * len(h)
      np.testing.assert_allclose(scores[k], want, rtol=1e-4, atol=1e-4)
      checked += 1
  assert checked >= 3


def test_rows_are_independent():
  model, params, audio, alen = _ctc_model(seed=2)
  kw = dict(strategy="joint", max_new_tokens=8, beam=2, ctc_weight=0.5, pre_beam=4)
  full = api.decode(model, params, audio, alen, **kw)
  for b in (0, 1, 3):
    m = int(alen[b])
    one = api.decode(model, params, audio[b:b + 1, :m], alen[b:b + 1], **kw)
    np.testing.assert_array_equal(one.tokens[0], full.tokens[b])
    np.testing.assert_allclose(one.nbest_scores[0], full.nbest_scores[b], rtol=1e-5)


def test_bad_options_and_models_are_clear_errors():
  model, *_ = _ctc_model()
  for bad in (1.5, -0.1, "half", float("nan")):
    with pytest.raises(ValueError, match="ctc_weight"):
      api.make_decode_fn(model, strategy="joint", max_new_tokens=4, ctc_weight=bad)
  with pytest.raises(ValueError, match="length_bonus"):
    api.make_decode_fn(model, strategy="joint", max_new_tokens=4, length_bonus="x")
  with pytest.raises(ValueError, match="pre_beam"):
    api.make_decode_fn(model, strategy="joint", max_new_tokens=4, pre_beam=0)
  plain = SpeechLLaMA(tiny_model_config(k=2, **STUB_AUDIO))
  with pytest.raises(ValueError, match="ctc_head"):
    api.make_decode_fn(plain, strategy="joint", max_new_tokens=4)
