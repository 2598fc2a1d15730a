"""Greedy / threshold / verify decoding: equivalences, call counters, per-row stopping."""
import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.config import HEAD_TYPES, KernelsConfig
from mtp_jax.decode import common, registry
from mtp_jax.decode.api import decode
from mtp_jax.decode.summary import calls_ceiling
from mtp_jax.decode.common import EOS, PAD
from mtp_jax.decode.verify import Verify, kernel_accept, reference_accept
from mtp_jax.model.heads import DECODE, decode_layout
import tiny_models

N = 10  # one shape/length everywhere ([3, 4000] audio): tests share compiled functions
SETTINGS = hypothesis.settings(max_examples=2, deadline=None, derandomize=False,
                               suppress_health_check=list(hypothesis.HealthCheck))


@functools.lru_cache(maxsize=None)
def model_for(head_type, k=3, tie=False, seed=0):
  return tiny_models.tiny_model(head_type, k, tie, seed)


def run(model, params, audio, alen, strategy, n=N, **kw):
  res = decode(model, params, audio, alen, strategy=strategy, max_new_tokens=n, **kw)
  return jax.tree_util.tree_map(np.asarray, res)


def lens_strategy():
  return st.lists(st.sampled_from([0, 1500, 2500, 4000]), min_size=3, max_size=3)


@pytest.mark.parametrize("head_type", HEAD_TYPES)
@SETTINGS
@hypothesis.given(seed=st.integers(0, 2 ** 16), lens=lens_strategy())
def test_verify_equals_greedy_random_models(head_type, seed, lens):
  model, params = model_for(head_type)
  audio, alen = tiny_models.random_audio(np.random.default_rng(seed), lens)
  g = run(model, params, audio, alen, "greedy")
  v = run(model, params, audio, alen, "verify")
  np.testing.assert_array_equal(v.tokens, g.tokens)
  np.testing.assert_array_equal(v.lengths, g.lengths)
  assert np.all(v.calls <= g.calls)
  np.testing.assert_array_equal(v.accepted.sum(1), v.lengths)
  np.testing.assert_array_equal(g.calls[alen == 0], 0)
  if head_type != "sequential":  # one head type suffices (saves compiles)
    return
  # Threshold above 1 accepts head 1 only: greedy, with greedy's (K=1) call count.
  t = run(model, params, audio, alen, "threshold", threshold=1.5)
  np.testing.assert_array_equal(t.tokens, g.tokens)
  np.testing.assert_array_equal(t.calls, g.calls)
  np.testing.assert_array_equal(t.accepted[:, 1:], 0)


@pytest.mark.parametrize("head_type", ["independent", "latent"])
def test_verify_equals_greedy_with_accepting_heads(head_type):
  """Heads 2..K made to draft the chain (partly wrong): multi-token paths happen."""
  model, params = model_for(head_type)
  rng = np.random.default_rng(7)
  params = tiny_models.make_predictable(model, params, rng.permutation(tiny_models.VOCAB),
                                        context=0.05, wrong_frac=0.3)
  audio, alen = tiny_models.random_audio(rng, [4000, 0, 3000])
  g = run(model, params, audio, alen, "greedy")
  v = run(model, params, audio, alen, "verify")
  np.testing.assert_array_equal(v.tokens, g.tokens)
  np.testing.assert_array_equal(v.lengths, g.lengths)
  assert v.accepted[:, 1:].sum() > 0 and np.all(v.calls <= g.calls) and v.calls.sum() < g.calls.sum()
  assert np.any(v.accepted[:, 1:].sum(1) < (v.calls - 1) * 2), "some drafts must be rejected"
  # Rejected drafts cost calls: above the every-draft-accepted bound, never below it.
  ceiling = calls_ceiling(g.calls, model.cfg.mtp.num_heads)
  assert np.all(v.calls >= ceiling) and v.calls.sum() > ceiling.sum(), (v.calls, ceiling)


def _cycle_perm(first_tokens, rng):
  """A permutation with BOS -> first_tokens[0] -> ... -> first_tokens[-1]."""
  v = tiny_models.VOCAB
  rest = [t for t in rng.permutation(v) if t not in first_tokens and t != 1]
  order = [1] + list(first_tokens) + rest
  perm = np.empty(v, np.int64)
  for a, b in zip(order, order[1:] + order[:1]):
    perm[a] = b
  return perm


