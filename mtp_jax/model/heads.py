"""Multi-token prediction heads: K heads predict tokens t+1..t+K from one decoder call.

Head 1 is always the ordinary next-token head (final-normed hidden state times the
unembedding). Heads 2..K depend on `head_type`:

* `independent` (Medusa-like): z_k = h + SiLU(W_k h), logits_k = z_k @ U_k with an own
  vocabulary projection U_k per head.
* `latent` (latent-space expansion): z_k = RMSNorm_k(h @ M_k) with a per-head d x d map
  M_k (initialized near identity), then the shared unembedding, applied to every head
  in one matmul (the [d, V] matrix is read once per call: what costs on a CPU when V is
  large, e.g. Whisper's 51,864).
* `sequential` (Hydra-like): s_1 = h; s_k = s_{k-1} + SiLU(W_k [s_{k-1}; E(y_{t+k-1})]),
  logits_k = RMSNorm_k(s_k) @ shared unembedding, where y_{t+k-1} is the token head
  k-1 predicts: the ground truth in training (teacher forcing) and head k-1's argmax
  (its draft) at inference.
"""
from __future__ import annotations

import flax.linen as nn
from flax.linen.dtypes import promote_dtype
import jax
import jax.numpy as jnp

from mtp_jax.config import ModelConfig
from mtp_jax.model.layers import ACT, RMSNorm, constrain, dense, dtype_of

LOGITS = ("activation_batch", "activation_length", "activation_vocab")
# Each head's [d, d] matmul output is constrained to the residual-stream layout (ACT).
# Left to propagation, an activation between two (fsdp, tensor)-sharded kernels can be
# laid out so that XLA's SPMD partitioner (Shardy and GSPMD alike, jax 0.10.2) computes
# wrong gradients upstream of it on a mesh using data, fsdp and tensor at once, while
# the loss stays right (tests/test_train_sharding.py; docs/sharding.md has a repro).


# Variable collection of decoding-only copies of parameters (see `decode_layout`).
DECODE = "decode"


class Unembed(nn.Module):
  """Vocabulary projection, tied to the input embedding or with its own kernel [d, V].

  A tied projection reads the [V, d] embedding transposed. When the variables carry
  the decoding layout (`decode_layout`: the same matrix stored [d, V] in collection
  "decode"), it multiplies by that copy instead: on XLA:CPU a few rows times a [d, V]
  matrix run 1.3-1.6x faster than times a [V, d] one read transposed, and a decoder
  call reads the whole vocabulary (bench/results/unembed_layout_cpu.json).
  """
  cfg: ModelConfig
  embed: nn.Embed

  def setup(self):
    c = self.cfg.decoder
    if not c.tie_embeddings:
      self.proj = dense(c.vocab_size, ("embed", "vocab"), dtype=dtype_of(self.cfg.dtype),
                        param_dtype=dtype_of(self.cfg.param_dtype), name="proj")

  def __call__(self, x, limit: int = 0):
    """x [..., d] -> logits [..., V]; with `limit` (static) > 0, over the token ids
    < limit only ([..., limit]: a shortlist, e.g. for drafting)."""
    if limit:
      x, w = promote_dtype(x, self.matrix()[:, :limit], dtype=dtype_of(self.cfg.dtype))
      return jnp.dot(x, w)
    if not self.cfg.decoder.tie_embeddings:
      return self.proj(x)
    if self.has_variable(DECODE, "kernel"):
      x, w = promote_dtype(x, self.get_variable(DECODE, "kernel"), dtype=self.embed.dtype)
      return jnp.dot(x, w)
    return self.embed.attend(x)

  def matrix(self):
    """The unembedding as a [d, V] matrix (for fused kernels)."""
    if self.cfg.decoder.tie_embeddings:
      if self.has_variable(DECODE, "kernel"):
        return self.get_variable(DECODE, "kernel")
      return self.embed.embedding.T
    return self.proj.variables["params"]["kernel"]


def decode_layout(variables: dict, tie_embeddings: bool) -> dict:
  """`variables` plus the decoding layout of a tied unembedding (unchanged if untied).

  Adds {"decode": {"unembed": {"kernel": E^T}}}: the [V, d] embedding E copied once
  into a [d, V] array that `Unembed` multiplies by (the same logits up to float
  summation order). Costs one more copy of the embedding in memory; made once per
  loaded model (`checkpoint.restore_for_inference`), not per decoder call.

  Args:
    variables: a `SpeechLLaMA`'s unboxed variables {"params": ...}.
    tie_embeddings: `model.decoder.tie_embeddings`.
  """
  if not tie_embeddings or DECODE in variables:
    return variables
  table = variables["params"]["embed"]["embedding"]
  return {**variables, DECODE: {"unembed": {"kernel": jnp.transpose(table)}}}


def _identity_plus_noise(key, shape, dtype=jnp.float32):
  return jnp.eye(shape[0], shape[1], dtype=dtype) + 0.02 * jax.random.normal(key, shape, dtype)


