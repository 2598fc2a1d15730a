"""The encoder's auxiliary CTC head: loss vs brute force, collapse, train step, decoding."""
import itertools
import math

import flax.linen as nn

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from mtp_jax import flops
from mtp_jax.decode import api
from mtp_jax.decode.ctc import collapse
from mtp_jax.model.speech_llama import SpeechLLaMA, audio_token_count
from mtp_jax.train import loss as loss_lib
from mtp_jax.train import optimizer as opt_lib
from mtp_jax.train import step as step_lib
from mtp_jax.train.config import train_defaults
from mtp_jax.train.state import TrainState

jax.config.update("jax_default_matmul_precision", "highest")

# The CTC tests' decoder: the tiny test model's (`tiny_config`) with V=40 and one layer.
DECODER = dict(vocab_size=40, num_layers=1)


def _collapse_ref(ids, n):
  out, prev = [], 0
  for x in ids[:n]:
    if x != 0 and x != prev:
      out.append(int(x))
    prev = x
  return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=9, max_size=9), min_size=1, max_size=4),
       st.data())
def test_collapse_matches_python(rows, data):
  ids = np.asarray(rows, np.int32)
  lens = np.asarray([data.draw(st.integers(0, 9)) for _ in rows], np.int32)
  n = data.draw(st.integers(1, 9))
  tokens, lengths = collapse(jnp.asarray(ids), jnp.asarray(lens), n)
  for r in range(len(rows)):
    want = _collapse_ref(ids[r], lens[r])[:n]
    assert int(lengths[r]) == len(want)
    assert np.asarray(tokens[r, :len(want)]).tolist() == want
    assert not np.asarray(tokens[r, len(want):]).any()


def _brute_force_nll(logp, label):
  """-log sum over all T-frame paths that collapse to `label` (blank 0)."""
  t, v = logp.shape
  total = 0.0
  for path in itertools.product(range(v), repeat=t):
    if _collapse_ref(path, t) == list(label):
      total += np.exp(sum(logp[i, p] for i, p in enumerate(path)))
  return -np.log(total)


def test_ctc_loss_matches_brute_force_and_skips_bad_rows():
  rng = np.random.default_rng(0)
  b, t, v, l = 5, 5, 4, 3
  logits = rng.normal(size=(b, t, v)).astype(np.float32)
  logit_len = np.array([5, 4, 5, 2, 5], np.int32)
  text = np.array([[1, 2, 0], [3, 3, 0], [2, 1, 3], [1, 1, 2], [1, 0, 0]], np.int32)
  text_len = np.array([2, 2, 3, 3, 1], np.int32)
  audio_len = np.array([100, 100, 100, 100, 0], np.int32)  # row 4: batch padding
  loss, aux = loss_lib.ctc_loss(jnp.asarray(logits), jnp.asarray(logit_len), jnp.asarray(text),
                                jnp.asarray(text_len), jnp.asarray(audio_len))
  # Row 3 cannot be aligned (3 labels + 1 repeat > 2 frames); row 4 is padding.
  logp = jax.nn.log_softmax(logits, -1)
  nll = [_brute_force_nll(np.asarray(logp[i, :logit_len[i]]), text[i, :text_len[i]])
         for i in range(3)]
  np.testing.assert_allclose(float(loss), sum(nll) / text_len[:3].sum(), rtol=1e-5)
  assert float(aux["ctc_rows"]) == 3


def _model_and_batch(tiny_config, seed=0, b=3):
  cfg = tiny_config(k=2, encoder=dict(ctc_head=True), decoder=DECODER)
  rng = np.random.default_rng(seed)
  alen = np.array([16000, 12000, 9000][:b], np.int32)
  audio = (rng.normal(size=(b, 16000)) * 0.1).astype(np.float32)
  audio[np.arange(16000)[None] >= alen[:, None]] = 0
  text_len = np.array([5, 3, 4][:b], np.int32)
  text = rng.integers(4, 40, (b, 6)).astype(np.int32)
  text[np.arange(6)[None] >= text_len[:, None]] = 0
  batch = {"audio": jnp.asarray(audio), "audio_len": jnp.asarray(alen),
           "text": jnp.asarray(text), "text_len": jnp.asarray(text_len)}
  return cfg, batch


