"""Prefill audio-token reduction (FastAdaSP + baselines): exactness, shapes, FLOPs, decoding."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax import flops
from mtp_jax.config import REDUCTION_METHODS, ConfigError, KernelsConfig, ModelConfig
from mtp_jax.model import reduction_calibrate, reduction_ops, reduction_plan
from mtp_jax.model.speech_llama import SpeechLLaMA, audio_token_count
from pallas_kernels import token_merge

jax.config.update("jax_default_matmul_precision", "highest")

# The reduction tests' model: the tiny test model (`tiny_config`, K=2) with a narrower
# encoder, V=32 and three decoder layers of ff_dim 48.
MODEL = dict(encoder=dict(d_model=16, conv_kernel=3, subsampling_channels=4),
             decoder=dict(vocab_size=32, num_layers=3, ff_dim=48))
S, LENS = 16000, (16000, 9000)   # end-to-end audio inputs
P, TOK_LENS = 20, (20, 11)       # embedding-level inputs (P audio tokens per row)


@pytest.fixture(scope="session")
def make_cfg(tiny_config):
  """`make_cfg(**reduction)`: the tests' ModelConfig with `model.reduction` set from
  the keyword arguments (`scan_layers` apart)."""
  def make(**red) -> ModelConfig:
    scan = red.pop("scan_layers", False)
    return tiny_config(k=2, **MODEL, reduction=red, scan_layers=scan)
  return make


def random_params(cfg, text):
  """Random variables with `model.init`'s structure, without compiling init (slow here)."""
  model = SpeechLLaMA(cfg)
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(1), jnp.zeros((1, 4000)),
                                   jnp.array([4000], jnp.int32), text[:1]))
  rng = np.random.default_rng(2)

  def fill(path, leaf):
    name = str(path[-1])
    if "scale" in name:
      return jnp.ones(leaf.shape, leaf.dtype)
    if "bias" in name:
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def setup(make_cfg):
  """(cfg, params, emb [2, P, d], valid [2, P], alen [2], text [2, 6])."""
  cfg = make_cfg()
  rng = np.random.default_rng(0)
  text = jnp.asarray(rng.integers(4, 32, (2, 6)), jnp.int32)
  params = random_params(cfg, text)
  alen = jnp.asarray(TOK_LENS, jnp.int32)
  valid = jnp.arange(P)[None] < alen[:, None]
  emb = jnp.where(valid[..., None], jnp.asarray(rng.normal(size=(2, P, 32)), jnp.float32), 0.0)
  return cfg, params, emb, valid, alen, text


@pytest.fixture(scope="module")
def audio_inputs():
  rng = np.random.default_rng(1)
  audio = rng.normal(size=(2, S)).astype(np.float32) * 0.1
  audio[1, LENS[1]:] = 0.0
  return jnp.asarray(audio), jnp.asarray(LENS, jnp.int32)


@functools.lru_cache(maxsize=None)
def _fns(cfg: ModelConfig, max_text: int = 8, kernels: bool = False):
  model = SpeechLLaMA(cfg, kernels=KernelsConfig(enabled=kernels))
  pre = jax.jit(lambda p, e, v, a, t: model.apply(
      p, e, v, a, t, max_text, method=model.prefill_from_embeddings))
  dec = jax.jit(lambda p, t, i, c: model.apply(p, t, i, c, method=model.decode_step))
  return pre, dec


def prefill(cfg, params, emb, valid, alen, text_in, kernels=False):
  return _fns(cfg, kernels=kernels)[0](params, emb, valid, alen, text_in)


def decode(cfg, params, tokens, index, cache):
  return _fns(cfg)[1](params, tokens, index, cache)


def to_scanned(params):
  """Unscanned decoder params -> the `scan_layers=True` layout (stacked 'layers')."""
  p = nn.unbox(params)
  dec = dict(p["params"]["decoder"])
  layers = [dec.pop(f"layer{i}") for i in range(MODEL["decoder"]["num_layers"])]
  dec["layers"] = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *layers)
  return {"params": dict(p["params"], decoder=dec)}


