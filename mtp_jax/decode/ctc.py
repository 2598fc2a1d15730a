"""Greedy CTC decoding of the auxiliary CTC head on the encoder or projector (no decoder calls).

A diagnostic and a baseline: it shows whether the encoder reads the audio, which a
Speech-LLM's decoder WER alone cannot (a decoder can ignore the audio and still
produce fluent text).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtp_jax.decode import registry
from mtp_jax.decode.common import PAD


def collapse(frame_ids: jax.Array, lengths: jax.Array, max_new_tokens: int):
  """Best-path CTC collapse: merge repeats, drop blanks (id 0), left-align.

  Args:
    frame_ids: [B, T] int32 argmax id per frame.
    lengths: [B] int32 valid frames.
    max_new_tokens: N, width of the output (longer outputs are cut).
  Returns:
    tokens [B, N] int32 (PAD past `lengths`), lengths [B] int32.
  """
  b, t = frame_ids.shape
  valid = jnp.arange(t)[None] < lengths[:, None]
  prev = jnp.pad(frame_ids, ((0, 0), (1, 0)), constant_values=PAD)[:, :-1]
  keep = valid & (frame_ids != PAD) & (frame_ids != prev)
  pos = jnp.cumsum(keep, axis=1) - 1
  pos = jnp.where(keep & (pos < max_new_tokens), pos, max_new_tokens)  # out of range: dropped
  out = jnp.full((b, max_new_tokens), PAD, jnp.int32)
  out = out.at[jnp.arange(b)[:, None], pos].set(frame_ids.astype(jnp.int32), mode="drop")
  n = jnp.minimum(jnp.sum(keep, axis=1), max_new_tokens).astype(jnp.int32)
  return out, n


def make_ctc(model, *, max_new_tokens: int):
  """`(params, audio, audio_len) -> dict` decoding with the encoder's CTC head only.

  The result has the DecodeResult fields; `calls`/`total_calls` are 0 (the decoder
  is never run) and `accepted` is zeros [B, K].
  """
  def run(params, audio, audio_len):
    logits, flen = model.apply(params, audio, audio_len, method="ctc")
    flen = jnp.where(audio_len > 0, flen, 0)
    tokens, lengths = collapse(jnp.argmax(logits, -1), flen, max_new_tokens)
    b, k = audio.shape[0], model.cfg.mtp.num_heads
    return dict(tokens=tokens, lengths=lengths, calls=jnp.zeros((b,), jnp.int32),
                total_calls=jnp.zeros((), jnp.int32), accepted=jnp.zeros((b, k), jnp.int32))

  return run


registry.register(registry.StrategySpec(
    name="ctc", build=make_ctc, decoder_calls=False, needs_ctc_head=True,
    help="greedy CTC on the encoder's/projector's CTC head (no decoder; a diagnostic)"))
