"""MWER objective: the math against numpy, degenerate N-best lists, the search/rescoring
consistency, fine-tuning lowering the N-best's expected word errors, and the sharded
step equal to the one-device step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax import sharding as sharding_lib
from mtp_jax.config import ModelConfig
from mtp_jax.model.speech_llama import SpeechLLaMA
from mtp_jax.mwer import loss as mwer_lib
from mtp_jax.mwer import search as search_lib
from mtp_jax.mwer import word_errors as we
from mtp_jax.train import step as step_lib
from mtp_jax.train.setup import make_train_setup
from train_helpers import micro_config

# One word per token: word errors = token edit distance over the non-special ids.
PIECES = ["<pad>", "<s>", "</s>", "<unk>"] + [f"\u2581w{i}" for i in range(44)]


def _np_mwer(lp, w, valid):
  """Reference loss and d loss / d lp in numpy (float64)."""
  lp, w = np.asarray(lp, np.float64), np.asarray(w, np.float64)
  rows, loss, grad = 0, 0.0, np.zeros_like(lp)
  for b in range(lp.shape[0]):
    idx = np.flatnonzero(valid[b])
    if idx.size == 0:
      continue
    rows += 1
    z = lp[b, idx] - lp[b, idx].max()
    p = np.exp(z) / np.exp(z).sum()
    wb = w[b, idx].mean()
    loss += np.sum(p * (w[b, idx] - wb))
    grad[b, idx] = p * (w[b, idx] - np.sum(p * w[b, idx]))
  return loss / max(rows, 1), grad / max(rows, 1)


def test_posterior_renormalizes_over_valid_entries():
  rng = np.random.default_rng(0)
  lp = rng.normal(-10, 3, (3, 5)).astype(np.float32)
  valid = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
  lp_bad = np.where(valid, lp, np.float32(np.nan))  # invalid entries may hold anything
  p = np.asarray(mwer_lib.nbest_posterior(jnp.asarray(lp_bad), jnp.asarray(valid)))
  assert np.all(np.isfinite(p))
  np.testing.assert_allclose(p.sum(1), [1.0, 1.0, 0.0], rtol=1e-6)
  assert np.all(p[~valid] == 0)
  e = np.exp(lp[0, [0, 1, 3]] - lp[0, [0, 1, 3]].max())
  np.testing.assert_allclose(p[0, [0, 1, 3]], e / e.sum(), rtol=1e-5)


def test_distinct_mask_keeps_first_of_equal_hypotheses():
  toks = jnp.asarray([[[5, 6, 9], [5, 6, 0], [5, 6, 7], [5, 0, 0]]])  # row 0, N=4, T=3
  lens = jnp.asarray([[2, 2, 3, 1]])     # hyps 0 and 1 are both "5 6" (past-length ignored)
  valid = jnp.asarray([[True, True, True, True]])
  np.testing.assert_array_equal(mwer_lib.distinct_mask(toks, lens, valid),
                                [[True, False, True, True]])
  # An invalid first copy does not knock out a valid second one.
  np.testing.assert_array_equal(
      mwer_lib.distinct_mask(toks, lens, jnp.asarray([[False, True, True, True]])),
      [[False, True, True, True]])


def test_loss_and_gradient_match_numpy():
  lp = np.array([[-3.0, -4.5, -2.2, -7.0], [-1.0, -1.3, -9.0, -2.0],
                 [-5.0, -5.0, -5.0, -5.0]], np.float32)
  w = np.array([[2, 0, 3, 1], [1, 1, 4, 0], [0, 0, 0, 0]], np.float32)
  valid = np.array([[1, 1, 1, 1], [1, 1, 0, 1], [0, 0, 0, 0]], bool)
  fn = lambda x: mwer_lib.mwer_objective(x, jnp.asarray(w), jnp.asarray(valid))  # noqa: E731
  (loss, aux), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(lp))
  ref_loss, ref_grad = _np_mwer(lp, w, valid)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(aux["has_nbest"], [True, True, False])
  np.testing.assert_allclose(aux["mean_errors"][:2], [1.5, 2 / 3], rtol=1e-6)


def test_degenerate_lists_give_zero_finite_loss():
  lp = jnp.asarray([[-2.0, -3.0, -jnp.inf, jnp.nan], [-1.0, -1.0, -1.0, -1.0]])
  w = jnp.asarray([[3.0, 3.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
  valid = jnp.asarray([[True, True, False, False], [True, True, True, True]])
  fn = lambda x: mwer_lib.mwer_objective(x, w, valid)[0]  # noqa: E731
  loss, grad = jax.value_and_grad(fn)(lp)
  assert float(loss) == 0.0  # equal errors everywhere: nothing to prefer
  assert np.all(np.isfinite(np.asarray(grad))) and np.all(np.asarray(grad) == 0)
  none = jnp.zeros((1, 4), bool)
  loss, grad = jax.value_and_grad(lambda x: mwer_lib.mwer_objective(x, w[:1], none)[0])(lp[:1])
  assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0)


# ------------------------------------------------------------------ model-level tests
B, S, L = 4, 3200, 8


def _config():
  c = micro_config(k=2)
  c.model.frontend.update(freq_masks=0, time_masks=0)  # train-mode scoring == eval mode
  c.train.update(warmup_steps=0, learning_rate=3e-3, end_lr_ratio=1.0, steps=1000)
  c.train.mwer.update(nbest=4, beam=4, lambda_ce=0.0)
  return c


def _batch():
  """3 utterances (distinct tones, 3-4 word transcripts) and a batch-padding row."""
  rng = np.random.default_rng(0)
  t = np.arange(S) / 16000
  audio = np.stack([0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)
                    + 0.02 * rng.standard_normal(S) for i in range(B)]).astype(np.float32)
  text_len = np.array([4, 3, 4, 0], np.int32)
  text = np.zeros((B, L), np.int32)
  for i in range(B):
    text[i, :text_len[i]] = rng.integers(4, 12, text_len[i])
  audio_len = np.array([S, S, S, 0], np.int32)
  audio[audio_len == 0] = 0.0
  return dict(audio=audio, audio_len=audio_len, text=text, text_len=text_len)


def _stepper(config, devices, mesh_cfg, params=None, frames=False):
  mesh = sharding_lib.make_mesh(mesh_cfg, devices)
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  setup = make_train_setup(config, mesh, rules)
  state = setup.create_state(seed=0, params=params)
  jitted = setup.jit_step(word_tables=we.build_tables(PIECES),
                          kind="frames" if frames else "audio")

  def run(state, batch):
    with step_lib.trace_context(mesh, rules):
      return jitted(state, step_lib.device_batch(batch, mesh, rules))
  return state, run


@pytest.fixture(scope="module")
def pretrained():
  """Params after a few CE steps on 4 utterances: the N-best has some (not all) right."""
  config = _config()
  state, run = _stepper(config, jax.devices()[:1], {"data": 1})
  batch = _batch()
  for _ in range(12):
    state, m = run(state, batch)
  assert float(m["acc_k"][0]) < 1.0
  return config, jax.device_get(state.params), batch


@pytest.mark.slow  # ~20 s: two more search compiles; the fast tests cover the step.
def test_search_scores_equal_teacher_forced_rescoring(pretrained):
  """The search's exact head-1 scores (K-token blocks and K=1) equal the teacher-forced
  rescoring of the same hypotheses the loss uses."""
  config, params, batch = pretrained
  model = SpeechLLaMA(ModelConfig.from_config(config.model))

  @jax.jit
  def go(params, audio, audio_len):
    out = {}
    emb, valid, alen = model.apply(params, audio, audio_len, method=model.encode)
    for k in (1, 2):
      nb = search_lib.make_nbest_search(model, beam=4, nbest=4, max_new_tokens=L,
                                        block_size=k)(params, audio, audio_len)
      lp = mwer_lib.sequence_logprobs(model, params, emb, valid, alen, nb["tokens"],
                                      nb["lengths"])
      out[k] = dict(nb, rescored=lp)
    return out

  out = jax.device_get(go(params, batch["audio"], batch["audio_len"]))
  for k, nb in out.items():
    fin = nb["valid"] & (nb["lengths"] < L)  # ended with EOS: the score includes it
    assert fin.sum() >= B, f"K={k}: too few finished hypotheses"
    norm = nb["lengths"] + 1.0
    np.testing.assert_allclose((nb["rescored"] / norm)[fin], nb["scores"][fin],
                               rtol=1e-4, atol=1e-4, err_msg=f"K={k}")
  # Blocks of 2 tokens need no more decoder calls than single tokens.
  assert out[2]["total_calls"] <= out[1]["total_calls"]


@pytest.fixture(scope="module")
def finetuned(pretrained):
  """Runs 9 MWER steps on one device; returns the config and each step's metrics."""
  config, params, batch = pretrained
  config = config.copy_and_resolve_references()
  config.train.objective = "mwer"
  config.train.learning_rate = 1e-3
  config.train.mwer.lambda_ce = 0.0
  state, run = _stepper(config, jax.devices()[:1], {"data": 1}, params)
  hist = []
  for _ in range(9):  # the metrics report the N-best of the params before each update
    state, m = run(state, batch)
    hist.append(jax.device_get(m))
  return config, hist


