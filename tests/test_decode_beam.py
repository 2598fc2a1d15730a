"""Block beam search: W=1 is greedy, K=1 is ordinary beam search, exact distinct N-best."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.decode.api import decode
from mtp_jax.decode.common import BOS, EOS
import tiny_models


@functools.lru_cache(maxsize=None)
def model_for(head_type, k):
  return tiny_models.tiny_model(head_type, k, tie=False)


def run(model, params, audio, alen, strategy, n, **kw):
  res = decode(model, params, audio, alen, strategy=strategy, max_new_tokens=n, **kw)
  return jax.tree_util.tree_map(np.asarray, res)


def test_beam_width_one_is_greedy():
  model, params = model_for("sequential", 3)
  audio, alen = tiny_models.random_audio(np.random.default_rng(11), [4000, 2000, 0])
  g = run(model, params, audio, alen, "greedy", 10)
  v = run(model, params, audio, alen, "verify", 10)
  b = run(model, params, audio, alen, "beam", 10, beam=1)
  np.testing.assert_array_equal(b.tokens, g.tokens)
  np.testing.assert_array_equal(b.lengths, g.lengths)
  np.testing.assert_array_equal(b.calls, v.calls)
  np.testing.assert_array_equal(b.nbest[:, 0], g.tokens)


def test_k1_beam_is_ordinary_beam_search():
  model, params = model_for("independent", 1)
  audio, alen = tiny_models.random_audio(np.random.default_rng(12), [4000, 2500])
  n, w = 5, 3
  r = run(model, params, audio, alen, "beam", n, beam=w)
  for i in range(2):
    ref = tiny_models.reference_beam_search(model, params, audio[i:i + 1], alen[i:i + 1],
                                            beam=w, max_new_tokens=n)
    for j, (toks, logprob, score) in enumerate(ref):
      assert tuple(r.nbest[i, j, :r.nbest_lengths[i, j]]) == toks, (i, j, r.nbest[i], ref)
      np.testing.assert_allclose(r.nbest_logprob[i, j], logprob, rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(r.nbest_scores[i, j], score, rtol=1e-4, atol=1e-4)


def test_nbest_sorted_distinct_and_exactly_scored():
  """K=3 blocks: N-best sorted, distinct, and each score is the exact head-1 log-prob."""
  model, params = model_for("latent", 3)
  audio, alen = tiny_models.random_audio(np.random.default_rng(13), [4000, 3000])
  n, w = 6, 4
  r = run(model, params, audio, alen, "beam", n, beam=w)
  text = np.zeros((2 * w, n + 1), np.int32)
  text[:, 0] = BOS
  text[:, 1:] = r.nbest.reshape(2 * w, n)
  logits = model.apply(params, jnp.repeat(audio, w, 0), jnp.repeat(alen, w, 0),
                       jnp.asarray(text))["logits"][:, :, 0]
  lp = np.asarray(jax.nn.log_softmax(logits, -1)).reshape(2, w, n + 1, -1)
  for i in range(2):
    scores = r.nbest_scores[i]
    assert np.all(np.diff(scores) <= 0), scores
    seqs = [tuple(r.nbest[i, j, :r.nbest_lengths[i, j]]) for j in range(w)
            if np.isfinite(scores[j])]
    assert len(set(seqs)) == len(seqs) >= 2
    for j, s in enumerate(seqs):
      want = sum(lp[i, j, t, tok] for t, tok in enumerate(s))
      ended = len(s) < n
      if ended:
        want += lp[i, j, len(s), EOS]
      np.testing.assert_allclose(r.nbest_logprob[i, j], want, rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(scores[j], want / (len(s) + ended), rtol=1e-4, atol=1e-4)
    assert r.calls[i] <= n + 1
