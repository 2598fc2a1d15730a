"""MTP targets, masks, head weights, loss and the optimizer's frozen-leaf labels."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.data.tokenizer import BOS_ID, EOS_ID
from mtp_jax.train import loss as loss_lib
from mtp_jax.train import optimizer as opt_lib
from train_helpers import micro_config


def test_targets_follow_x_shifted_by_k():
  text = np.array([[5, 6, 7, 0, 0, 0], [9, 0, 0, 0, 0, 0], [0] * 6], np.int32)
  text_len = np.array([3, 1, 0], np.int32)
  audio_len = np.array([100, 100, 0], np.int32)
  k = 3
  text_in, tgt, mask, prev = jax.device_get(
      loss_lib.make_targets(jnp.asarray(text), jnp.asarray(text_len), jnp.asarray(audio_len), k))
  np.testing.assert_array_equal(text_in[0], [BOS_ID, 5, 6, 7, 0, 0])
  for b, n in enumerate(text_len):
    x = [BOS_ID] + list(text[b, :n]) + [EOS_ID]
    for t in range(6):
      for h in range(1, k + 1):
        valid = t + h <= n + 1 and audio_len[b] > 0
        assert mask[b, t, h - 1] == valid, (b, t, h)
        if t + h <= n + 1:
          assert tgt[b, t, h - 1] == x[t + h], (b, t, h)
        else:
          assert tgt[b, t, h - 1] == 0
  np.testing.assert_array_equal(prev, tgt[..., :k - 1])
  assert not mask[2].any()  # batch-padding row


def test_head_weights():
  assert loss_lib.head_weights(3) == pytest.approx((1.0, 0.8, 0.64))
  assert loss_lib.head_weights(3, explicit=(1, 1)) == (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="train.head_weights"):
    loss_lib.head_weights(4, explicit=(1.0,))


def test_loss_is_weighted_mean_of_masked_heads():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 4, 2, 5)).astype(np.float32)
  targets = rng.integers(0, 5, (2, 4, 2))
  mask = rng.random((2, 4, 2)) > 0.3
  loss, aux = loss_lib.mtp_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask),
                                (1.0, 0.5))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  per = [(nll[..., h] * mask[..., h]).sum() / mask[..., h].sum() for h in range(2)]
  np.testing.assert_allclose(aux["loss_k"], per, rtol=1e-5)
  np.testing.assert_allclose(loss, per[0] + 0.5 * per[1], rtol=1e-5)
  acc = [((logits[..., h, :].argmax(-1) == targets[..., h]) * mask[..., h]).sum()
         / mask[..., h].sum() for h in range(2)]
  np.testing.assert_allclose(aux["acc_k"], acc, rtol=1e-6)


def test_heads_only_labels_and_frozen_updates():
  from mtp_jax.config import ModelConfig
  from mtp_jax.model.speech_llama import SpeechLLaMA
  from mtp_jax.train.state import abstract_params
  import flax.linen as nn
  c = micro_config(k=3)
  c.train.mode = "heads_only"
  c.train.warmup_steps = 0  # lr > 0 at the first update
  model = SpeechLLaMA(ModelConfig.from_config(c.model))
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), nn.unbox(abstract_params(model)))
  labels = opt_lib.trainable_labels(params, c.train)
  flat = {jax.tree_util.keystr(p): l for p, l in jax.tree_util.tree_flatten_with_path(labels)[0]}
  assert all((l == "train") == ("'mtp'" in k) for k, l in flat.items())
  assert any(l == "train" for l in flat.values())
  tx = opt_lib.make_optimizer(c.train, params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  for (path, u), l in zip(jax.tree_util.tree_flatten_with_path(updates)[0],
                          jax.tree.leaves(labels)):
    assert bool(jnp.any(u != 0)) == (l == "train"), path
  c.train.mode = "bogus"
  with pytest.raises(ValueError, match="train.mode"):
    opt_lib.trainable_labels(params, c.train)