def test_ctc_head_params_counted_and_outputs_shaped(tiny_config):
  cfg, batch = _model_and_batch(tiny_config)
  model = SpeechLLaMA(cfg)
  params = model.init(jax.random.PRNGKey(0), batch["audio"], batch["audio_len"],
                      batch["text"])
  n = sum(x.size for x in jax.tree.leaves(params))
  assert n == flops.param_counts(cfg)["total"]
  assert flops.param_counts(cfg)["ctc_head"] == 32 * 40 + 40
  out = model.apply(params, batch["audio"], batch["audio_len"], batch["text"])
  frames, flen = model.apply(params, batch["audio"], batch["audio_len"],
                             method=model.encode_frames)
  assert out["ctc_logits"].shape == frames.shape[:2] + (40,)
  np.testing.assert_array_equal(out["ctc_len"], flen)


def _fresh_state(cfg, batch, tcfg):
  """(optimizer, TrainState at step 0) of a freshly initialized model."""
  params = nn.unbox(SpeechLLaMA(cfg).init(jax.random.PRNGKey(0), batch["audio"],
                                          batch["audio_len"], batch["text"]))
  tx = opt_lib.make_optimizer(tcfg, params)
  zero = jnp.zeros((), jnp.int32)
  return tx, TrainState(step=zero, params=params, opt_state=tx.init(params),
                        rng=jax.random.PRNGKey(1), nonfinite_total=zero, nonfinite_run=zero)


def _train(cfg, batch, ctc_weight, steps):
  tcfg = train_defaults()
  tcfg.update(ctc_weight=ctc_weight, learning_rate=3e-3, warmup_steps=1, steps=steps)
  model = SpeechLLaMA(cfg, train=True)
  tx, state = _fresh_state(cfg, batch, tcfg)
  step = jax.jit(step_lib.make_train_step(model, tx, tcfg))
  history = []
  for _ in range(steps):
    new, m = step(state, batch)
    history.append(m)
    if not history[1:]:
      first_params = state.params
    state = new
  return first_params, state, history


@pytest.mark.slow  # long; `-m slow` runs it
def test_train_step_ctc_loss_falls_and_reaches_the_encoder(tiny_config):
  cfg, batch = _model_and_batch(tiny_config)
  p0, state, hist = _train(cfg, batch, 0.5, 25)
  ctc = [float(m["ctc_loss"]) for m in hist]
  assert all(np.isfinite(ctc)) and float(hist[0]["ctc_rows"]) == 3
  assert ctc[-1] < 0.7 * ctc[0], ctc
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), p0, state.params)
  assert moved["params"]["ctc_head"]["kernel"] > 0
  # With weight 0 the CTC head receives no gradient (only weight decay could move it:
  # biases are excluded and AdamW's update of a zero gradient is zero).
  _, state0, hist0 = _train(cfg, batch, 0.0, 2)
  assert "ctc_loss" not in hist0[0]
  np.testing.assert_array_equal(state0.params["params"]["ctc_head"]["bias"],
                                p0["params"]["ctc_head"]["bias"])


def test_ctc_weight_without_head_is_a_clear_error(tiny_config):
  cfg = tiny_config(k=2, decoder=DECODER)  # no CTC head
  tcfg = train_defaults()
  tcfg.ctc_weight = 0.3
  with pytest.raises(ValueError, match="ctc_head"):
    step_lib.make_train_step(SpeechLLaMA(cfg, train=True), optax.sgd(0.1), tcfg)
  with pytest.raises(ValueError, match="ctc_head"):
    api.make_decode_fn(SpeechLLaMA(cfg), strategy="ctc", max_new_tokens=8)


