"""Joint CTC / decoder beam search: the decoder's hypotheses scored by the CTC head too.

A model with a CTC head (`model.encoder.ctc_head` or `model.projector.ctc_head`) reads
the audio twice: frame by frame (CTC) and as a language model over the audio prefix
(the decoder). They fail differently. The decoder writes fluent text and may skip or
repeat words; the CTC head's path must account for every frame, so a hypothesis that
drops a word, ends early or loops scores badly under it. Hybrid CTC/attention decoding
(Watanabe et al., 2017; ESPnet's `CTCPrefixScorer`) ranks each hypothesis h by

    (1 - ctc_weight) * log p_dec(h) + ctc_weight * log p_ctc(h...) + length_bonus * |h|

where p_ctc(h...) is the CTC *prefix* probability (of every label sequence that starts
with h) while h is open, and the CTC probability of exactly h once it ends with EOS.

One decoder call per step feeds one token to each of the B * beam hypotheses (the MTP
heads are not used: this is the accuracy-first strategy). Each hypothesis extends by
its decoder's `pre_beam` likeliest tokens plus EOS; their CTC prefix scores are
computed over all T CTC frames at once (`prefix_scores`, [R, M, T] elementwise work),
and the forward variables of the `beam` survivors advance by one scan over T
(`advance`). Finished hypotheses stay in the beam as candidates; the search ends when
every beam is finished (or `max_new_tokens`).

ctc_weight=0 is ordinary beam search on the decoder's log-probs (beam=1: greedy,
tested); ctc_weight=1 ranks by the CTC head alone among the decoder's proposals.
Everything is static-shaped jax (inside jit).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from mtp_jax.decode import common, engine, registry
from mtp_jax.decode.beam import nbest_result
from mtp_jax.model.kv_cache import write_rows

NEG = -jnp.inf


# ------------------------------------------------------------------ CTC prefix scoring
def initial_forward(blank_lp: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Forward variables of the empty hypothesis: blank_lp [R, T] -> (r_n, r_b) [R, T],
  log-probs of having read frames 0..t ending in a label (-inf) / in blank."""
  return jnp.full_like(blank_lp, NEG), jnp.cumsum(blank_lp, axis=-1)


def _phi_prev(r_n, r_b, last, cand):
  """log phi_{t-1} per candidate: the mass from which candidate c may start at frame t
  (h's paths ending in blank, plus in a label if c differs from h's last token);
  at t = 0 only the empty hypothesis (last = -1) may start. [R, T] x [R, M] -> [R, M, T]."""
  r_sum = jnp.logaddexp(r_n, r_b)
  phi = jnp.where((cand == last[:, None])[..., None], r_b[:, None], r_sum[:, None])
  start = jnp.where(last < 0, 0.0, NEG)[:, None, None]
  return jnp.concatenate([jnp.broadcast_to(start, phi.shape[:2] + (1,)), phi[..., :-1]], -1)


def prefix_scores(token_lp, r_n, r_b, last, cand, frames):
  """CTC prefix log-probs of h + c for every candidate c.

  Args:
    token_lp: [R, M, T] log p_t(c) of each candidate at each frame.
    r_n, r_b: [R, T] the hypothesis' forward variables (`initial_forward`, `advance`).
    last: [R] int32 h's last token (-1: h is empty).
    cand: [R, M] int32 candidate tokens (EOS gets the full probability of h instead).
    frames: [R] int32 valid CTC frames.
  Returns:
    [R, M] float32: log of the total probability of the label sequences starting with
    h + c; for c = EOS the probability of exactly h (-inf where h cannot fit in the
    frames, and for c = the blank, id 0, which is no label).
  """
  t = token_lp.shape[-1]
  valid = jnp.arange(t)[None, None] < frames[:, None, None]
  psi = jax.nn.logsumexp(jnp.where(valid, _phi_prev(r_n, r_b, last, cand) + token_lp, NEG),
                         axis=-1)
  end = jnp.maximum(frames - 1, 0)[:, None]
  full = jnp.take_along_axis(jnp.logaddexp(r_n, r_b), end, axis=1)            # [R, 1]
  full = jnp.where(frames[:, None] > 0, full, NEG)
  return jnp.where(cand == common.EOS, full, jnp.where(cand == common.PAD, NEG, psi))