def test_ratio_zero_is_identity_exactly(setup, monkeypatch, make_cfg):
  cfg, params, emb, valid, alen, text = setup
  base_out, base_cache = prefill(cfg, params, emb, valid, alen, text[:, :1])
  # Configured with a zero budget: the unreduced path, bit-identical.
  for red in (dict(method="fastadasp_dense", ratio=0.0, start_layer=0),):
    out, cache = prefill(make_cfg(**red), params, emb, valid, alen, text[:, :1])
    np.testing.assert_array_equal(out["logits"], base_out["logits"])
    for k in ("k", "v", "prefix_valid", "prefix_len"):
      np.testing.assert_array_equal(getattr(cache, k), getattr(base_cache, k))
  # The reduced code path itself, forced with zero merges at every layer, is exact too.
  monkeypatch.setattr(reduction_plan, "make_plan", lambda c, p, t: (0, 0, 0))
  out, cache = prefill(make_cfg(method="fastadasp_dense", seed=1), params, emb, valid, alen,
                       text[:, :1])
  np.testing.assert_array_equal(out["logits"], base_out["logits"])
  np.testing.assert_array_equal(out["hidden"], base_out["hidden"])
  np.testing.assert_array_equal(cache.k, base_cache.k)
  np.testing.assert_array_equal(cache.v, base_cache.v)
  assert cache.prefix_valid.shape == (3,) + base_cache.prefix_valid.shape
  for l in range(3):
    np.testing.assert_array_equal(cache.prefix_valid[l], base_cache.prefix_valid)


def test_schedules():
  assert reduction_plan.merge_schedule("fastadasp_dense", "decay", 5, 1, 6, 100) == (0, 6, 4, 2, 0)
  assert reduction_plan.merge_schedule("fastadasp_dense", "constant", 5, 2, 6, 100) == (0, 0, 6, 6, 6)
  assert reduction_plan.merge_schedule("fastv", "constant", 5, 2, 6, 100) == (0, 0, 6, 0, 0)
  # Caps: at most max_step_ratio of the tokens entering a layer; A-ToMe at most half.
  assert reduction_plan.merge_schedule("random_merge", "constant", 3, 0, 9, 10, 0.9) == (9, 0, 0)
  assert reduction_plan.merge_schedule("atome", "constant", 3, 0, 9, 10, 0.9) == (5, 2, 1)


def test_token_count_drops_by_n_per_layer(setup, make_cfg):
  cfg, params, emb, valid, alen, text = setup
  p = P
  red = make_cfg(method="fastadasp_dense", ratio=0.3, start_layer=0, schedule="decay")
  plan = reduction_plan.make_plan(red, p, 1)
  assert plan == reduction_plan.merge_schedule("fastadasp_dense", "decay", 3, 0, round(0.3 * p), p)
  assert plan[0] > 0 and plan[1] > 0
  _, cache = prefill(red, params, emb, valid, alen, text[:, :1])
  counts = np.asarray(cache.prefix_valid.sum(-1))  # [L, B] valid audio keys per layer
  full_row = 0  # row 0 fills the whole prefix: exactly n_l valid tokens go per layer
  assert counts[0, full_row] == p
  for l in range(2):
    assert counts[l + 1, full_row] == counts[l, full_row] - plan[l]
  # The shorter row removes round(n * alen / P) of its own tokens at the first layer.
  a1 = TOK_LENS[1]
  assert counts[0, 1] == a1 and counts[1, 1] == a1 - round(plan[0] * a1 / p)
  # Valid audio keys are compacted to the front of every layer's prefix.
  pv = np.asarray(cache.prefix_valid)
  assert (pv == (np.arange(p)[None, None] < counts[..., None])).all()


def _numpy_group_means(x, w, valid, pos, gid, g):
  b = x.shape[0]
  out = np.zeros((b, g, x.shape[2]))
  out_pos = np.zeros((b, g))
  for r in range(b):
    for j in range(g):
      members = np.where(gid[r] == j)[0]
      vm = members[valid[r, members]]
      if len(vm) and w[r, vm].sum() > 0:
        coef = w[r, vm] / w[r, vm].sum()
        sel = vm
      elif len(vm):
        sel, coef = vm, np.full(len(vm), 1.0 / len(vm))
      else:
        sel, coef = members, np.full(len(members), 1.0 / len(members))
      out[r, j] = coef @ x[r, sel]
      out_pos[r, j] = coef @ pos[r, sel]
  return out, out_pos