def test_ctc_decode_batched_equals_unbatched(tiny_config):
  cfg, batch = _model_and_batch(tiny_config, seed=3)
  model = SpeechLLaMA(cfg)
  params = model.init(jax.random.PRNGKey(2), batch["audio"], batch["audio_len"], batch["text"])
  full = api.decode(model, params, batch["audio"], batch["audio_len"], strategy="ctc",
                    max_new_tokens=30)
  assert int(full.total_calls) == 0 and int(full.lengths.max()) > 0
  for r in range(3):
    n = int(batch["audio_len"][r])
    one = api.decode(model, params, batch["audio"][r:r + 1, :n], batch["audio_len"][r:r + 1],
                     strategy="ctc", max_new_tokens=30)
    assert int(one.lengths[0]) == int(full.lengths[r])
    np.testing.assert_array_equal(one.tokens[0], full.tokens[r])


def test_mwer_objective_on_a_ctc_model_traces_without_the_ctc_term(tiny_config):
  """MWER fine-tuning of a CTC-trained model: the step builds and has no CTC metric."""
  from mtp_jax.mwer import word_errors as we
  cfg, batch = _model_and_batch(tiny_config)
  tcfg = train_defaults()
  tcfg.update(objective="mwer", ctc_weight=1.0)
  tcfg.mwer.update(nbest=2, beam=2, max_new_tokens=4)
  tx, state = _fresh_state(cfg, batch, tcfg)
  pieces = ["<pad>", "<s>", "</s>", "<unk>"] + [f"\u2581w{i}" for i in range(36)]
  step = step_lib.make_train_step(SpeechLLaMA(cfg, train=True), tx, tcfg,
                                  word_tables=we.build_tables(pieces))
  _, metrics = jax.eval_shape(step, state, batch)
  assert "mwer/expected_errors" in metrics
  assert not [k for k in metrics if k.startswith("ctc")]


def test_tied_ctc_objective_aligns_the_projector_without_running_the_decoder(tiny_config):
  """projector.ctc_tied: the CTC classifier is the token embedding (times a learned
  temperature, plus a bias); train.objective=ctc trains it alone: the loss falls, the
  projector moves, the decoder and the (frozen) embedding get no gradient at all."""
  cfg = tiny_config(k=2, projector=dict(ctc_head=True, ctc_tied=True), decoder=DECODER)
  _, batch = _model_and_batch(tiny_config)
  model = SpeechLLaMA(cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch["audio"], batch["audio_len"],
                               batch["text"]))
  assert "ctc_head" not in params["params"]
  assert flops.param_counts(cfg)["total"] == sum(x.size for x in jax.tree.leaves(params))
  # The logits are the audio tokens' dot products with every token embedding.
  logits, n = model.apply(params, batch["audio"], batch["audio_len"], method="ctc")
  emb, _, alen = model.apply(params, batch["audio"], batch["audio_len"], method="encode")
  table = params["params"]["embed"]["embedding"]
  np.testing.assert_allclose(logits, 3.0 * jnp.einsum("btd,vd->btv", emb, table), atol=1e-4)
  np.testing.assert_array_equal(n, alen)
  tcfg = train_defaults()
  tcfg.update(objective="ctc", learning_rate=3e-3, warmup_steps=1, steps=30,
              frozen="^params/(embed|decoder|final_norm|mtp)/")
  labels = opt_lib.trainable_labels(params, tcfg)
  tx, state = _fresh_state(cfg, batch, tcfg)
  step = jax.jit(step_lib.make_train_step(SpeechLLaMA(cfg, train=True), tx, tcfg, labels))
  p0, hist = state.params, []
  for _ in range(30):
    state, m = step(state, batch)
    hist.append(float(m["ctc_loss"]))
  assert np.isfinite(hist).all() and hist[-1] < 0.7 * hist[0], hist
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), p0, state.params)
  assert moved["params"]["projector"]["fc2"]["kernel"] > 0
  assert moved["params"]["ctc_scale"] > 0 and moved["params"]["ctc_bias"] > 0
  assert max(jax.tree.leaves(moved["params"]["decoder"])) == 0.0
  assert moved["params"]["embed"]["embedding"] == 0.0