def advance(token_lp, blank_lp, r_n, r_b, last, tok):
  """Forward variables of h + tok: token_lp [R, T] (log p_t(tok)), blank_lp [R, T],
  r_n, r_b [R, T] of h, last [R], tok [R] -> (r_n, r_b) [R, T] of h + tok."""
  phi = _phi_prev(r_n, r_b, last, tok[:, None])[:, 0]                       # [R, T]

  def step(carry, xs):
    rn, rb = carry
    phi_t, x_t, b_t = xs
    new = (jnp.logaddexp(rn, phi_t) + x_t, jnp.logaddexp(rn, rb) + b_t)
    return new, new

  init = (jnp.full(tok.shape, NEG), jnp.full(tok.shape, NEG))
  _, (rn, rb) = jax.lax.scan(step, init, (phi.T, token_lp.T, blank_lp.T))
  return rn.T, rb.T


# ------------------------------------------------------------------ the search
@flax.struct.dataclass
class JointCarry:
  """Per hypothesis (R = B * beam rows): cand [R, M+1] its next-token candidates (the
  decoder's pre_beam likeliest, then EOS), cand_lp [R, M+1] their decoder log-probs
  (-inf: not a candidate), dec [R] / ctc [R] the hypothesis' decoder and CTC scores,
  r_n, r_b [R, T] its CTC forward variables, last [R] its last token (-1: empty)."""
  cand: jax.Array
  cand_lp: jax.Array
  dec: jax.Array
  ctc: jax.Array
  r_n: jax.Array
  r_b: jax.Array
  last: jax.Array