def test_merged_token_is_weighted_mean_of_its_group():
  """The FastAdaSP merge the prefill runs with kernels off (the kernel's reference)."""
  rng = np.random.default_rng(3)
  b, n_tok, d, n = 3, 12, 8, 5
  x = rng.normal(size=(b, n_tok, d)).astype(np.float32)
  keys = rng.normal(size=(b, n_tok, 4)).astype(np.float32)
  keys[:, 3] = keys[:, 2] * 2.0  # a sure merge (cosine 1)
  w = rng.uniform(size=(b, n_tok)).astype(np.float32)
  valid = np.arange(n_tok)[None] < np.array([[12], [9], [4]])
  pos = np.tile(np.arange(n_tok, dtype=np.float32), (b, 1))
  quota = jnp.array([5, 4, 1], jnp.int32)
  out = token_merge.merge_reference(jnp.asarray(x), jnp.asarray(keys), jnp.asarray(w),
                                    jnp.asarray(valid), n, jnp.asarray(pos), quota)
  merged, mvalid, mpos = out.merged, out.merged_valid, out.merged_positions
  gid = np.asarray(out.group_index)
  assert merged.shape == (b, n_tok - n, d)
  assert (np.diff(gid, axis=1) >= 0).all() and (gid[:, -1] == n_tok - n - 1).all()
  assert gid[0, 2] == gid[0, 3]
  ref, ref_pos = _numpy_group_means(x, w, valid, pos, gid, n_tok - n)
  np.testing.assert_allclose(merged, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mpos, ref_pos, rtol=1e-5, atol=1e-6)
  # Each row merged exactly `quota` pairs of valid tokens; valid groups stay in front.
  np.testing.assert_array_equal(np.asarray(mvalid).sum(1), valid.sum(1) - np.asarray(quota))
  mv = np.asarray(mvalid)
  assert (mv == (np.arange(n_tok - n)[None] < mv.sum(1, keepdims=True))).all()


def _dot_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (_, rc), (_, rb) = eqn.params["dimension_numbers"]
      ls, rs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
      free_r = [n for i, n in enumerate(rs) if i not in rc and i not in rb]
      total += 2 * np.prod(ls, dtype=float) * np.prod(free_r, dtype=float)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          total += _dot_flops(sub)
  return total


@pytest.mark.parametrize("method,schedule", [("fastadasp_dense", "decay"),
                                             ("atome", "constant"), ("fastv", "decay")])
def test_flops_accounting_matches_matmuls_run(setup, audio_inputs, method, schedule, make_cfg):
  cfg, params, _, _, _, text = setup
  audio, alen = audio_inputs
  t0 = 2
  p = int(audio_token_count(S, cfg))

  def count(c):
    model = SpeechLLaMA(c)
    return _dot_flops(jax.make_jaxpr(
        lambda pr: model.apply(pr, audio, alen, text[:, :t0], 8, method=model.prefill))(
            params).jaxpr)

  red = make_cfg(method=method, schedule=schedule, flops_reduction=0.3)
  plan = reduction_plan.make_plan(red, p, t0)
  assert plan is not None and sum(plan) > 0
  zero = [0] * cfg.decoder.num_layers
  batch = audio.shape[0]
  want = batch * (sum(flops.reduced_prefill_flops(cfg, p, t0, zero, causal=False))
              - sum(flops.reduced_prefill_flops(cfg, p, t0, plan, causal=False)))
  got = count(cfg) - count(red)  # encoder, projector and heads cancel out
  assert got == pytest.approx(want, rel=1e-12)
  # And the solver's target is met by the analytical (causal) count.
  sol = reduction_plan.solve_reduction(cfg, p, t0, 0.3, schedule=schedule, method=method)
  assert sol["merges"] == plan and sol["achieved"] >= 0.3


def test_unreduced_reduced_flops_equals_prefill_flops(make_cfg):
  cfg = make_cfg()
  np.testing.assert_allclose(flops.reduced_prefill_flops(cfg, 50, 3, [0, 0, 0]),
                             flops.prefill_flops(cfg, 50, 3), rtol=1e-12)


@pytest.mark.parametrize("schedule", ["decay", "constant"])
@pytest.mark.parametrize("target", [0.1, 0.2, 0.3, 0.4, 0.5])
def test_solver_reaches_targets(schedule, target, tiny_config):
  cfg = tiny_config(k=2, encoder=MODEL["encoder"], decoder=dict(MODEL["decoder"], num_layers=6))
  sol = reduction_plan.solve_reduction(cfg, 200, 1, target, schedule=schedule)
  full = sum(flops.prefill_flops(cfg, 200, 1))
  red = sum(flops.reduced_prefill_flops(cfg, 200, 1, sol["merges"]))
  assert 1 - red / full == pytest.approx(sol["achieved"])
  assert sol["achieved"] >= target
  # Minimal n0 at that start layer: one token fewer misses the target.
  fewer = reduction_plan.merge_schedule("fastadasp_dense", schedule, 6, sol["start_layer"],
                                   sol["n0"] - 1, 200)
  assert 1 - sum(flops.reduced_prefill_flops(cfg, 200, 1, fewer)) / full < target