def test_tied_ctc_over_the_tokenizers_units_equals_the_full_vocabulary(tiny_config):
  """`data.tokenizer.merges`: the tied head's bias is masked outside the ids the
  tokenizer can produce (`mask_ctc_bias`); an alignment step normalizing over those
  ids alone (`ctc_units`) then gives the full-vocabulary step's loss and update, and
  greedy CTC decoding never emits a masked id."""
  from mtp_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  cfg = tiny_config(k=2, projector=dict(ctc_head=True, ctc_tied=True), decoder=DECODER)
  _, batch = _model_and_batch(tiny_config)
  units = np.unique(np.concatenate([[0, 5, 7], np.asarray(batch["text"]).ravel()]))
  assert len(units) < DECODER["vocab_size"] - 10
  tcfg = train_defaults()
  tcfg.update(objective="ctc", learning_rate=3e-3, warmup_steps=1, steps=5,
              frozen="^params/(embed|decoder|final_norm|mtp)/")
  tx, state = _fresh_state(cfg, batch, tcfg)
  state = state.replace(params=state_lib.mask_ctc_bias(state.params, units),
                        opt_state=tx.init(state.params))
  bias = np.asarray(state.params["params"]["ctc_bias"])
  off = np.setdiff1d(np.arange(DECODER["vocab_size"]), units)
  assert (bias[off] == state_lib.UNREACHABLE_CTC_BIAS).all() and (bias[units] == 0).all()
  labels = opt_lib.trainable_labels(state.params, tcfg)
  model = SpeechLLaMA(cfg, train=True)
  full = jax.jit(step_lib.make_train_step(model, tx, tcfg, labels))
  sub = jax.jit(step_lib.make_train_step(model, tx, tcfg, labels, ctc_units=units))
  a, b = state, state
  for _ in range(3):
    a, ma = full(a, batch)
    b, mb = sub(b, batch)
    np.testing.assert_allclose(float(mb["ctc_loss"]), float(ma["ctc_loss"]), rtol=1e-5)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)
  assert float(ma["ctc_loss"]) < float(jnp.inf)
  logits, _ = SpeechLLaMA(cfg).apply(b.params, batch["audio"], batch["audio_len"],
                                     method="ctc")
  assert np.isin(np.asarray(jnp.argmax(logits, -1)), units).all()
  with pytest.raises(ValueError, match="ctc_units: ascending"):
    step_lib.make_train_step(model, tx, tcfg, labels, ctc_units=units[::-1])


def test_ctc_objective_needs_a_ctc_head(tiny_config):
  from mtp_jax.config import ConfigError
  from mtp_jax.train.config import RunConfig, default_config
  c = default_config()
  c.train.objective = "ctc"
  with pytest.raises(ConfigError, match="train.objective=ctc"):
    RunConfig.from_config(c)
  cfg = tiny_config(k=2, decoder=DECODER)
  tcfg = train_defaults()
  tcfg.objective = "ctc"
  with pytest.raises(ValueError, match="objective=ctc"):
    step_lib.make_train_step(SpeechLLaMA(cfg, train=True), optax.sgd(0.1), tcfg)


