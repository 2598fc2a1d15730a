"""Speech-LLaMA: features -> speech encoder -> frame stacking projector -> LLaMA decoder -> K heads.

The encoder family (`model.encoder.type`: a Conformer trained from scratch, or a
pretrained Whisper encoder) and its feature frontend come from `mtp_jax.model.encoders`.

The decoder input is `[audio tokens][BOS transcript]`, causal over all of it. Audio
rows are padded to a common length P; padded audio tokens are masked as keys and
the transcript's rotary positions start right after each row's valid audio, so a
row's output does not depend on how much padding it carries.

Entry points (all via `model.apply(params, ..., method=...)`):
  * `__call__`: teacher-forced forward over audio + transcript (training).
  * `encode`: audio -> audio-token embeddings and their mask; `forward_text` runs the
    teacher-forced decoder over given audio tokens (encode once, score many);
    `forward_frames` starts from encoder frames (a frozen encoder's feature cache);
    `forward_lm` runs the decoder over text alone (language-model pretraining).
  * `prefill` / `decode_step`: incremental decoding over a preallocated KV cache.
  * `heads`: K-head logits from final-normed hidden states.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtp_jax.config import KernelsConfig, ModelConfig, projector_block_config
from mtp_jax.model import decoders
from mtp_jax.model import encoders
from mtp_jax.model import frontend
from mtp_jax.model import reduction_ops
from mtp_jax.model import reduction_plan
from mtp_jax.model.encoder import ConformerBlock
from mtp_jax.model.heads import MTPHeads, Unembed
from mtp_jax.model.kv_cache import KVCache, causal_mask
from mtp_jax.model.layers import ACT, constrain, dense, dtype_of


def audio_token_count(num_samples, cfg: ModelConfig):
  """Decoder prefix length for `num_samples` samples: the audio tokens plus the text
  prompt (`model.prompt_ids`) that follows them."""
  t = encoders.encoder_frames(num_samples, cfg)
  s = cfg.projector.stack
  return compressed_width((t + s - 1) // s, cfg) + len(cfg.prompt_ids)


def compressed_width(p: int, cfg: ModelConfig) -> int:
  """Positions left of `p` audio tokens by `projector.ctc_compress_width`."""
  proj = cfg.projector
  if not proj.ctc_compress or proj.ctc_compress_width >= 1:
    return p
  return max(1, math.ceil(p * proj.ctc_compress_width))


class Projector(nn.Module):
  """Stacks `stack` consecutive encoder frames and maps them into the decoder width:
  fc1, GELU, (`projector.layers` Conformer blocks as a residual branch whose output
  layer starts at zero: a fresh branch leaves a trained MLP's output as it was), fc2."""
  cfg: ModelConfig
  train: bool = False

  @nn.compact
  def __call__(self, x, length):
    """x [B, T, d_enc], length [B] -> ([B, ceil(T/s), d_dec], [B])."""
    mc = self.cfg
    s = mc.projector.stack
    b, t, d = x.shape
    pad = (-t) % s
    x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
    x = x.reshape(b, (t + pad) // s, s * d)
    length = (length + s - 1) // s
    valid = jnp.arange(x.shape[1])[None, :] < length[:, None]
    hidden = mc.projector.hidden or mc.decoder.d_model
    dtype, pdtype = dtype_of(mc.dtype), dtype_of(mc.param_dtype)
    kw = dict(dtype=dtype, param_dtype=pdtype, use_bias=True)
    x = dense(hidden, ("conv_in", "mlp"), name="fc1", **kw)(x)
    x = nn.gelu(x)
    if mc.projector.layers:  # a residual branch whose output layer starts at zero
      y = x = jnp.where(valid[..., None], x, 0.0)
      bc = projector_block_config(mc)
      for i in range(bc.num_layers):
        y = ConformerBlock(bc, dtype, pdtype, name=f"block{i}")(y, valid, self.train)
      x = x + dense(hidden, ("embed", "mlp"), name="blocks_out", kernel_init=nn.initializers.zeros,
                    **kw)(y)
    x = dense(mc.decoder.d_model, ("mlp", "embed"), name="fc2", **kw)(x)
    if mc.projector.out_rms > 0:  # to the size of the decoder's token embeddings
      scale = self.param("out_scale", nn.with_logical_partitioning(
          nn.initializers.constant(mc.projector.out_rms), ("norm",)),
          (mc.decoder.d_model,), pdtype)
      xf = x.astype(jnp.float32)
      xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + 1e-6)
      x = (xf * scale.astype(jnp.float32)).astype(x.dtype)
    return jnp.where(valid[..., None], x, 0.0), length


CTC_TIED_SCALE = 3.0  # initial temperature of a tied CTC classifier (projector.ctc_tied)


class SpeechLLaMA(nn.Module):
  """The full model. `train=True` enables dropout and SpecAugment (rng 'dropout', 'specaug');
  `kernels` (`config.kernels`) switches the Pallas kernels on for the prefill's token
  merging and for verification decoding (`mtp_jax.decode.verify`)."""
  cfg: ModelConfig
  train: bool = False
  kernels: KernelsConfig = KernelsConfig()

  def setup(self):
    mc = self.cfg
    dtype, pdtype = dtype_of(mc.dtype), dtype_of(mc.param_dtype)
    self.encoder = encoders.get(mc.encoder.type).module(mc.encoder, dtype, pdtype)
    self.projector = Projector(mc, self.train) if mc.projector.type == "mlp" else None
    d = mc.decoder.d_model
    self.embed = nn.Embed(
        mc.decoder.vocab_size, d, dtype=dtype, param_dtype=pdtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(stddev=d ** -0.5), ("vocab", "embed")))
    spec = decoders.get(mc.decoder.type)
    self.decoder = spec.stack(mc, deterministic=not self.train)
    self.final_norm = spec.final_norm(mc, dtype, pdtype)
    self.text_after_audio = spec.text_after_audio
    self.unembed = Unembed(mc, self.embed)
    self.mtp = MTPHeads(mc, self.embed, self.unembed)
    if mc.ctc_head and mc.projector.ctc_tied:  # the token embedding is the classifier
      # A temperature that lets an audio token on its text token's embedding stand out:
      # with out_rms r an embedding's squared norm is ~d r^2 (~10 for SmolLM2), too small
      # a margin over 49k other tokens at temperature 1.
      self.ctc_scale = self.param("ctc_scale", nn.with_logical_partitioning(
          nn.initializers.constant(CTC_TIED_SCALE), ()), (), pdtype)
      self.ctc_bias = self.param("ctc_bias", nn.with_logical_partitioning(
          nn.initializers.zeros, ("vocab",)), (mc.decoder.vocab_size,), pdtype)
    elif mc.ctc_head:
      self.ctc_head = dense(mc.decoder.vocab_size, ("embed", "vocab"), dtype=dtype,
                            param_dtype=pdtype, use_bias=True)

  # ---------------------------------------------------------------- audio
  def encode(self, audio, audio_len):
    """Audio -> decoder-width audio tokens.

    Args:
      audio: [B, S] waveform (16 kHz), zero-padded.
      audio_len: [B] valid samples.
    Returns:
      emb: [B, P, d] audio-token embeddings (zero where invalid).
      valid: [B, P] bool.
      length: [B] int32 valid audio tokens.
    """
    return self._project(*self.encode_frames(audio, audio_len))

  def encode_frames(self, audio, audio_len):
    """Audio -> encoder frames before stacking: ([B, T, d_enc], [B] int32 lengths)."""
    mc = self.cfg
    spec = encoders.get(mc.encoder.type)
    if mc.encoder.pad_to_window:  # OpenAI's behaviour: every input is a 30-s window
      window = 2 * mc.encoder.max_positions * mc.frontend.hop_length
      if audio.shape[1] > window:
        raise ValueError(f"audio of {audio.shape[1]} samples is longer than the encoder's "
                         f"{window}-sample window")
      audio = jnp.pad(audio, ((0, 0), (0, window - audio.shape[1])))
      audio_len = jnp.where(audio_len > 0, window, 0)
    feats, feat_len = spec.features(audio, audio_len, mc.frontend)
    if self.train:
      feats = frontend.spec_augment(self.make_rng("specaug"), feats, feat_len, mc.frontend)
    x, length = self.encoder(feats.astype(dtype_of(mc.dtype)), feat_len, self.train)
    return x, length.astype(jnp.int32)

  def _project(self, x, length):
    """Encoder frames -> the decoder prefix: audio tokens, then the prompt (if any)."""
    return self._with_prompt(*self._compress(*self._project_audio(x, length)))

  def _compress(self, emb, valid, length):
    """projector.ctc_compress: keeps the audio tokens whose CTC argmax is a token (not
    blank, not the previous frame's token), moved to the front in time order (with
    ctc_hard: that token's embedding, straight-through; ctc_mix: its likeliest tokens'
    embeddings, weighted by their probabilities):
    [B, P, d] -> [B, P', d] with fewer valid positions (the rest zero), P' =
    `compressed_width(P)`. Identity otherwise."""
    if not self.cfg.projector.ctc_compress:
      return emb, valid, length
    logits = self.ctc_logits(emb)                                         # [B, P, V]
    ids = jnp.argmax(logits, axis=-1)                                     # [B, P]
    prev = jnp.pad(ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    keep = valid & (ids != 0) & (ids != prev)
    order = jnp.argsort(~keep, axis=1, stable=True)                       # kept first
    order = order[:, :compressed_width(emb.shape[1], self.cfg)]           # [B, P']
    out = jnp.take_along_axis(emb, order[..., None], axis=1)
    if self.cfg.projector.ctc_hard:  # forward: the token's embedding; backward: identity
      tok = self.embed(jnp.take_along_axis(ids, order, axis=1)).astype(out.dtype)
      out = out + jax.lax.stop_gradient(tok - out)
    elif k := self.cfg.projector.ctc_mix:  # the k likeliest tokens' embeddings, weighted
      kept = jnp.take_along_axis(logits, order[..., None], axis=1)        # [B, P', V]
      top, top_ids = jax.lax.top_k(kept[..., 1:], k)                      # [B, P', k]
      w = jax.nn.softmax(top, axis=-1)
      tok = self.embed(top_ids + 1).astype(jnp.float32)                    # [B, P', k, d]
      out = jnp.einsum("bpk,bpkd->bpd", w, tok).astype(out.dtype)
    length = jnp.minimum(jnp.sum(keep, axis=1), order.shape[1]).astype(jnp.int32)
    valid = jnp.arange(order.shape[1])[None, :] < length[:, None]
    return jnp.where(valid[..., None], out, 0).astype(emb.dtype), valid, length

  def _project_audio(self, x, length):
    emb, length = (x, length) if self.projector is None else self.projector(x, length)
    valid = jnp.arange(emb.shape[1])[None, :] < length[:, None]
    return constrain(emb, ACT), valid, length.astype(jnp.int32)

  def _with_prompt(self, emb, valid, length):
    """Appends the prompt's token embeddings right after each row's valid audio tokens:
    [B, P, d] -> [B, P + n, d] (valid and length grow by n; padding stays at the end)."""
    ids = self.cfg.prompt_ids
    if not ids:
      return emb, valid, length
    b, p, d = emb.shape
    n = len(ids)
    prompt = self.embed(jnp.asarray(ids, jnp.int32)).astype(emb.dtype)  # [n, d]
    out = jnp.concatenate([emb, jnp.zeros((b, n, d), emb.dtype)], axis=1)
    slots = length[:, None] + jnp.arange(n)[None, :]                     # [B, n]
    out = out.at[jnp.arange(b)[:, None], slots].set(jnp.broadcast_to(prompt, (b, n, d)))
    length = length + n
    valid = jnp.arange(p + n)[None, :] < length[:, None]
    return constrain(out, ACT), valid, length.astype(jnp.int32)

  def ctc_logits(self, frames, units=None):
    """[B, T, d] encoder frames (encoder.ctc_head) or audio tokens (projector.ctc_head)
    -> [B, T, V] float32 CTC logits (blank = id 0); with `units` ([U] ascending ids, 0
    first; a tied head only) the logits of those ids alone, [B, T, U]: what training
    needs when the tokenizer can produce no other id, at U/V of the cost."""
    if not self.cfg.ctc_head:
      raise ValueError("ctc_logits needs a model built with model.encoder.ctc_head=True "
                       "or model.projector.ctc_head=True")
    if self.cfg.projector.ctc_tied:
      if units is None:
        logits, bias = self.embed.attend(frames), self.ctc_bias
      else:
        table = jnp.take(self.embed.embedding, units, axis=0).astype(frames.dtype)
        logits, bias = jnp.einsum("btd,ud->btu", frames, table), jnp.take(self.ctc_bias, units)
      return (logits.astype(jnp.float32) * self.ctc_scale.astype(jnp.float32)
              + bias.astype(jnp.float32))
    if units is not None:
      raise ValueError("ctc_logits(units=...) needs model.projector.ctc_tied=True")
    return self.ctc_head(frames).astype(jnp.float32)

  def ctc(self, audio, audio_len, units=None):
    """Audio -> (CTC logits [B, T, V] (or [B, T, U], see `ctc_logits`), valid lengths
    [B]) from the model's CTC head."""
    return self._ctc_of_frames(*self.encode_frames(audio, audio_len), units)

  def ctc_cached(self, frames, frames_len, units=None):
    """`ctc` from encoder frames (a frozen encoder's feature cache; train mode masks them
    as `forward_frames`): (CTC logits [B, T, V] (or [B, T, U], see `ctc_logits`), valid
    lengths [B]). No decoder call."""
    return self._ctc_of_frames(*self._cached_frames(frames, frames_len), units)

  def _ctc_of_frames(self, frames, flen, units=None):
    if self.cfg.ctc_head == "projector":
      frames, _, flen = self._project_audio(frames, flen)
    return self.ctc_logits(frames, units), flen

  # ---------------------------------------------------------------- heads
  def heads(self, hn, prev_tokens=None, num_heads: int | None = None):
    """[B, T, d] final-normed hidden -> [B, T, K, V] float32 logits (see MTPHeads);
    with `num_heads` = n only heads 1..n ([B, T, n, V])."""
    return self.mtp(hn, prev_tokens, num_heads)

  def draft_logits(self, hn, vocab: int):
    """[B, T, d] final-normed hidden -> heads 2..K's logits over the token ids < vocab,
    [B, T, K-1, vocab] (see `MTPHeads.draft_logits`)."""
    return self.mtp.draft_logits(hn, vocab)

  def unembedding_matrix(self):
    """Head 1's vocabulary projection as [d, V] (for the fused verification kernel)."""
    return self.unembed.matrix()

  # ---------------------------------------------------------------- training forward
  def __call__(self, audio, audio_len, text_in, prev_tokens=None):
    """Teacher-forced forward.

    Args:
      audio: [B, S] waveform; audio_len: [B] valid samples.
      text_in: [B, L] int32 decoder text input `[BOS, y_1, ..., y_{L-1}]` (padded).
      prev_tokens: [B, L, K-1] teacher-forcing tokens for sequential heads (else None).
    Returns:
      dict with "logits" [B, L, K, V] (float32) for the text positions, "hidden"
      [B, L, d] final-normed hidden states, "audio_len" [B] audio tokens per row;
      with a CTC head also "ctc_logits" [B, T, V] (float32) over the encoder frames
      (encoder.ctc_head) or the audio tokens (projector.ctc_head), and "ctc_len" [B].
    """
    return self._forward_encoded(*self.encode_frames(audio, audio_len), text_in, prev_tokens)

  def forward_frames(self, frames, frames_len, text_in, prev_tokens=None):
    """Teacher-forced forward from encoder frames (a frozen encoder's feature cache).

    Args:
      frames: [B, T, d_enc] encoder outputs (any float dtype); frames_len: [B].
      text_in, prev_tokens: as in `__call__`.
    In train mode SpecAugment-style masks (`model.frontend` mask fields) apply to the
    frames: time masks and channel masks instead of mel-bin masks.
    Returns:
      The same dict as `__call__`.
    """
    return self._forward_encoded(*self._cached_frames(frames, frames_len), text_in,
                                 prev_tokens)

  def encode_cached(self, frames, frames_len):
    """`encode` from encoder frames (a frozen encoder's feature cache): the audio tokens
    [B, P, d], valid [B, P], lengths [B]. Train mode masks the frames as `forward_frames`."""
    return self._project(*self._cached_frames(frames, frames_len))

  def _cached_frames(self, frames, frames_len):
    mc = self.cfg
    frames = frames.astype(dtype_of(mc.dtype))
    frames_len = frames_len.astype(jnp.int32)
    if self.train:
      frames = frontend.spec_augment(self.make_rng("specaug"), frames, frames_len,
                                     mc.frontend).astype(frames.dtype)
    return frames, frames_len

  def _forward_encoded(self, frames, flen, text_in, prev_tokens):
    audio, audio_valid, audio_len = self._project_audio(frames, flen)
    out = self.forward_text(*self._with_prompt(*self._compress(audio, audio_valid, audio_len)),
                            text_in,
                            prev_tokens)
    if self.cfg.ctc_head == "encoder":
      out = dict(out, ctc_logits=self.ctc_logits(frames), ctc_len=flen)
    elif self.cfg.ctc_head == "projector":
      out = dict(out, ctc_logits=self.ctc_logits(audio), ctc_len=audio_len)
    return out

  def forward_text(self, emb, valid, alen, text_in, prev_tokens=None):
    """Teacher-forced decoder pass over precomputed audio tokens (see `encode`).

    Lets callers encode once and score many transcripts (e.g. an N-best for MWER).

    Args:
      emb: [B, P, d] audio tokens; valid: [B, P]; alen: [B] valid audio tokens.
      text_in: [B, L]; prev_tokens: as in `__call__`.
    Returns:
      The same dict as `__call__`.
    """
    b, p, _ = emb.shape
    l = text_in.shape[1]
    x = jnp.concatenate([emb, self.embed(text_in).astype(emb.dtype)], axis=1)
    pos = self._positions(b, p, alen, l)
    mask = causal_mask(jnp.concatenate([valid, jnp.ones((b, l), bool)], axis=1))
    h, _ = self.decoder(x, pos, mask, num_audio=p)
    hn = self.final_norm(h[:, p:])
    return {"logits": self.heads(hn, prev_tokens), "hidden": hn, "audio_len": alen}

  def forward_lm(self, text_in, prev_tokens=None):
    """Teacher-forced decoder pass over text alone, no audio prefix (decoder LM
    pretraining, `data.text_corpus`); rotary positions start at 0, as after an empty
    audio prefix.

    Args:
      text_in, prev_tokens: as in `__call__`.
    Returns:
      "logits" [B, L, K, V] and "hidden" [B, L, d] as in `__call__`; "audio_len" [B] zeros.
    """
    b = text_in.shape[0]
    emb = jnp.zeros((b, 0, self.cfg.decoder.d_model), dtype_of(self.cfg.dtype))
    return self.forward_text(emb, jnp.zeros((b, 0), bool), jnp.zeros((b,), jnp.int32),
                             text_in, prev_tokens)

  def _positions(self, b: int, p: int, alen, l: int):
    """[B, P + L] positions of `[audio][text]`: audio 0..P-1; the text's continue after
    the row's valid audio (llama) or start at 0 (a cross-attending decoder)."""
    start = alen[:, None] if self.text_after_audio else jnp.zeros((b, 1), jnp.int32)
    return jnp.concatenate([jnp.broadcast_to(jnp.arange(p)[None], (b, p)),
                            start + jnp.arange(l)[None]], axis=1)

  # ---------------------------------------------------------------- incremental decoding
  def init_cache(self, batch: int, prefix_len: int, max_text_len: int) -> KVCache:
    """Zeros for a cache of S = prefix_len + max_text_len slots."""
    c = self.cfg.decoder
    return KVCache.zeros(num_layers=c.num_layers, batch=batch, prefix_len=prefix_len,
                         max_text_len=max_text_len, num_kv_heads=c.num_kv_heads,
                         head_dim=c.head_dim, dtype=dtype_of(self.cfg.dtype))

  def prefill(self, audio, audio_len, text_in, max_text_len: int):
    """Encodes audio and runs the decoder over `[audio][text_in]`, filling a fresh cache.

    Args:
      audio: [B, S]; audio_len: [B].
      text_in: [B, T0] first text tokens (usually just BOS), all rows the same length.
      max_text_len: text slots to preallocate (>= T0 + tokens to generate + drafts).
    Returns:
      (out, cache): out has "logits" [B, T0, K, V] and "hidden" [B, T0, d] for the text
      positions; the cache holds P + T0 filled slots (text_index = T0 next).
      With `cfg.reduction` active (mtp_jax/model/reduction_ops.py) the audio tokens are
      reduced inside the decoder layers and `cache.prefix_valid` is [L, B, P].
    """
    emb, valid, alen = self.encode(audio, audio_len)
    return self.prefill_from_embeddings(emb, valid, alen, text_in, max_text_len)

  def prefill_cached(self, frames, frames_len, text_in, max_text_len: int):
    """`prefill` from encoder frames [B, T, d_enc] (a feature cache), frames_len [B]."""
    emb, valid, alen = self.encode_cached(frames, frames_len)
    return self.prefill_from_embeddings(emb, valid, alen, text_in, max_text_len)

  def prefill_from_embeddings(self, emb, valid, alen, text_in, max_text_len: int):
    """`prefill` over precomputed audio tokens (see `encode`); same outputs.

    Args:
      emb: [B, P, d] audio tokens; valid: [B, P]; alen: [B] valid audio tokens.
      text_in: [B, T0]; max_text_len: as in `prefill`.
    """
    b, p, _ = emb.shape
    t0 = text_in.shape[1]
    cache = self.init_cache(b, p, max_text_len)
    x = jnp.concatenate([emb, self.embed(text_in).astype(emb.dtype)], axis=1)
    pos = self._positions(b, p, alen, t0)
    mask = causal_mask(jnp.concatenate([valid, jnp.ones((b, t0), bool)], axis=1))
    layers = cache.layers
    plan = reduction_plan.make_plan(self.cfg, p, t0)
    if plan is not None:
      r = self.cfg.reduction
      reducer = reduction_ops.Reducer(r.method, plan, p, r.seed,
                                      use_kernel=self.kernels.enabled)
      h, layers, valid = self.decoder(x, pos, mask, layers, jnp.zeros((b,), jnp.int32),
                                      attend_cache=False, reduction=(reducer, valid, alen))
      hn = self.final_norm(h)
    else:
      h, layers = self.decoder(x, pos, mask, layers, jnp.zeros((b,), jnp.int32),
                               attend_cache=False, num_audio=p)
      hn = self.final_norm(h[:, p:])
    cache = cache.with_layers(layers).replace(prefix_valid=valid, prefix_len=alen)
    return {"logits": self.heads(hn), "hidden": hn}, cache

  def decode_step(self, tokens, text_index, cache: KVCache, prev_tokens=None,
                  num_heads: int | None = None, tree=None, draft_vocab: int = 0):
    """Feeds T new text tokens per row at per-row offsets and attends over the cache.

    Args:
      tokens: [B, T] int32 new tokens (T >= 1; verification feeds K at once).
      text_index: [B] int32 number of text tokens already in row b's cache; the new
        tokens go to slots P + text_index[b] + i.
      cache: from `prefill` or a previous `decode_step`.
      prev_tokens: optional teacher-forcing tokens for sequential heads.
      num_heads: heads whose logits are computed (static; default all K, 0 = none:
        `out` then has only "hidden").
      tree: None (the T tokens are a causal block), or (depth [T] int, ancestors
        [T, T] bool) for a tree of drafts: token q's rotary position is
        text_index + depth[q] and it sees its ancestors in the block (tree verification).
      draft_vocab: > 0 (static): also heads 2..K over the token ids < draft_vocab,
        out["draft_logits"] [B, T, K-1, draft_vocab] (`MTPHeads.draft_logits`).
    Returns:
      (out, cache) with out "logits" [B, T, num_heads, V] (absent for num_heads=0) and
      "hidden" [B, T, d].
      Slots past the last token fed are left stale and are never attended: row b's
      query at slot j only sees text slots <= j.
    """
    t = tokens.shape[1]
    offsets, ancestors = (jnp.arange(t), None) if tree is None else tree
    pos = cache.text_positions(text_index, offsets)
    if not self.text_after_audio:
      pos = pos - cache.prefix_len[:, None]
    mask = cache.decode_mask(text_index, t, ancestors)  # [(L,) B, T, S]
    x = self.embed(tokens).astype(dtype_of(self.cfg.dtype))
    h, layers = self.decoder(x, pos, mask, cache.layers, cache.text_slot(text_index),
                             num_audio=cache.num_audio)
    hn = self.final_norm(h)
    cache = cache.with_layers(layers)
    out = {"hidden": hn}
    if num_heads != 0:
      out["logits"] = self.heads(hn, prev_tokens, num_heads)
    if draft_vocab:
      out["draft_logits"] = self.draft_logits(hn, draft_vocab)
    return out, cache