class MTPHeads(nn.Module):
  """Computes logits of all K heads from the final-normed hidden states."""
  cfg: ModelConfig
  embed: nn.Embed
  unembed: Unembed

  def setup(self):
    mc = self.cfg
    c, k = mc.decoder, mc.mtp.num_heads
    kw = dict(dtype=dtype_of(mc.dtype), param_dtype=dtype_of(mc.param_dtype))
    t = mc.mtp.head_type
    if t == "independent":
      self.res = [dense(c.d_model, ("embed", "mlp"), name=f"res{i}", use_bias=True, **kw)
                  for i in range(2, k + 1)]
      self.out = [dense(c.vocab_size, ("embed", "vocab"), name=f"out{i}", **kw)
                  for i in range(2, k + 1)]
    elif t == "latent":
      self.maps = [dense(c.d_model, ("embed", "mlp"), name=f"map{i}",
                         kernel_init=_identity_plus_noise, **kw) for i in range(2, k + 1)]
      self.norms = [RMSNorm(c.norm_eps, name=f"norm{i}", **kw) for i in range(2, k + 1)]
    else:  # sequential
      self.mix = [dense(c.d_model, ("embed", "mlp"), name=f"mix{i}", use_bias=True, **kw)
                  for i in range(2, k + 1)]
      self.norms = [RMSNorm(c.norm_eps, name=f"norm{i}", **kw) for i in range(2, k + 1)]

  def _latent(self, hn, n: int) -> list:
    """Latent heads 2..n's inputs to the shared unembedding: RMSNorm_k(hn @ M_k)."""
    return [norm(constrain(m(hn), ACT))
            for m, norm in list(zip(self.maps, self.norms))[:n - 1]]

  def draft_logits(self, hn, vocab: int):
    """Heads 2..K's logits over the token ids < `vocab` only: [B, T, K-1, vocab].

    A shortlist for drafting (`decode/verify.py`, option `draft_vocab`): BPE
    vocabularies number their pieces from frequent to rare, so the first ids hold most
    tokens of a transcript, and a draft outside them is only a draft not made. Latent
    heads only (one matmul through the shared unembedding)."""
    mc = self.cfg
    if mc.mtp.head_type != "latent":
      raise ValueError(f"draft_vocab needs model.mtp.head_type='latent' (heads drafting "
                       f"through the shared unembedding), not {mc.mtp.head_type!r}")
    z = jnp.stack(self._latent(hn, mc.mtp.num_heads), axis=2)
    return constrain(self.unembed(z, limit=vocab).astype(jnp.float32),
                     ("activation_batch", "activation_length", None, "activation_vocab"))

  def __call__(self, hn, prev_tokens=None, num_heads: int | None = None):
    """Logits of the first `num_heads` heads (all K by default).

    Args:
      hn: [B, T, d] final-normed decoder hidden states.
      prev_tokens: for `sequential` heads only: [B, T, K-1] int32, the tokens
        y_{t+1}..y_{t+K-1} heads 2..K condition on (teacher forcing). None: each head
        conditions on the previous head's argmax (inference).
      num_heads: compute only heads 1..num_heads (static, 1..K). Decoding loops use
        1 at every fed position and all K only where drafts are needed, so a K-head
        model's decoder call costs what a 1-head model's does.
    Returns:
      [B, T, num_heads, V] float32 logits; [..., 0, :] is the ordinary next-token head.
    """
    mc = self.cfg
    n = mc.mtp.num_heads if num_heads is None else int(num_heads)
    if not 1 <= n <= mc.mtp.num_heads:
      raise ValueError(f"num_heads={n}: expected 1..{mc.mtp.num_heads}")
    t = mc.mtp.head_type
    if t == "latent":  # one vocabulary projection for every head: [B, T, n, d] @ U
      z = [hn] + self._latent(hn, n)
      return constrain(self.unembed(jnp.stack(z, axis=2)).astype(jnp.float32),
                       ("activation_batch", "activation_length", None, "activation_vocab"))
    logits = [self.unembed(hn)]
    if t == "independent":
      for res, out in list(zip(self.res, self.out))[:n - 1]:
        logits.append(out(hn + nn.silu(constrain(res(hn), ACT))))
    else:
      s = hn
      for i, (mix, norm) in list(enumerate(zip(self.mix, self.norms)))[:n - 1]:
        if prev_tokens is not None:
          tok = prev_tokens[..., i]
        else:
          tok = jnp.argmax(logits[-1], axis=-1).astype(jnp.int32)
        e = self.embed(tok).astype(s.dtype)
        s = s + nn.silu(constrain(mix(jnp.concatenate([s, e], axis=-1)), ACT))
        logits.append(self.unembed(norm(s)))
    logits = [constrain(l.astype(jnp.float32), LOGITS) for l in logits]
    return jnp.stack(logits, axis=2)