def test_ctc_compress_passes_on_the_read_tokens_in_order_and_greedy_is_exact(tiny_config):
  """projector.ctc_compress: the prefix is the audio tokens whose CTC argmax is a token
  and not the previous frame's, in time order (checked by hand); the transcript's
  logits see exactly that prefix; greedy decoding with the cache equals the argmax of
  teacher-forced full forwards."""
  base = dict(ctc_head=True, ctc_tied=True)
  cfg = tiny_config(k=2, projector=dict(base, ctc_compress=True), decoder=DECODER)
  plain = SpeechLLaMA(tiny_config(k=2, projector=base, decoder=DECODER))
  model = SpeechLLaMA(cfg)
  _, batch = _model_and_batch(tiny_config)
  audio, alen = batch["audio"], batch["audio_len"]
  params = nn.unbox(model.init(jax.random.PRNGKey(0), audio, alen, batch["text"]))
  logits, _ = plain.apply(params, audio, alen, method="ctc")
  # A blank-heavy head, as a trained one is: blank wins about half the frames.
  margin = jnp.max(logits[..., 1:], -1) - logits[..., 0]
  params["params"]["ctc_bias"] = params["params"]["ctc_bias"].at[0].add(
      float(jnp.median(margin)))
  logits, _ = plain.apply(params, audio, alen, method="ctc")
  ids = np.asarray(jnp.argmax(logits, -1))
  emb, _, n_full = plain.apply(params, audio, alen, method="encode")
  got, valid, n = model.apply(params, audio, alen, method="encode")
  for b in range(audio.shape[0]):
    keep = [t for t in range(int(n_full[b]))
            if ids[b, t] != 0 and (t == 0 or ids[b, t] != ids[b, t - 1])]
    assert 0 < len(keep) < int(n_full[b])
    assert int(n[b]) == len(keep)
    np.testing.assert_allclose(got[b, :len(keep)], emb[b, keep], atol=1e-6)
    assert not np.any(got[b, len(keep):]) and valid[b].sum() == len(keep)
  # Greedy with the KV cache over the compressed prefix = full forwards' argmax.
  g = api.decode(model, params, audio, alen, strategy="greedy", max_new_tokens=6)
  text = np.concatenate([np.ones((3, 1), np.int32), np.asarray(g.tokens)], 1)
  full = model.apply(params, audio, alen, jnp.asarray(text))["logits"][:, :, 0]
  amax = np.asarray(jnp.argmax(full, -1))
  for b in range(3):
    m = int(g.lengths[b])
    np.testing.assert_array_equal(amax[b, :m], np.asarray(g.tokens)[b, :m])


# CI time (~40 s): the hard token's forward runs in CI as ctc_mix=1 (the mixture test).
@pytest.mark.slow
def test_ctc_hard_feeds_the_read_tokens_embeddings_with_a_straight_through_gradient(
    tiny_config):
  """projector.ctc_hard: the prefix is the embedding of each kept frame's CTC token, and
  the LM's loss still reaches the projector (straight-through)."""
  proj = dict(ctc_head=True, ctc_tied=True, ctc_compress=True)
  hard = SpeechLLaMA(tiny_config(k=2, projector=dict(proj, ctc_hard=True), decoder=DECODER))
  soft = SpeechLLaMA(tiny_config(k=2, projector=proj, decoder=DECODER))
  _, batch = _model_and_batch(tiny_config)
  audio, alen, text = batch["audio"], batch["audio_len"], batch["text"]
  params = nn.unbox(hard.init(jax.random.PRNGKey(0), audio, alen, text))
  emb_soft, _, n = soft.apply(params, audio, alen, method="encode")
  emb_hard, _, n_hard = hard.apply(params, audio, alen, method="encode")
  np.testing.assert_array_equal(n, n_hard)
  table = params["params"]["embed"]["embedding"]
  for b in range(audio.shape[0]):
    m = int(n[b])
    assert m > 0
    # Each kept soft token's nearest embedding by the CTC logits is the hard token.
    ids = np.asarray(jnp.argmax(hard.apply(params, emb_soft[b:b + 1, :m],
                                           method="ctc_logits")[0], -1))
    np.testing.assert_allclose(emb_hard[b, :m], table[ids], atol=1e-6)
    assert not np.any(emb_hard[b, m:])

  def lm_loss(p):
    out = hard.apply(p, audio, alen, text)
    return jnp.sum(out["logits"][:, :, 0] ** 2)
  g = jax.grad(lm_loss)(params)
  assert float(jnp.abs(g["params"]["projector"]["fc2"]["kernel"]).max()) > 0


