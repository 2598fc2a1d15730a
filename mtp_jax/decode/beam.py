"""Prefix beam search whose hypotheses grow by blocks of 1..K tokens.

Scoring choice: every token of a hypothesis is scored by head 1's exact log-prob
given its exact prefix (never by heads 2..K's own, less accurate, log-probs). The
heads only *propose*; verification prices the proposal in the same call:

Each live beam feeds `[c, d_2, ..., d_K]` (c = its last token, already scored;
d_* = drafts of heads 2..K at c's prediction position). Head 1's log-probs at fed
position j (lp_j) score d_{j+2} and give the next-token distribution after
`prefix + c + d_2..d_{j+1}`. Let a = number of leading drafts equal to head 1's
argmax (the greedy chain). The beam's candidates are, for j = 0..a:

    prefix + c + d_2..d_{j+1} + x,   x in top-W(lp_j),

excluding x = argmax(lp_j) for j < a (that candidate is a prefix of the j+1 ones).
So a candidate block is "greedy chain of heads, then one top-W choice", i.e. 1..K
tokens, and its score is exact. Ranking uses the length-normalized score
`sum(log p) / (tokens + [EOS])`; finished hypotheses (EOS or `max_new_tokens`) stay
in the beam as candidates; duplicates (the same token sequence reached from
different beams) are dropped, keeping the best-ranked.

Consequences: W=1 is blockwise-parallel greedy (identical to greedy, same call
count as `verify`); K=1 is ordinary beam search (all live hypotheses have equal
length, normalization only matters against finished ones).
Everything is static-shaped jax: usable inside jit (e.g. MWER training).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from mtp_jax.decode import common, engine, registry
from mtp_jax.model.kv_cache import write_rows
from pallas_kernels.verify import prefix_count

_H1, _H2 = 1000003, 40503
NEG = -jnp.inf


def _fold(h1, h2, tok):
  """Appends token(s) to the two uint32 rolling hashes of a sequence."""
  t = (tok + 1).astype(jnp.uint32)
  return h1 * jnp.uint32(_H1) + t, h2 * jnp.uint32(_H2) + t


def select_distinct(key, h1, h2, w: int):
  """Top-`w` candidates by key among distinct hashes.

  Args:
    key: [B, C] float ranking key (-inf = invalid).
    h1, h2: [B, C] uint32 hashes of the candidates' token sequences.
    w: number to select.
  Returns:
    (index [B, w] int32 into C, best first; key [B, w], -inf where fewer than w
    distinct valid candidates exist).
  """
  c = key.shape[1]
  idx = jnp.arange(c)
  same = (h1[:, :, None] == h1[:, None, :]) & (h2[:, :, None] == h2[:, None, :])
  better = (key[:, None, :] > key[:, :, None]) | (
      (key[:, None, :] == key[:, :, None]) & (idx[None, None, :] < idx[None, :, None]))
  valid = key > NEG
  dup = jnp.any(same & better & valid[:, None, :], axis=2)
  key = jnp.where(dup, NEG, key)
  top, index = jax.lax.top_k(key, w)
  return index.astype(jnp.int32), top


@flax.struct.dataclass
class BeamCarry:
  """Per hypothesis (R = B * W rows): c [R] its last token (scored, not yet fed),
  drafts [R, K-1] heads 2..K's drafts after c, score [R] total head-1 log-prob,
  eos [R] ended by EOS, h1/h2 [R] uint32 rolling hashes of its tokens."""
  c: jax.Array
  drafts: jax.Array
  score: jax.Array
  eos: jax.Array
  h1: jax.Array
  h2: jax.Array


class Beam(engine.Strategy):
  """Prefix beam search over `engine.LoopState` whose rows are the B * W hypotheses:
  out / n_out / done / accepted are per hypothesis, calls per input row."""

  def __init__(self, model, *, max_new_tokens: int, beam: int, nbest: int | None = None):
    super().__init__(model, max_new_tokens=max_new_tokens)
    self.w = beam
    self.nb = nbest or beam
    if not 1 <= self.nb <= self.w:
      raise ValueError(f"mtp_jax/decode/beam.py: nbest={self.nb} must be in [1, beam={self.w}]")
    self.feed_width = self.num_heads

  @property
  def max_iterations(self) -> int:
    return self.max_new_tokens + 1

  def init(self, f, out0, cache0, audio_len):
    k, n, w = self.num_heads, self.max_new_tokens, self.w
    b = audio_len.shape[0]
    r = b * w
    heads0 = out0["logits"][:, 0]                              # [B, K, V]
    lp0 = jax.nn.log_softmax(heads0[:, 0], axis=-1)            # [B, V]
    top_lp, top_x = jax.lax.top_k(lp0, w)                      # [B, W]
    drafts0 = common.argmax(heads0[:, 1:])
    x = top_x.reshape(r).astype(jnp.int32)
    no_audio = jnp.repeat(audio_len <= 0, w)
    eos = x == common.EOS
    hlen = jnp.where(eos, 0, 1).astype(jnp.int32)
    z = jnp.zeros((r,), jnp.uint32)
    hh1, hh2 = _fold(z, z, x)
    return engine.LoopState(
        cache=cache0.repeat_rows(w), text_index=jnp.ones((r,), jnp.int32),
        out=jnp.zeros((r, n + k + 1), jnp.int32).at[:, 0].set(x), n_out=hlen,
        done=eos | (hlen >= n) | no_audio,
        calls=jnp.where(audio_len <= 0, 0, 1).astype(jnp.int32), total=jnp.int32(1),
        accepted=jnp.zeros((r, k), jnp.int32).at[:, 0].set(jnp.where(no_audio, 0, hlen)),
        carry=BeamCarry(c=x, drafts=jnp.repeat(drafts0, w, axis=0),
                        score=jnp.where(no_audio, NEG, top_lp.reshape(r)), eos=eos,
                        h1=hh1, h2=hh2))

  def body(self, f, s):
    k, n, w = self.num_heads, self.max_new_tokens, self.w
    c = s.carry
    r = s.done.shape[0]
    b = r // w
    live = ~s.done
    fed = jnp.concatenate([c.c[:, None], c.drafts], axis=1)            # [R, K]
    out, cache = f.step(fed, s.text_index, s.cache)
    lp = jax.nn.log_softmax(out["logits"][:, :, 0], axis=-1)          # [R, K, V]
    amax = jnp.argmax(lp, axis=-1).astype(jnp.int32)                   # [R, K]
    d = c.drafts                                                       # [R, K-1]
    a = prefix_count((d == amax[:, :-1]) & (d != common.EOS))
    jmax = jnp.minimum(a, n - 1 - s.n_out)                             # live: hlen <= n-1
    # Exact log-prob of the chain d_2..d_{j+1} and hashes of prefix + chain, per j.
    d_lp = jnp.take_along_axis(lp[:, :-1], d[..., None], axis=-1)[..., 0]
    chain_lp = jnp.concatenate([jnp.zeros((r, 1)), jnp.cumsum(d_lp, axis=1)], axis=1)
    ph1, ph2 = [c.h1], [c.h2]
    for i in range(k - 1):
      n1, n2 = _fold(ph1[-1], ph2[-1], d[:, i])
      ph1.append(n1)
      ph2.append(n2)
    ph1, ph2 = jnp.stack(ph1, 1), jnp.stack(ph2, 1)                    # [R, K]
    # Extension candidates [R, K(j), W(t)].
    t_lp, t_x = jax.lax.top_k(lp, w)                                    # [R, K, W]
    t_x = t_x.astype(jnp.int32)
    jj = jnp.arange(k)[None, :, None]
    ok = live[:, None, None] & (jj <= jmax[:, None, None]) & (
        (jj == jmax[:, None, None]) | (t_x != amax[..., None]))
    e_score = c.score[:, None, None] + chain_lp[..., None] + t_lp
    e_eos = t_x == common.EOS
    e_hlen = s.n_out[:, None, None] + jj + jnp.where(e_eos, 0, 1)
    e_norm = (s.n_out[:, None, None] + jj + 1).astype(jnp.float32)
    e_h1, e_h2 = _fold(ph1[..., None], ph2[..., None], t_x)
    e_key = jnp.where(ok, e_score / e_norm, NEG)
    # Carried (finished) beams [R].
    c_norm = (s.n_out + c.eos.astype(jnp.int32)).astype(jnp.float32)
    c_key = jnp.where(s.done & (c.score > NEG), c.score / jnp.maximum(c_norm, 1.0), NEG)
    # Per batch row: C = W carries + W*K*W extensions.
    def per_row(carry, ext):
      return jnp.concatenate([carry.reshape(b, w), ext.reshape(b, w * k * w)], axis=1)
    key = per_row(c_key, e_key)
    sel, sel_key = select_distinct(key, per_row(c.h1, e_h1), per_row(c.h2, e_h2), w)
    is_carry = sel < w
    e_idx = jnp.maximum(sel - w, 0)
    parent_w = jnp.where(is_carry, sel, e_idx // (k * w))
    j = jnp.where(is_carry, 0, (e_idx // w) % k)
    t = e_idx % w
    parent = (jnp.arange(b)[:, None] * w + parent_w).reshape(r)
    j, t, is_carry, sel_key = j.reshape(r), t.reshape(r), is_carry.reshape(r), sel_key.reshape(r)
    dead = sel_key == NEG
    pick = lambda arr: arr[parent, j, t]  # noqa: E731
    x = pick(t_x)
    # New beams.
    p_hyp, p_hlen = s.out[parent], s.n_out[parent]
    block = jnp.where(jnp.arange(k)[None] == j[:, None], x[:, None],
                      jnp.pad(d[parent], ((0, 0), (0, 1))))
    hyp = jnp.where(is_carry[:, None], p_hyp, write_rows(p_hyp, block, p_hlen))
    x_eos = x == common.EOS
    hlen = jnp.where(is_carry, p_hlen, pick(e_hlen))
    fin = jnp.where(is_carry, True, x_eos | (hlen >= n)) | dead
    # Drafts for the new last token x: heads 2..K at the parent's fed position j.
    drafts = common.argmax(out["logits"][parent, j, 1:])
    credit = jnp.concatenate([(~x_eos)[:, None], jnp.arange(1, k)[None] <= j[:, None]], 1)
    row_live = jnp.any(live.reshape(b, w), axis=1)
    return s.replace(
        cache=cache.gather_rows(parent),
        text_index=jnp.where(is_carry, s.text_index[parent], s.text_index[parent] + j + 1),
        out=hyp, n_out=hlen, done=fin,
        calls=s.calls + row_live.astype(jnp.int32), total=s.total + 1,
        accepted=s.accepted[parent] + jnp.where(is_carry[:, None], 0, credit.astype(jnp.int32)),
        carry=BeamCarry(
            c=jnp.where(is_carry, c.c[parent], x), drafts=drafts,
            score=jnp.where(dead, NEG, jnp.where(is_carry, c.score[parent], pick(e_score))),
            eos=jnp.where(is_carry, c.eos[parent], x_eos),
            h1=jnp.where(is_carry, c.h1[parent], pick(e_h1)),
            h2=jnp.where(is_carry, c.h2[parent], pick(e_h2))))

  def finish(self, s):
    c = s.carry
    norm = (s.n_out + c.eos.astype(jnp.int32)).astype(jnp.float32)
    key = jnp.where(c.score > NEG, c.score / jnp.maximum(norm, 1.0), NEG)
    return nbest_result(s, key, c.score, self.w, self.nb, self.max_new_tokens)


def nbest_result(s: engine.LoopState, key, logprob, w: int, nb: int, n: int) -> dict:
  """The `nb` best of each input row's `w` hypothesis rows as the decode dict (best
  first; "nbest", "nbest_lengths", "nbest_scores" = `key`, "nbest_logprob" = `logprob`).

  Args:
    s: the loop state whose R = B * w rows are hypotheses.
    key: [R] ranking score (-inf: no hypothesis).
    logprob: [R] the hypotheses' total log-probs.
    w, nb: hypotheses per input row, and how many to return.
    n: max_new_tokens.
  """
  b = s.calls.shape[0]
  key = key.reshape(b, w)
  order = jnp.argsort(-key, axis=1, stable=True)[:, :nb]                  # [B, nb]
  rows = (jnp.arange(b)[:, None] * w + order).reshape(-1)
  hyp = s.out[rows][:, :n].reshape(b, nb, n)
  valid = jnp.take_along_axis(key, order, axis=1) > NEG
  lens = jnp.where(valid, s.n_out[rows].reshape(b, nb), 0)
  hyp = jnp.where(jnp.arange(n)[None, None] < lens[..., None], hyp, common.PAD)
  best = rows.reshape(b, nb)[:, 0]
  return dict(tokens=hyp[:, 0], lengths=lens[:, 0], calls=s.calls, total_calls=s.total,
              accepted=jnp.where(valid[:, :1], s.accepted[best], 0), nbest=hyp,
              nbest_lengths=lens, nbest_scores=jnp.take_along_axis(key, order, axis=1),
              nbest_logprob=jnp.where(valid, logprob[rows].reshape(b, nb), NEG))


def make_beam(model, *, max_new_tokens: int, beam: int = 4, nbest: int | None = None) -> Beam:
  """`fn(params, audio, audio_len) -> dict` (see `engine`) with extra "nbest"
  [B, nbest, N], "nbest_lengths" [B, nbest], "nbest_scores" [B, nbest]
  (length-normalized head-1 log-prob, -inf for missing entries, sorted descending)
  and "nbest_logprob" [B, nbest] (unnormalized sum).

  Args:
    model: a `SpeechLLaMA` with K heads.
    max_new_tokens: static cap on hypothesis length (EOS excluded).
    beam: beam width W.
    nbest: hypotheses returned per row (<= beam; default beam).
  """
  return Beam(model, max_new_tokens=max_new_tokens, beam=beam, nbest=nbest)


def _parse_nbest(v):
  return None if v in (None, 0) else registry.positive_int("nbest")(v)


registry.register(registry.StrategySpec(
    name="beam", build=make_beam,
    options=(registry.BEAM,
             registry.Option("nbest", None, "hypotheses returned per utterance, <= beam "
                             "(--strategy=beam; default: beam)", kind="int",
                             parse=_parse_nbest)),
    help="prefix beam search over blocks of 1..K tokens, exact head-1 scores (N-best)"))