def test_call_counters_exact_hand_built():
  """Exact drafts (K=3): chain y1..y5 then EOS."""
  model, params = model_for("independent")
  rng = np.random.default_rng(0)
  perm = _cycle_perm([10, 11, 12, 13, 14, EOS], rng)
  params = tiny_models.make_predictable(model, params, perm, context=0.0)
  audio, alen = tiny_models.random_audio(rng, [4000, 0, 3000])
  want = np.array([10, 11, 12, 13, 14] + [PAD] * 5)
  cases = {  # strategy, n, extra -> (tokens, calls per live row, accepted per head)
      ("greedy", 10): (want, 6, [5, 0, 0]),
      ("verify", 10): (want, 3, [2, 2, 1]),       # y1 | y2 y3 +y4 | y5 (EOS draft)
      ("beam", 10): (want, 3, [2, 2, 1]),
      ("threshold", 10): (want, 2, [2, 2, 1]),    # y1 y2 y3 | y4 y5 (EOS)
  }
  got = {}
  for (strategy, n), (toks, calls, acc) in cases.items():
    kw = dict(beam=1) if strategy == "beam" else dict(threshold=0.0)
    r = got[strategy] = run(model, params, audio, alen, strategy, n=n, **kw)
    for row in (0, 2):
      np.testing.assert_array_equal(r.tokens[row], toks, err_msg=strategy)
      assert r.calls[row] == calls, (strategy, n, r.calls)
      np.testing.assert_array_equal(r.accepted[row], acc, err_msg=f"{strategy} {n}")
    assert r.calls[1] == 0 and r.lengths[1] == 0
    assert int(r.total_calls) == calls
  # Every draft right: verify makes exactly the fewest calls an exact strategy can.
  np.testing.assert_array_equal(calls_ceiling(got["greedy"].calls, 3), got["verify"].calls)


@pytest.mark.parametrize("strategy", ["threshold", "verify", "beam"])
def test_batched_equals_unbatched(strategy):
  """A row's result does not depend on its batch companions (nor on its slot)."""
  model, params = model_for("sequential")
  audio, alen = tiny_models.random_audio(np.random.default_rng(3), [4000, 1500, 3000])
  kw = dict(threshold=0.05, beam=2)
  full = run(model, params, audio, alen, strategy, **kw)
  other, _ = tiny_models.random_audio(np.random.default_rng(4), [4000, 4000, 4000])
  for i in range(3):  # row i alone in slot 2, next to other utterances
    mixed_audio = jnp.concatenate([other[:2], audio[i:i + 1]])
    mixed_len = jnp.concatenate([jnp.array([4000, 0], jnp.int32), alen[i:i + 1]])
    mixed = run(model, params, mixed_audio, mixed_len, strategy, **kw)
    np.testing.assert_array_equal(mixed.tokens[2], full.tokens[i])
    assert mixed.calls[2] == full.calls[i]
    np.testing.assert_array_equal(mixed.accepted[2], full.accepted[i])
  if strategy == "beam":  # and a true batch of one (a separate compile)
    one = run(model, params, audio[:1], alen[:1], strategy, **kw)
    np.testing.assert_array_equal(one.nbest[0], full.nbest[0])
    np.testing.assert_allclose(one.nbest_scores[0], full.nbest_scores[0], rtol=1e-5)


def test_greedy_per_row_eos_and_max_length():
  """Greedy against teacher-forced full forwards, rows stopping at different steps."""
  model, params = model_for("independent")
  audio, alen = tiny_models.random_audio(np.random.default_rng(5), [4000, 3500, 2500])
  # EOS takes over the direction of a token row 0 emits third: rows stop where they
  # would have emitted it (row 0 after 2 tokens), or run to the length limit.
  t = run(model, params, audio, alen, "greedy").tokens[0, 2]
  params = jax.tree_util.tree_map(lambda x: x, params)
  proj = params["params"]["unembed"]["proj"]["kernel"]
  params["params"]["unembed"]["proj"]["kernel"] = proj.at[:, EOS].set(1.05 * proj[:, t])
  g = run(model, params, audio, alen, "greedy")
  text = np.concatenate([np.ones((3, 1), np.int32), g.tokens], 1)
  logits = model.apply(params, audio, alen, jnp.asarray(text))["logits"][:, :, 0]
  amax = np.asarray(jnp.argmax(logits, -1))
  for b in range(3):
    n = g.lengths[b]
    np.testing.assert_array_equal(amax[b, :n], g.tokens[b, :n])
    assert np.all(g.tokens[b, n:] == PAD) and not np.any(g.tokens[b, :n] == EOS)
    if n < N:
      assert amax[b, n] == EOS and g.calls[b] == n + 1
    else:
      assert g.calls[b] == N
  assert np.any(g.lengths < N) and np.any(g.lengths == N), g.lengths