@pytest.mark.parametrize("method", ["atome",
                                    pytest.param("random_evict", marks=pytest.mark.slow),
                                    pytest.param("random_merge", marks=pytest.mark.slow)])
def test_reduced_prefill_then_decode_equals_reduced_prefill_over_text(setup, method, make_cfg):
  """For text-independent selections, prefill(BOS) + decode_step(rest) == prefill(all)."""
  cfg, params, emb, valid, alen, text = setup
  scan = method == "atome"
  red = make_cfg(method=method, ratio=0.4, start_layer=0, schedule="constant", scan_layers=scan)
  params = to_scanned(params) if scan else params
  full, _ = prefill(red, params, emb, valid, alen, text[:, :5])
  out, cache = prefill(red, params, emb, valid, alen, text[:, :1])
  assert cache.prefix_valid.shape[0] == 3
  logits, idx = [out["logits"]], jnp.ones((2,), jnp.int32)
  for a, b in ((1, 3), (3, 5)):  # two tokens per call: one compile
    out, cache = decode(red, params, text[:, a:b], idx, cache)
    logits.append(out["logits"])
    idx = idx + (b - a)
  np.testing.assert_allclose(jnp.concatenate(logits, 1), full["logits"], atol=2e-5)
  # The reduction really ran: 40% of a full row's tokens are gone after layer 0.
  assert int(cache.prefix_valid[1, 0].sum()) == P - round(0.4 * P)


@pytest.mark.parametrize("method", ["fastadasp_dense", "fastv",
                                    pytest.param("fastadasp_sparse", marks=pytest.mark.slow)])
def test_attention_weighted_methods_decode_batched(setup, method, make_cfg):
  cfg, params, emb, valid, alen, text = setup
  red = make_cfg(method=method, flops_reduction=0.2, sparse_layer=1)
  out, cache = prefill(red, params, emb, valid, alen, text[:, :1])
  assert out["logits"].shape == (2, 1, 2, 32)
  assert cache.prefix_valid.shape == (3, 2, P)
  assert int(cache.prefix_valid[-1, 0].sum()) < P  # really reduced
  # Rows at different offsets; a rejected draft leaves stale slots that are never seen.
  _, c1 = decode(red, params, text[:, 1:3], jnp.array([1, 1]), cache)
  want, _ = decode(red, params, text[:, 3:5], jnp.array([3, 2]), c1)
  _, c2 = decode(red, params, jnp.full((2, 2), 7, jnp.int32), jnp.array([3, 2]), c1)
  got, _ = decode(red, params, text[:, 3:5], jnp.array([3, 2]), c2)
  np.testing.assert_array_equal(got["logits"], want["logits"])
  assert bool(jnp.isfinite(got["logits"]).all())


def test_end_to_end_prefill_with_audio(setup, audio_inputs, make_cfg):
  """`model.prefill` from audio (the decoders' entry point) equals encode + embeddings path."""
  cfg, params, _, _, _, text = setup
  audio, alen = audio_inputs
  red = make_cfg(method="fastadasp_dense", flops_reduction=0.3)
  model = SpeechLLaMA(red)

  def both(p, a, l, t):
    direct = model.apply(p, a, l, t, 8, method=model.prefill)
    emb, valid, n = model.apply(p, a, l, method=model.encode)
    return direct, model.apply(p, emb, valid, n, t, 8, method=model.prefill_from_embeddings)

  (out, cache), (out2, cache2) = jax.jit(both)(params, audio, alen, text[:, :1])
  np.testing.assert_array_equal(out["logits"], out2["logits"])
  np.testing.assert_array_equal(cache.k, cache2.k)
  p = int(audio_token_count(S, cfg))
  plan = reduction_plan.make_plan(red, p, 1)
  assert int(cache.prefix_valid[-1, 0].sum()) == p - sum(plan[:-1])


def test_config_validation_names_fields(make_cfg):
  with pytest.raises(ConfigError, match="model.reduction.method"):
    make_cfg(method="tome")
  with pytest.raises(ConfigError, match="model.reduction.ratio"):
    make_cfg(method="atome", ratio=0.2, flops_reduction=0.3)
  with pytest.raises(ConfigError, match="model.reduction.sparse_layer"):
    reduction_plan.make_plan(make_cfg(method="fastadasp_sparse", flops_reduction=0.3), 20, 1)