class Joint(engine.Strategy):
  """Beam search over `engine.LoopState` rows = hypotheses, ranked by the joint score."""

  def __init__(self, model, *, max_new_tokens: int, beam: int = 4, ctc_weight: float = 0.3,
               pre_beam: int = 8, length_bonus: float = 0.0):
    super().__init__(model, max_new_tokens=max_new_tokens)
    self.w, self.lam, self.beta = int(beam), float(ctc_weight), float(length_bonus)
    self.m = min(int(pre_beam), model.cfg.decoder.vocab_size)

  @property
  def max_iterations(self) -> int:
    return self.max_new_tokens + 1

  def _joint(self, dec, ctc, length):
    score = (1.0 - self.lam) * dec + self.beta * length.astype(jnp.float32)
    return score if self.lam == 0.0 else score + self.lam * ctc

  def _candidates(self, logits):
    """[R, V] next-token logits -> (cand [R, M+1], cand_lp [R, M+1]): the top pre_beam
    decoder tokens, then EOS unless it is among them."""
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    top_lp, top = jax.lax.top_k(lp, self.m)
    eos_in = jnp.any(top == common.EOS, axis=1)
    r = lp.shape[0]
    cand = jnp.concatenate([top.astype(jnp.int32), jnp.full((r, 1), common.EOS, jnp.int32)], 1)
    eos_lp = jnp.where(eos_in, NEG, lp[:, common.EOS])
    return cand, jnp.concatenate([top_lp, eos_lp[:, None]], axis=1)

  def __call__(self, params, audio, audio_len):
    """Decodes a batch: audio [B, S] float, audio_len [B] int (0 = padding row)."""
    model, f = self.model, common.model_fns(self.model, params)
    b, w, n = audio.shape[0], self.w, self.max_new_tokens
    frames, flen = model.apply(params, audio, audio_len, method="encode_frames")
    logits, clen = model.apply(params, frames, flen, method="ctc_cached")
    clen = jnp.where(audio_len > 0, clen, 0)
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ctc_lp = jnp.swapaxes(lp, 1, 2)                                       # [B, V, T]
    blank_lp = lp[..., 0]                                                  # [B, T]
    out0, cache = model.apply(params, frames, flen, common.bos(b),
                              common.max_text_len(n, 1), method="prefill_cached")
    r = b * w
    row_b = jnp.arange(r) // w
    first = (jnp.arange(r) % w == 0) & jnp.repeat(audio_len > 0, w)
    cand, cand_lp = self._candidates(out0["logits"][:, 0, 0])
    r_n, r_b = initial_forward(blank_lp)
    s = engine.LoopState(
        cache=cache.repeat_rows(w), text_index=jnp.ones((r,), jnp.int32),
        out=jnp.zeros((r, n + 2), jnp.int32), n_out=jnp.zeros((r,), jnp.int32),
        done=~first, calls=jnp.where(audio_len > 0, 1, 0).astype(jnp.int32),
        total=jnp.int32(1), accepted=jnp.zeros((r, self.num_heads), jnp.int32),
        carry=JointCarry(cand=jnp.repeat(cand, w, 0), cand_lp=jnp.repeat(cand_lp, w, 0),
                         dec=jnp.where(first, 0.0, NEG), ctc=jnp.zeros((r,)),
                         r_n=r_n[row_b], r_b=r_b[row_b], last=jnp.full((r,), -1, jnp.int32)))
    tables = (ctc_lp, blank_lp[row_b], clen[row_b], row_b)
    s = jax.lax.while_loop(
        lambda s: jnp.any(~s.done) & (s.total <= self.max_iterations),
        lambda s: self.body(f, s, tables), s)
    return self.finish(s)

  def body(self, f, s, tables):
    ctc_lp, blank_lp, clen, row_b = tables
    w, n = self.w, self.max_new_tokens
    c = s.carry
    r, m1 = c.cand.shape
    b = r // w
    live = ~s.done
    # Every candidate extension [R, M+1], scored.
    if self.lam == 0.0:
      tok_lp, e_ctc = None, jnp.zeros(c.cand.shape)
    else:
      tok_lp = ctc_lp[row_b[:, None], c.cand]                               # [R, M+1, T]
      e_ctc = prefix_scores(tok_lp, c.r_n, c.r_b, c.last, c.cand, clen)
    e_eos = c.cand == common.EOS
    e_dec = c.dec[:, None] + c.cand_lp
    e_len = s.n_out[:, None] + jnp.where(e_eos, 0, 1)
    e_key = jnp.where(live[:, None] & (c.cand_lp > NEG),
                      self._joint(e_dec, e_ctc, e_len), NEG)
    e_key = jnp.where(jnp.isnan(e_key), NEG, e_key)
    # Finished hypotheses compete as they are.
    c_key = jnp.where(s.done & (c.dec > NEG), self._joint(c.dec, c.ctc, s.n_out), NEG)
    pool = jnp.concatenate([c_key.reshape(b, w), e_key.reshape(b, w * m1)], axis=1)
    sel_key, sel = jax.lax.top_k(pool, w)                                  # [B, W]
    sel, sel_key = sel.reshape(r), sel_key.reshape(r)
    is_carry = sel < w
    e_idx = jnp.maximum(sel - w, 0)
    parent = row_b * w + jnp.where(is_carry, sel, e_idx // m1)
    j = e_idx % m1
    dead = sel_key == NEG
    x = c.cand[parent, j]
    x_eos = x == common.EOS
    grow = ~is_carry & ~dead & ~x_eos
    n_new = s.n_out[parent] + grow.astype(jnp.int32)
    done = is_carry | dead | x_eos | (n_new >= n)
    if self.lam == 0.0:
      r_n, r_b, ctc = c.r_n[parent], c.r_b[parent], jnp.zeros((r,))
    else:
      rn_x, rb_x = advance(tok_lp[parent, j], blank_lp, c.r_n[parent], c.r_b[parent],
                           c.last[parent], x)
      keep = ~grow[:, None]
      r_n = jnp.where(keep, c.r_n[parent], rn_x)
      r_b = jnp.where(keep, c.r_b[parent], rb_x)
      ctc = jnp.where(is_carry, c.ctc[parent], e_ctc[parent, j])
    dec = jnp.where(dead, NEG, jnp.where(is_carry, c.dec[parent], e_dec[parent, j]))
    text_index = s.text_index[parent] + grow.astype(jnp.int32)
    row_live = jnp.any((~done).reshape(b, w), axis=1)

    # One decoder call feeds x to every hypothesis that goes on (skipped when none does).
    def feed(cache):
      out, cache = f.step(x[:, None], s.text_index[parent], cache, num_heads=1)
      return (cache,) + self._candidates(out["logits"][:, 0, 0])

    def skip(cache):
      return cache, c.cand[parent], c.cand_lp[parent]

    cache, cand, cand_lp = jax.lax.cond(jnp.any(row_live), feed, skip,
                                        s.cache.gather_rows(parent))
    hyp = write_rows(s.out[parent], x[:, None], s.n_out[parent])
    return s.replace(
        cache=cache, text_index=text_index,
        out=jnp.where(grow[:, None], hyp, s.out[parent]), n_out=n_new, done=done,
        calls=s.calls + row_live.astype(jnp.int32), total=s.total + jnp.any(row_live),
        accepted=s.accepted[parent].at[:, 0].add(grow.astype(jnp.int32)),
        carry=JointCarry(cand=cand, cand_lp=cand_lp, dec=dec, ctc=ctc, r_n=r_n, r_b=r_b,
                         last=jnp.where(grow, x, c.last[parent])))

  def finish(self, s):
    c = s.carry
    key = jnp.where(c.dec > NEG, self._joint(c.dec, c.ctc, s.n_out), NEG)
    return nbest_result(s, jnp.where(jnp.isnan(key), NEG, key), c.dec, self.w, self.w,
                        self.max_new_tokens)


def make_joint(model, *, max_new_tokens: int, beam: int = 4, ctc_weight: float = 0.3,
               pre_beam: int = 8, length_bonus: float = 0.0) -> Joint:
  """`fn(params, audio, audio_len) -> dict` with the beam's hypotheses as "nbest"
  [B, beam, N], "nbest_lengths", "nbest_scores" (the joint score, sorted descending,
  -inf for missing entries) and "nbest_logprob" (the decoder's log-prob, EOS included).

  Args:
    model: a `SpeechLLaMA` with a CTC head.
    max_new_tokens: static cap on hypothesis length (EOS excluded).
    beam: hypotheses kept per utterance.
    ctc_weight: the CTC score's weight in [0, 1] (the decoder's is 1 - ctc_weight).
    pre_beam: decoder tokens proposed per hypothesis and step (EOS is always proposed).
    length_bonus: added per token (> 0 favours longer hypotheses).
  """
  return Joint(model, max_new_tokens=max_new_tokens, beam=beam, ctc_weight=ctc_weight,
               pre_beam=pre_beam, length_bonus=length_bonus)


registry.register(registry.StrategySpec(
    name="joint", build=make_joint, needs_ctc_head=True,
    options=(registry.BEAM,
             registry.Option("ctc_weight", 0.3, "CTC score's weight in [0, 1] "
                             "(--strategy=joint)", parse=registry.number("ctc_weight", 0, 1)),
             registry.Option("pre_beam", 8, "decoder tokens proposed per hypothesis and step "
                             "(--strategy=joint)", kind="int",
                             parse=registry.positive_int("pre_beam")),
             registry.Option("length_bonus", 0.0, "score added per token (--strategy=joint)",
                             parse=registry.number("length_bonus"))),
    help="beam search ranked by the decoder and the CTC head together (needs a CTC head)"))
