"""Blockwise-parallel decoding (Stern et al., 2018) with the K heads as drafters.

Each decoder call feeds K tokens per row at the row's text index:

    [c, d_2, ..., d_K]

where c is the last accepted token (head 1's correction from the previous call, not
yet in the cache) and d_2..d_K are the drafts heads 2..K produced at c's prediction
position. In that one call head 1 at fed position i predicts the token after fed
token i, which verifies draft d_{i+2}; the longest agreeing prefix (a drafts) is
accepted, followed by head 1's correction at position a. The heads at position a
(the last accepted position) then give the next call's drafts. The cache keeps the
c, d_2..d_{a+1} slots; rejected slots are simply not counted (`text_index += a+1`).

Every emitted token is head 1's argmax given the exact prefix, so the output equals
greedy decoding token for token (up to float ties). Optional typical acceptance
(Medusa): a draft is also accepted when p_1(draft) > min(eps, alpha * exp(-H(p_1))),
which may change the output.

The next drafts come from the same decoder call: every head at every fed position in
its one vocabulary matmul when the call is small (`common.ONE_PASS_MAX_ROWS`), else
heads 2..K at the accepted position in a second one; with `draft_vocab=N` heads 2..K
score only the token ids < N (latent heads), a matmul N/V the size.

Head-1 verification reads the step's logits (`reference_accept`) or, when the model's
kernel switch is on (`model.kernels.enabled`, from `config.kernels`), runs the fused
Pallas kernel on the hidden states (`kernel_accept`,
`pallas_kernels.dispatch.fused_verify`); both accept with the one rule,
`pallas_kernels.verify.acceptance`. Typical acceptance needs the full logits, so it
always takes the reference path.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mtp_jax.decode import common, engine, registry
from mtp_jax.decode.greedy import make_greedy
from pallas_kernels import dispatch
from pallas_kernels.verify import acceptance

# (f: ModelFns, out: decode_step output, drafts [B,T-1], typical)
#   -> (argmax [B,T], accepted [B], correction [B])
AcceptFn = Callable


def reference_accept(f: common.ModelFns, out, drafts, typical=None):
  """Head-1 verification from the step's logits.

  Args:
    f: bound model functions (unused; same signature as `kernel_accept`).
    out: decode_step output: "logits" [B, T, n, V] (head 1 first), "hidden" [B, T, d].
    drafts: [B, T-1] drafts; drafts[:, i] is checked against head 1 at position i.
    typical: None (exact greedy acceptance) or (eps, alpha) for typical acceptance.
  Returns:
    argmax [B, T] int32, accepted [B] int32 (0..T-1), correction [B] int32.
  """
  del f
  logits = out["logits"][:, :, 0]
  argmax = common.argmax(logits)
  typical_ok = None
  if typical is not None:
    eps, alpha = typical
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    p_draft = jnp.exp(jnp.take_along_axis(logp, drafts[..., None], axis=-1)[..., 0])
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    typical_ok = p_draft > jnp.minimum(eps, alpha * jnp.exp(-entropy))
  accepted, correction = acceptance(argmax, drafts, typical_ok)
  return argmax, accepted, correction


def kernel_accept(f: common.ModelFns, out, drafts, typical=None):
  """Head-1 verification with the fused Pallas kernel (greedy acceptance only).

  Same arguments and results as `reference_accept`; reads only out["hidden"]. On CPU
  the kernel runs in the Pallas interpreter (slow; for tests)."""
  if typical is not None:
    raise ValueError("mtp_jax/decode/verify.py: typical acceptance needs the full logits; "
                     "the fused verification kernel computes only their argmax")
  hidden = out["hidden"]
  w = f.unembedding().astype(hidden.dtype)
  res = dispatch.fused_verify(hidden, w, drafts, use_kernel=True,
                              interpret=dispatch.needs_interpreter())
  return res.argmax, res.accepted, res.correction


def drafts_of(logits: jax.Array) -> jax.Array:
  """Every head's logits at one position [B, K, V] -> heads 2..K's argmax [B, K-1]."""
  return common.argmax(logits[:, 1:])


def verified_block(drafts, accepted, correction) -> engine.Block:
  """[d_2 .. d_{a+1}, correction] with its sources (head a+1 for d_{a+1}, head 1 for
  the correction): the block verification (chain or tree) emits.

  Args:
    drafts: [B, K-1] the drafts in path order; accepted: [B] a; correction: [B].
  """
  k = drafts.shape[1] + 1
  pos = jnp.arange(k)[None]
  keep = pos < accepted[:, None]
  tokens = jnp.where(keep, jnp.pad(drafts, ((0, 0), (0, 1))), correction[:, None])
  return engine.Block(tokens, accepted + 1, jnp.where(keep, pos + 1, 0))


class Verify(engine.BlockStrategy):
  """Carry: (correction [B], drafts [B, K-1]): the next call feeds [c, d_2..d_K].

  Verification runs the fused kernel when `model.kernels.enabled` and acceptance is
  exact (typical=None), else the reference."""

  def __init__(self, model, *, max_new_tokens: int, typical=None, draft_vocab: int = 0):
    super().__init__(model, max_new_tokens=max_new_tokens)
    self.typical = typical
    self.draft_vocab = common.draft_vocab_of(model, draft_vocab)
    self.use_kernels = model.kernels.enabled and typical is None
    self.accept = kernel_accept if self.use_kernels else reference_accept
    self.feed_width = self.emit_width = self.num_heads

  def first(self, f, out0):
    corr = common.argmax(out0["logits"][:, 0, 0])
    return engine.Block.single(corr), (corr, drafts_of(out0["logits"][:, 0]))

  def propose(self, f, cache, text_index, carry, live):
    corr, drafts = carry
    fed = jnp.concatenate([corr[:, None], drafts], axis=1)               # [B, K]
    k = self.num_heads
    one = common.one_pass(fed.shape[0], k, k, self.one_pass_max_rows)
    if self.draft_vocab:
      # Head 1 over the whole vocabulary at every fed position; heads 2..K over the
      # shortlist, in the same call at every position (small calls) or at the
      # accepted one after it.
      n = self.draft_vocab
      out, cache = f.step(fed, text_index, cache, num_heads=0 if self.use_kernels else 1,
                          draft_vocab=n if one else 0)
      _, a, corr = self.accept(f, out, drafts, self.typical)
      short = (common.take_position(out["draft_logits"], a) if one else
               f.draft_logits(common.take_position(out["hidden"], a)[:, None], n)[:, 0])
      return verified_block(drafts, a, corr), a + 1, cache, (corr, common.argmax(short))
    if not self.use_kernels and one:
      # Every head at every fed position in one vocabulary matmul; the drafts are
      # read at the last accepted position.
      out, cache = f.step(fed, text_index, cache, num_heads=k)          # [B, K, K, V]
      _, a, corr = self.accept(f, out, drafts, self.typical)
      heads = common.take_position(out["logits"], a)
    else:
      # Head 1 at every fed position (none with the kernel, which reads the hidden
      # states); heads 2..K only at the last accepted position (heads_at).
      out, cache = f.step(fed, text_index, cache, num_heads=0 if self.use_kernels else 1)
      _, a, corr = self.accept(f, out, drafts, self.typical)
      heads = common.heads_at(f, out["hidden"], a)
    return verified_block(drafts, a, corr), a + 1, cache, (corr, drafts_of(heads))


def make_verify(model, *, max_new_tokens: int, typical=None, draft_vocab: int = 0):
  """`fn(params, audio, audio_len) -> dict` (see `engine`).

  Args:
    model: a `SpeechLLaMA` with K = `cfg.mtp.num_heads` heads (K=1: plain greedy);
      its `kernels.enabled` picks the fused verification kernel (see `Verify`).
    max_new_tokens: static cap on emitted tokens (EOS excluded).
    typical: None, or (eps, alpha) for Medusa-style typical acceptance.
    draft_vocab: N > 0: heads 2..K draft among the token ids < N only (latent heads;
      N >= the vocabulary or 0: all). The output is unchanged; drafts are cheaper and
      a draft of a rarer token is not made.
  """
  if model.cfg.mtp.num_heads == 1:
    return make_greedy(model, max_new_tokens=max_new_tokens)
  return Verify(model, max_new_tokens=max_new_tokens, typical=typical,
                draft_vocab=draft_vocab)


def parse_typical(v):
  """None / "" / (eps, alpha) / "eps,alpha" -> None or (float, float)."""
  if v is None or v == "" or v == ():
    return None
  if isinstance(v, str):
    v = v.split(",")
  if len(v) != 2:
    raise ValueError(f"typical={v!r}: expected two numbers eps,alpha (e.g. 0.3,0.09)")
  eps, alpha = float(v[0]), float(v[1])
  if eps <= 0 or alpha <= 0:
    raise ValueError(f"typical=({eps}, {alpha}): eps and alpha must be > 0")
  return eps, alpha


registry.register(registry.StrategySpec(
    name="verify", build=make_verify, exact=True,
    options=(registry.Option("typical", None, "eps,alpha: Medusa typical acceptance in "
                             "--strategy=verify (changes the output); empty: exact",
                             kind="string", parse=parse_typical),
             registry.DRAFT_VOCAB),
    help="blockwise-parallel verification of the heads' drafts (output = greedy)"))
