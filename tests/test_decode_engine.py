"""The decoding engine: registry, options, the KV-cache mask helper, FastAdaSP with every
strategy, and a strategy added from outside the package."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.decode import api, registry
from mtp_jax.decode.greedy import Greedy
from mtp_jax.model.kv_cache import KVCache, causal_mask
from mtp_jax.model.speech_llama import SpeechLLaMA
import tiny_models

N = 10


def test_registry_lists_every_strategy_with_its_options():
  assert registry.names() == ["greedy", "threshold", "verify", "tree", "beam", "ctc", "joint"]
  opts = registry.all_options()
  assert {"threshold", "typical", "top", "beam", "nbest", "draft_vocab"} <= set(opts)
  assert "use_kernels" not in opts  # the model's kernel switch (config.kernels), no option
  assert registry.resolve_options("greedy", dict(threshold=0.9, beam=8)) == ()
  assert registry.resolve_options("beam", dict(beam=8)) == (("beam", 8), ("nbest", None))
  assert registry.resolve_options("verify", dict(typical="0.3,0.09")) == (
      ("draft_vocab", 0), ("typical", (0.3, 0.09)))
  assert registry.resolve_options("tree", dict(draft_vocab="8192")) == (
      ("draft_vocab", 8192), ("top", 2))


@pytest.mark.parametrize("strategy,options,match", [
    ("beam", dict(beam=0), "beam=0"),
    ("beam", dict(beam=2, nbest=3), "nbest=3"),
    ("greedy", dict(thresold=0.9), "thresold"),
    ("threshold", dict(threshold=-0.1), "threshold=-0.1"),
    ("tree", dict(top=0), "top=0"),
    ("verify", dict(typical="0.3"), "typical"),
    ("nope", {}, "unknown decoding strategy"),
])
def test_bad_options_are_named(strategy, options, match):
  model, _ = tiny_models.tiny_model("independent", 3, tie=False)
  with pytest.raises(ValueError, match=match):
    api.make_decode_fn(model, strategy=strategy, max_new_tokens=N, **options)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_max_new_tokens(n):
  model, _ = tiny_models.tiny_model("independent", 3, tie=False)
  with pytest.raises(ValueError, match="max_new_tokens"):
    api.make_decode_fn(model, strategy="greedy", max_new_tokens=n)


def test_decode_mask_tree_of_a_chain_is_the_causal_block():
  """A tree whose ancestors are a chain (tril) gives the causal block mask, per layer too."""
  rng = np.random.default_rng(0)
  b, p, t = 3, 5, 4
  for pv in (rng.random((b, p)) < 0.7, rng.random((2, b, p)) < 0.7):
    zeros = (jnp.zeros((b, p + 12, 2)),) * 2
    cache = KVCache(k=zeros, v=zeros,
                    prefix_valid=jnp.asarray(pv), prefix_len=jnp.asarray([3, 5, 0]))
    ti = jnp.asarray([1, 4, 7])
    chain = cache.decode_mask(ti, t)
    tree = cache.decode_mask(ti, t, jnp.tril(jnp.ones((t, t), bool)))
    np.testing.assert_array_equal(chain, tree)
    assert chain.shape == pv.shape[:-1] + (t, p + 12)
    # Against a loop: audio where valid, text up to the query's own slot.
    want = np.zeros(chain.shape, bool)
    for r in range(b):
      for q in range(t):
        slot = p + int(ti[r]) + q
        want[..., r, q, :p] = pv[..., r, :]
        want[..., r, q, p:slot + 1] = True
    np.testing.assert_array_equal(chain, want)


def test_causal_mask_hides_padding():
  m = np.asarray(causal_mask(jnp.asarray([[True, True, False, True]])))
  assert m.shape == (1, 4, 4)
  np.testing.assert_array_equal(m[0, 3], [True, True, False, True])
  np.testing.assert_array_equal(m[0, 1], [True, True, False, False])


def _predictable():
  model, params = tiny_models.tiny_model("independent", 3, tie=False)
  rng = np.random.default_rng(3)
  params = tiny_models.make_predictable(model, params, rng.permutation(tiny_models.VOCAB),
                                        context=0.05, wrong_frac=0.3, decoy_frac=0.3)
  audio, alen = tiny_models.random_audio(rng, [4000, 2500, 0])
  return model, params, audio, alen


def test_every_exact_strategy_equals_greedy_under_fastadasp():
  """Prefill token reduction (per-layer prefix masks) with every registered strategy:
  the exact ones give greedy's tokens under the same reduction; none refuses."""
  model, params, audio, alen = _predictable()
  red = dataclasses.replace(model.cfg.reduction, method="fastadasp_dense", ratio=0.3,
                            start_layer=0)
  reduced = SpeechLLaMA(dataclasses.replace(model.cfg, reduction=red))
  run = lambda m, s, **kw: jax.tree_util.tree_map(  # noqa: E731
      np.asarray, api.decode(m, params, audio, alen, strategy=s, max_new_tokens=N, **kw))
  g = run(reduced, "greedy")
  _, cache = reduced.apply(params, audio, alen, jnp.ones((3, 1), jnp.int32), 16,
                           method=reduced.prefill)
  assert cache.prefix_valid.ndim == 3 and int(cache.prefix_valid[-1, 0].sum()) < int(
      cache.prefix_valid[0, 0].sum()), "the prefill really reduced"
  for name in registry.names():
    spec = registry.get(name)
    if not spec.decoder_calls or spec.needs_ctc_head:  # joint: tests/test_joint_decode.py
      continue
    assert spec.reduction, name
    kw = dict(beam=1) if name == "beam" else {}
    r = run(reduced, name, **kw)
    if spec.exact or name == "beam":
      np.testing.assert_array_equal(r.tokens, g.tokens, err_msg=name)
      np.testing.assert_array_equal(r.lengths, g.lengths, err_msg=name)
  v = run(reduced, "verify")
  assert v.calls.sum() < g.calls.sum(), "drafts are accepted under reduction"


class _GreedyOneByOne(Greedy):
  """A 'new strategy' from outside the package: greedy that reports every token as
  produced by head 1 (same output, same counters)."""


def test_a_strategy_registered_from_outside_runs_through_the_api(monkeypatch):
  spec = registry.StrategySpec(
      name="greedy_copy", build=lambda model, *, max_new_tokens: _GreedyOneByOne(
          model, max_new_tokens=max_new_tokens), exact=True)
  monkeypatch.setitem(registry._REGISTRY, "greedy_copy", spec)  # pylint: disable=protected-access
  model, params, audio, alen = _predictable()
  a = api.decode(model, params, audio, alen, strategy="greedy_copy", max_new_tokens=N)
  b = api.decode(model, params, audio, alen, strategy="greedy", max_new_tokens=N)
  for f in ("tokens", "lengths", "calls", "total_calls", "accepted"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_split_spec_and_string_options():
  name, opts = registry.split_spec("beam:beam=8:nbest=2")
  assert name == "beam" and opts == {"beam": "8", "nbest": "2"}
  assert registry.resolve_options(name, opts) == (("beam", 8), ("nbest", 2))
  assert registry.resolve_options(*registry.split_spec("verify:typical=0.3,0.09")) == (
      ("draft_vocab", 0), ("typical", (0.3, 0.09)))
  assert registry.resolve_options(*registry.split_spec("verify:draft_vocab=8192")) == (
      ("draft_vocab", 8192), ("typical", None))
  assert registry.resolve_options("beam", {"beam": "8"})[0] == ("beam", 8)
  with pytest.raises(ValueError, match="option=value"):
    registry.split_spec("verify:typical")