def test_ctc_mix_feeds_a_probability_weighted_mixture_of_the_likeliest_tokens(tiny_config):
  """projector.ctc_mix=k: each kept audio token is sum_i w_i E[t_i] over the CTC head's
  k likeliest non-blank tokens t_i, w = their renormalized probabilities (checked by
  hand); k=1 is the hard token; the LM's loss reaches the projector through the weights."""
  proj = dict(ctc_head=True, ctc_tied=True, ctc_compress=True)
  hard = SpeechLLaMA(tiny_config(k=2, projector=dict(proj, ctc_hard=True), decoder=DECODER))
  plain = SpeechLLaMA(tiny_config(k=2, projector=proj, decoder=DECODER))
  mix1 = SpeechLLaMA(tiny_config(k=2, projector=dict(proj, ctc_mix=1), decoder=DECODER))
  mix3 = SpeechLLaMA(tiny_config(k=2, projector=dict(proj, ctc_mix=3), decoder=DECODER))
  _, batch = _model_and_batch(tiny_config)
  audio, alen, text = batch["audio"], batch["audio_len"], batch["text"]
  params = nn.unbox(mix3.init(jax.random.PRNGKey(0), audio, alen, text))
  emb_plain, _, n = plain.apply(params, audio, alen, method="encode")
  emb_hard, _, _ = hard.apply(params, audio, alen, method="encode")
  emb1, _, n1 = mix1.apply(params, audio, alen, method="encode")
  emb3, valid3, n3 = mix3.apply(params, audio, alen, method="encode")
  np.testing.assert_array_equal(n, n1)
  np.testing.assert_array_equal(n, n3)
  np.testing.assert_allclose(emb1, emb_hard, atol=1e-6)
  table = np.asarray(params["params"]["embed"]["embedding"], np.float64)
  for b in range(audio.shape[0]):
    m = int(n[b])
    logits = np.asarray(mix3.apply(params, emb_plain[b:b + 1, :m], method="ctc_logits")[0],
                        np.float64)
    for t in range(m):
      top = np.argsort(-logits[t, 1:])[:3] + 1
      w = np.exp(logits[t, top] - logits[t, top].max())
      w /= w.sum()
      np.testing.assert_allclose(emb3[b, t], w @ table[top], atol=1e-5)
    assert not np.any(emb3[b, m:]) and int(valid3[b].sum()) == m

  def lm_loss(p):
    return jnp.sum(mix3.apply(p, audio, alen, text)["logits"][:, :, 0] ** 2)
  g = jax.grad(lm_loss)(params)
  assert float(jnp.abs(g["params"]["projector"]["fc2"]["kernel"]).max()) > 0
  assert float(jnp.abs(g["params"]["ctc_scale"]).max()) > 0


def test_ctc_compress_width_narrows_the_prefix_and_keeps_what_fits(tiny_config):
  """projector.ctc_compress_width: the compressed prefix is ceil(width x P) positions
  wide: the read tokens that fit are the full-width prefix's first ones, the LM's text
  logits are those of the full-width prefix when every read token fits, and read tokens
  beyond the width are dropped (length clipped)."""
  base = dict(ctc_head=True, ctc_tied=True, ctc_compress=True)
  full = SpeechLLaMA(tiny_config(k=2, projector=base, decoder=DECODER))
  _, batch = _model_and_batch(tiny_config)
  audio, alen, text = batch["audio"], batch["audio_len"], batch["text"]
  params = nn.unbox(full.init(jax.random.PRNGKey(0), audio, alen, text))
  plain = SpeechLLaMA(tiny_config(k=2, projector=dict(ctc_head=True, ctc_tied=True),
                                  decoder=DECODER))
  logits, _ = plain.apply(params, audio, alen, method="ctc")
  margin = jnp.max(logits[..., 1:], -1) - logits[..., 0]  # blank wins about half
  params["params"]["ctc_bias"] = params["params"]["ctc_bias"].at[0].add(
      float(jnp.median(margin)))
  emb, _, n = full.apply(params, audio, alen, method="encode")
  p = emb.shape[1]
  fits = int(np.max(n)) / p
  assert fits < 1
  for width, clipped in ((min(1.0, fits + 0.1), False), (0.5 * fits, True)):
    cfg = tiny_config(k=2, projector=dict(base, ctc_compress_width=width), decoder=DECODER)
    narrow = SpeechLLaMA(cfg)
    got, valid, m = narrow.apply(params, audio, alen, method="encode")
    w = math.ceil(p * width)
    assert got.shape[1] == w and valid.shape == (audio.shape[0], w)
    assert audio_token_count(audio.shape[1], cfg) == w
    np.testing.assert_array_equal(m, np.minimum(n, w))
    assert bool(np.any(np.asarray(n) > w)) == clipped
    np.testing.assert_allclose(got, np.asarray(emb)[:, :w] * np.asarray(valid)[..., None],
                               atol=1e-6)
    if not clipped:
      np.testing.assert_allclose(narrow.apply(params, audio, alen, text)["logits"],
                                 full.apply(params, audio, alen, text)["logits"],
                                 atol=2e-5)