@pytest.mark.parametrize("head_type", [
    "independent",
    pytest.param("latent", marks=pytest.mark.slow),
    pytest.param("sequential", marks=pytest.mark.slow)])
def test_tree_equals_greedy(head_type):
  model, params = model_for(head_type)
  rng = np.random.default_rng(21)
  if head_type == "independent":  # top-1 drafts often wrong with the right token second
    params = tiny_models.make_predictable(model, params, rng.permutation(tiny_models.VOCAB),
                                          context=0.05, decoy_frac=0.5)
  audio, alen = tiny_models.random_audio(rng, [4000, 0, 3000])
  g = run(model, params, audio, alen, "greedy")
  v = run(model, params, audio, alen, "verify")
  t = run(model, params, audio, alen, "tree")
  np.testing.assert_array_equal(t.tokens, g.tokens)
  np.testing.assert_array_equal(t.lengths, g.lengths)
  np.testing.assert_array_equal(t.accepted.sum(1), t.lengths)
  assert np.all(t.calls <= g.calls) and t.calls[1] == 0
  assert np.all(t.calls >= calls_ceiling(g.calls, model.cfg.mtp.num_heads))
  if head_type == "independent":
    assert t.calls.sum() < v.calls.sum(), (t.calls, v.calls)


def _drafting_latent_model():
  """A latent-heads model whose heads draft the chain (30% wrong), and its audio."""
  model, params = model_for("latent")
  rng = np.random.default_rng(7)
  params = tiny_models.make_predictable(model, params, rng.permutation(tiny_models.VOCAB),
                                        context=0.05, wrong_frac=0.3)
  audio, alen = tiny_models.random_audio(rng, [4000, 0, 3000])
  return model, params, audio, alen


def test_verify_with_fused_kernel_equals_greedy():
  """The model's kernel switch (Pallas interpreter on CPU) gives the same tokens and calls;
  typical acceptance keeps the reference path."""
  model, params, audio, alen = _drafting_latent_model()
  v = run(model, params, audio, alen, "verify")
  kernel_model = model.clone(kernels=KernelsConfig(enabled=True))
  assert Verify(kernel_model, max_new_tokens=N).accept is kernel_accept
  assert Verify(kernel_model, max_new_tokens=N, typical=(0.3, 0.09)).accept is reference_accept
  kv = run(kernel_model, params, audio, alen, "verify")
  np.testing.assert_array_equal(kv.tokens, v.tokens)
  np.testing.assert_array_equal(kv.calls, v.calls)
  np.testing.assert_array_equal(kv.accepted, v.accepted)


@pytest.mark.parametrize("strategy", ["verify", "tree"])
def test_one_pass_and_two_pass_drafts_agree(strategy):
  """Drafts read from the call's own all-heads matmul (one pass) or from a second matmul
  at the accepted position (two passes): the same tokens, calls and per-head credit,
  both equal to greedy."""
  model, params, audio, alen = _drafting_latent_model()
  g = run(model, params, audio, alen, "greedy")
  res = []
  for rows in (0, 10 ** 6):
    s = registry.get(strategy).build(model, max_new_tokens=N)
    s.one_pass_max_rows = rows
    assert common.one_pass(3, s.feed_width, 3, rows) == bool(rows)
    res.append(jax.tree_util.tree_map(np.asarray, jax.jit(s)(params, audio, alen)))
  two, one = res
  for key in ("tokens", "lengths", "calls", "accepted"):
    np.testing.assert_array_equal(one[key], two[key], err_msg=key)
  np.testing.assert_array_equal(one["tokens"], g.tokens)
  assert one["accepted"][:, 1:].sum() > 0