def test_mwer_finetuning_lowers_expected_word_errors(finetuned):
  _, hist = finetuned
  for m in hist:
    assert m["finite"] and np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    assert m["mwer/nbest_valid"] > 1
  err = [float(m["mwer/expected_errors"]) for m in hist]
  assert err[0] > 0.5, err  # the CE model still makes errors
  assert err[-1] < 0.9 * err[0], err


# CI time: sharded = one device runs in CI on the train step (test_train_sharding).
@pytest.mark.slow
def test_mwer_step_sharded_equals_single_device(pretrained, finetuned):
  """The first MWER step on a (data=4, tensor=2) mesh of 8 devices vs one device."""
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    _, params, batch = pretrained
    config, hist = finetuned
    state, run = _stepper(config, jax.devices(), {"data": 4, "tensor": 2}, params)
    new, eight = run(state, batch)
    assert len(jax.tree.leaves(new.params)[0].sharding.device_set) == 8
    eight, one = jax.device_get(eight), hist[0]
    assert one["finite"] and eight["finite"]
    for key in ("loss", "mwer/mwer", "mwer/ce", "mwer/expected_errors", "grad_norm"):
      np.testing.assert_allclose(eight[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for key in ("mwer/mean_errors", "mwer/nbest_valid", "mwer/search_calls"):
      assert eight[key] == one[key], key  # the same N-best lists
  finally:
    jax.config.update("jax_default_matmul_precision", None)


def test_mwer_step_on_cached_encoder_frames_equals_the_audio_step(pretrained, finetuned):
  """A frozen encoder's feature cache (`data.feature_cache`: batches carry "frames"): the
  first MWER step from the encoder's frames searches the same N-best and gives the same
  loss as the step from the audio."""
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    _, params, batch = pretrained
    config, hist = finetuned
    model = SpeechLLaMA(ModelConfig.from_config(config.model))
    frames, frames_len = jax.jit(lambda p, a, n: model.apply(p, a, n, method=model.encode_frames))(
        params, batch["audio"], batch["audio_len"])
    cached = {k: batch[k] for k in ("audio_len", "text", "text_len")}
    cached.update(frames=np.asarray(frames), frames_len=np.asarray(frames_len))
    state, run = _stepper(config, jax.devices()[:1], {"data": 1}, params, frames=True)
    _, got = run(state, cached)
    got, want = jax.device_get(got), hist[0]
    assert got["finite"]
    for key in ("mwer/mean_errors", "mwer/nbest_valid", "mwer/search_calls"):
      assert got[key] == want[key], key  # the same N-best lists
    # the frames travel as float16 (the feature cache's dtype): 2e-3, not 1e-4
    for key in ("loss", "mwer/mwer", "mwer/expected_errors"):
      np.testing.assert_allclose(got[key], want[key], rtol=2e-3, atol=1e-4, err_msg=key)
  finally:
    jax.config.update("jax_default_matmul_precision", None)