def test_projector_blocks_see_neighbours_not_padding(tiny_config):
  """projector.layers: Conformer blocks between the projector's two layers. Parameters
  are counted exactly (with out_rms' scale); a fresh branch changes nothing; once
  trained, an audio token depends on its neighbours (not on its own frames alone, as
  with the MLP) but not on the padding a batch gives its row; train mode draws dropout."""
  from mtp_jax.model.speech_llama import Projector
  proj = dict(ctc_head=True, ctc_tied=True, stack=2, hidden=32, layers=2, heads=4,
              out_rms=0.5)
  cfg = tiny_config(k=2, projector=proj, decoder=DECODER)
  _, batch = _model_and_batch(tiny_config)
  params = SpeechLLaMA(cfg).init(jax.random.PRNGKey(0), batch["audio"], batch["audio_len"],
                                 batch["text"])
  assert flops.param_counts(cfg)["total"] == sum(x.size for x in jax.tree.leaves(params))
  assert "block1" in params["params"]["projector"]
  projector = Projector(cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 20, cfg.encoder.d_model))
  x = x.at[1, 13:].set(0.0)  # an encoder's frames are zero past the row's length
  pp = {"params": dict(params["params"]["projector"])}
  # A fresh branch adds nothing: the projector is the MLP without the blocks.
  mlp = tiny_config(k=2, projector=dict(proj, layers=0), decoder=DECODER)
  mlp_params = {"params": {k: v for k, v in pp["params"].items()
                           if not k.startswith("block")}}
  fresh, _ = projector.apply(pp, x, jnp.asarray([20, 13]))
  np.testing.assert_array_equal(fresh, Projector(mlp).apply(mlp_params, x,
                                                            jnp.asarray([20, 13]))[0])
  pp["params"]["blocks_out"] = {"kernel": jax.random.normal(jax.random.PRNGKey(3), (32, 32)),
                                "bias": jnp.zeros((32,))}
  out, n = projector.apply(pp, x, jnp.asarray([20, 13]))
  np.testing.assert_array_equal(n, [10, 7])
  alone, _ = projector.apply(pp, x[1:, :13], jnp.asarray([13]))
  np.testing.assert_allclose(out[1, :7], alone[0], atol=1e-5)
  assert not np.asarray(out[1, 7:]).any()
  # Frames 0-1 make audio token 0; changing frame 8 (audio token 4) moves token 0 too.
  moved, _ = projector.apply(pp, x.at[:, 8].add(1.0), jnp.asarray([20, 13]))
  assert np.abs(np.asarray(moved[:, 0] - out[:, 0])).max() > 1e-4
  a, _ = Projector(mlp).apply(mlp_params, x, jnp.asarray([20, 13]))
  b, _ = Projector(mlp).apply(mlp_params, x.at[:, 8].add(1.0), jnp.asarray([20, 13]))
  np.testing.assert_array_equal(a[:, 0], b[:, 0])
  drop = tiny_config(k=2, projector=dict(proj, dropout=0.5), decoder=DECODER)
  d1, _ = Projector(drop, train=True).apply(pp, x, jnp.asarray([20, 13]),
                                           rngs={"dropout": jax.random.PRNGKey(2)})
  assert np.abs(np.asarray(d1 - out)).max() > 1e-3
  from mtp_jax.config import ConfigError, validate
  with pytest.raises(ConfigError, match=r"projector.heads=3: the blocks' width 32"):
    validate(tiny_config(k=2, projector=dict(proj, heads=3), decoder=DECODER))