def test_decode_layout_same_logits_and_tokens():
  """The tied unembedding's decoding copy ([d, V], collection "decode") gives the
  logits of the [V, d] embedding (float summation order aside) and the same greedy and
  verify output; an untied model is left as it is."""
  model, params = model_for("latent", tie=True)
  fast = decode_layout(params, tie_embeddings=True)
  kernel = fast[DECODE]["unembed"]["kernel"]
  assert kernel.shape == params["params"]["embed"]["embedding"].shape[::-1]
  np.testing.assert_array_equal(kernel, params["params"]["embed"]["embedding"].T)
  assert decode_layout(fast, True) is fast
  untied = model_for("latent")[1]
  assert decode_layout(untied, tie_embeddings=False) is untied
  h = jax.random.normal(jax.random.PRNGKey(3), (2, 5, model.cfg.decoder.d_model))
  ref = model.apply(params, h, method=model.heads)
  got = model.apply(fast, h, method=model.heads)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(ref))))
  np.testing.assert_array_equal(model.apply(fast, method=model.unembedding_matrix), kernel)
  audio, alen = tiny_models.random_audio(np.random.default_rng(5), [4000, 2500, 0])
  for strategy in ("greedy", "verify"):
    a = run(model, params, audio, alen, strategy)
    b = run(model, fast, audio, alen, strategy)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.calls, b.calls)


@SETTINGS
@hypothesis.given(seed=st.integers(0, 2 ** 16), ties=st.booleans(), nan=st.booleans())
def test_argmax_equals_jnp_argmax(seed, ties, nan):
  """`common.argmax` = jnp.argmax: the first maximum, the first NaN when there is one."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(4, 3, 37)).astype(np.float32)
  if ties:
    x = np.round(x)  # many equal maxima
  if nan:
    x[1, 2, rng.integers(37)] = np.nan
  np.testing.assert_array_equal(common.argmax(jnp.asarray(x)),
                                np.asarray(jnp.argmax(jnp.asarray(x), axis=-1)))
  big = np.repeat(x, common.TWO_PASS_ARGMAX_MAX // x.size + 1, axis=0)  # jnp.argmax's path
  np.testing.assert_array_equal(common.argmax(jnp.asarray(big)),
                                np.repeat(np.asarray(jnp.argmax(jnp.asarray(x), -1)),
                                          common.TWO_PASS_ARGMAX_MAX // x.size + 1, axis=0))


def test_verify_with_draft_shortlist_equals_greedy():
  """Heads 2..K drafting among the first N token ids only (verify, tree): the output
  stays greedy's; N = 0 or >= V is the full vocabulary; heads without the shared
  unembedding refuse."""
  model, params, audio, alen = _drafting_latent_model()
  g = run(model, params, audio, alen, "greedy")
  full = run(model, params, audio, alen, "verify")
  v = model.cfg.decoder.vocab_size
  for n in (v // 2, 3):
    s = run(model, params, audio, alen, "verify", draft_vocab=n)
    one = Verify(model, max_new_tokens=N, draft_vocab=n)
    one.one_pass_max_rows = 10 ** 6  # the shortlist's logits from the call itself
    o = jax.tree_util.tree_map(np.asarray, jax.jit(one)(params, audio, alen))
    for key in ("tokens", "calls", "accepted"):
      np.testing.assert_array_equal(o[key], getattr(s, key), err_msg=key)
    np.testing.assert_array_equal(s.tokens, g.tokens)
    np.testing.assert_array_equal(s.lengths, g.lengths)
    np.testing.assert_array_equal(s.accepted.sum(1), s.lengths)
    assert np.all(s.calls <= g.calls)
    if n == 3:  # drafts can only be PAD/BOS/EOS: none is accepted but an EOS
      assert s.calls.sum() > full.calls.sum()
  t = run(model, params, audio, alen, "tree", draft_vocab=v // 2)
  np.testing.assert_array_equal(t.tokens, g.tokens)
  np.testing.assert_array_equal(t.accepted.sum(1), t.lengths)
  assert Verify(model, max_new_tokens=N, draft_vocab=v).draft_vocab == 0
  h = jax.random.normal(jax.random.PRNGKey(0), (2, 3, model.cfg.decoder.d_model))
  short = model.apply(params, h, 5, method=model.draft_logits)
  full_logits = model.apply(params, h, method=model.heads)
  np.testing.assert_allclose(short, full_logits[:, :, 1:, :5], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="draft_vocab=.*must be an integer >= 0"):
    run(model, params, audio, alen, "verify", draft_vocab=-1)
  ind_model, _ = model_for("independent")
  with pytest.raises(ValueError, match="head_type='latent'"):
    Verify(ind_model, max_new_tokens=N, draft_vocab=8)
