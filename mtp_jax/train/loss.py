"""Multi-token prediction targets and the weighted per-head cross-entropy.

With x = [BOS, y_1, ..., y_n, EOS] and decoder input text_in = x[:L], head k
(1-based) at text position t predicts x_{t+k}; the target is valid while
t + k <= n + 1 (up to and including EOS) and the row is real (audio_len > 0).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from mtp_jax.data.tokenizer import BOS_ID, EOS_ID


def head_weights(num_heads: int, decay: float = 0.8,
                 explicit: Sequence[float] = ()) -> tuple[float, ...]:
  """Loss weights (w_1 = 1, w_2..w_K) of the K heads (see `train_defaults`)."""
  if explicit:
    if len(explicit) != num_heads - 1:
      raise ValueError(f"train.head_weights has {len(explicit)} entries; expected "
                       f"{num_heads - 1} (heads 2..{num_heads})")
    return (1.0,) + tuple(float(w) for w in explicit)
  return tuple(float(decay) ** k for k in range(num_heads))


def make_targets(text: jax.Array, text_len: jax.Array, audio_len: jax.Array,
                 num_heads: int):
  """Decoder inputs, K-head targets and their mask from a batch.

  Args:
    text: [B, L] int32 transcript ids without BOS/EOS, padded with 0.
    text_len: [B] int32 transcript lengths n.
    audio_len: [B] samples; 0 marks a batch-padding row (fully masked). Text-only
      batches (`data.text_corpus`) pass their text_len here.
    num_heads: K.
  Returns:
    text_in: [B, L] int32 = [BOS, y_1, ..., y_n, PAD, ...].
    targets: [B, L, K] int32, targets[b, t, k-1] = x_{t+k} (0 past EOS).
    mask: [B, L, K] bool, valid targets.
    prev_tokens: [B, L, K-1] int32 teacher-forcing tokens for sequential heads
      (= targets[..., :K-1]).
  """
  b, l = text.shape
  text = text.astype(jnp.int32)
  pos = jnp.arange(l + num_heads + 1)[None, :]                     # [1, L+K+1]
  body = jnp.pad(text, ((0, 0), (1, num_heads)))                   # x without BOS/EOS
  x = jnp.where(pos == 0, BOS_ID, body)
  x = jnp.where(pos == text_len[:, None] + 1, EOS_ID, x)
  x = jnp.where(pos > text_len[:, None] + 1, 0, x)                 # [B, L+K+1]
  text_in = jnp.where(pos[:, :l] > text_len[:, None], 0, x[:, :l])  # PAD, not EOS
  t = jnp.arange(l)[:, None]
  k = jnp.arange(1, num_heads + 1)[None, :]                        # [1, K]
  idx = t + k                                                       # [L, K]
  targets = x[:, idx]                                               # [B, L, K]
  mask = (idx[None] <= text_len[:, None, None] + 1) & (audio_len > 0)[:, None, None]
  return text_in, targets, mask, targets[..., :num_heads - 1]


def mtp_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array,
             weights: Sequence[float], label_smoothing: float = 0.0):
  """Weighted sum of per-head token-mean cross-entropies.

  Args:
    logits: [B, L, K, V] float32.
    targets: [B, L, K] int32.
    mask: [B, L, K] bool.
    weights: K floats (head 1 first).
    label_smoothing: optional smoothing of the one-hot targets.
  Returns:
    (loss scalar, aux dict with "loss_k" [K], "acc_k" [K], "tokens_k" [K]).
  """
  v = logits.shape[-1]
  logits = logits.astype(jnp.float32)
  if label_smoothing:
    onehot = optax.smooth_labels(jax.nn.one_hot(targets, v), label_smoothing)
    ce = optax.softmax_cross_entropy(logits, onehot)
  else:
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  m = mask.astype(jnp.float32)
  tokens = m.sum(axis=(0, 1))                                       # [K]
  denom = jnp.maximum(tokens, 1.0)
  loss_k = (ce * m).sum(axis=(0, 1)) / denom
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  acc_k = (correct * m).sum(axis=(0, 1)) / denom
  w = jnp.asarray(weights, jnp.float32)
  return jnp.sum(w * loss_k), {"loss_k": loss_k, "acc_k": acc_k, "tokens_k": tokens}


def ctc_loss(logits: jax.Array, logit_len: jax.Array, text: jax.Array, text_len: jax.Array,
             audio_len: jax.Array):
  """Auxiliary CTC loss of the encoder (blank = PAD id 0), per target token.

  Rows that cannot be aligned (fewer frames than labels plus repeated labels) and
  batch-padding rows (audio_len == 0) are left out rather than allowed to blow up.

  Args:
    logits: [B, T, V] CTC logits over the encoder frames.
    logit_len: [B] valid frames.
    text: [B, L] int32 transcript ids without BOS/EOS (padded with 0).
    text_len: [B] transcript lengths.
    audio_len: [B] samples; 0 marks a batch-padding row.
  Returns:
    (loss scalar = sum of row losses / sum of their tokens, aux dict with
    "ctc_loss" (the same scalar) and "ctc_rows" (rows counted)).
  """
  b, t, _ = logits.shape
  l = text.shape[1]
  text = text.astype(jnp.int32)
  in_text = jnp.arange(l)[None] < text_len[:, None]
  repeats = jnp.sum((text[:, 1:] == text[:, :-1]) & in_text[:, 1:], axis=1)
  ok = (audio_len > 0) & (text_len > 0) & (logit_len >= text_len + repeats)
  logit_pad = (jnp.arange(t)[None] >= logit_len[:, None]).astype(jnp.float32)
  label_pad = (~in_text).astype(jnp.float32)
  per_row = optax.ctc_loss(logits.astype(jnp.float32), logit_pad, text, label_pad, blank_id=0)
  okf = ok.astype(jnp.float32)
  loss = jnp.sum(jnp.where(ok, per_row, 0.0)) / jnp.maximum(jnp.sum(okf * text_len), 1.0)
  return loss, {"ctc_loss": loss, "ctc_rows": jnp.sum(okf)}