def test_transfer_entropy_choice(setup):
  rng = np.random.default_rng(0)
  f = rng.normal(size=(400, 6))
  close = f + 0.01 * rng.normal(size=f.shape)
  far = f + 1.0 * rng.normal(size=f.shape)
  assert (reduction_calibrate.gaussian_information_loss(f, close)
          < reduction_calibrate.gaussian_information_loss(f, far))
  cfg, params, emb, valid, alen, text = setup
  layer, losses = reduction_calibrate.choose_sparse_layer(cfg, params, emb, valid, alen, text,
                                                jnp.ones(text.shape, bool), 0.1,
                                                candidates=[0, 1])
  assert set(losses) == {0, 1} and losses[layer] == min(losses.values())


def _layer_inputs(seed, n_tok, t, lengths):
  """Random (x, keys, probs, valid, positions, orig_len) of one layer's audio span."""
  rng = np.random.default_rng(seed)
  b = len(lengths)
  x = jnp.asarray(rng.normal(size=(b, n_tok, 8)), jnp.float32)
  keys = jnp.asarray(rng.normal(size=(b, n_tok, 2, 4)), jnp.float32)
  probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(b, 2, 2, n_tok + t, n_tok + t))), -1)
  orig = jnp.array(lengths, jnp.int32)
  valid = jnp.arange(n_tok)[None] < orig[:, None]
  pos = jnp.tile(jnp.arange(n_tok, dtype=jnp.float32), (b, 1))
  return x, keys, probs, valid, pos, orig


@pytest.mark.parametrize("method", [m for m in REDUCTION_METHODS if m != "none"])
def test_every_method_reduces_one_layer(method):
  """Each method (baselines included) removes exactly n tokens, valid ones first by quota."""
  b, n_tok, n = 2, 10, 4
  x, keys, probs, valid, pos, orig = _layer_inputs(7, n_tok, 3, [10, 6])
  red = reduction_ops.Reducer(method, (n,), n_tok, seed=3)
  xr, vr, pr = jax.jit(lambda *a: red(0, *a))(x, keys, probs, valid, pos, orig)
  assert xr.shape == (b, n_tok - n, 8) and pr.shape == (b, n_tok - n)
  np.testing.assert_array_equal(np.asarray(vr).sum(1), [10 - 4, 6 - 2])  # quota 4*6/10 -> 2
  assert (np.diff(np.asarray(pr), axis=1) > 0).all()  # order (and rotary positions) kept


@pytest.mark.parametrize("method", ["fastadasp_dense", "fastadasp_sparse"])
def test_reducer_kernel_path_matches_reduction_merge(method):
  """Reducer(use_kernel=True) (interpreted off GPU/TPU) merges as the reference path."""
  n_tok, n = 13, 5
  args = _layer_inputs(11, n_tok, 2, [13, 7, 2])
  run = lambda red: jax.jit(lambda *a: red(0, *a))(*args)
  want = run(reduction_ops.Reducer(method, (n,), n_tok))
  got = run(reduction_ops.Reducer(method, (n,), n_tok, use_kernel=True))
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[1], want[1])
  assert got[2].dtype == jnp.float32
  np.testing.assert_allclose(got[2], want[2], rtol=1e-6, atol=1e-5)


def test_reduced_prefill_with_merge_kernel_matches(setup, monkeypatch, make_cfg):
  """fastadasp_dense prefill through the Pallas merge kernel (interpreted on CPU)."""
  calls = []
  kernel = token_merge.merge_kernel
  monkeypatch.setattr(token_merge, "merge_kernel",
                      lambda *a, **kw: calls.append(kw) or kernel(*a, **kw))
  cfg, params, emb, valid, alen, text = setup
  red = dict(method="fastadasp_dense", flops_reduction=0.3)
  want, want_cache = prefill(make_cfg(**red), params, emb, valid, alen, text[:, :1])
  assert not calls
  got, cache = prefill(make_cfg(**red), params, emb, valid, alen, text[:, :1], kernels=True)
  assert calls and all(kw["interpret"] == (jax.default_backend() not in ("gpu", "tpu"))
                       for kw in calls)
  assert int(cache.prefix_valid[-1, 0].sum()) < P  # really reduced
  np.testing.assert_array_equal(cache.prefix_valid, want_cache.prefix_valid)
  np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
  for k in ("k", "v"):
    np.testing.assert_allclose(getattr(cache, k), getattr(want_cache, k), rtol=1e-5, atol=1e-5)
