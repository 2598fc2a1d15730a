"""N-best generation for MWER: the prefix beam search with blocks of up to K tokens.

The search runs the eval-mode model (no dropout, no SpecAugment) on parameters
under `jax.lax.stop_gradient`; it is a `lax.while_loop` and stays inside the
jitted train step. With a block size below the model's number of heads the search
sees the model through `SearchView`, which keeps only the first heads' logits (and
reads a feature cache's encoder frames when training uses one).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from mtp_jax.decode.beam import make_beam


class SearchView:
  """A `SpeechLLaMA` as the decoding loops see it (`cfg`, `apply`, and the `prefill` /
  `decode_step` / `unembedding_matrix` methods), with only its first `k` MTP heads
  (logits [B, T, K, V] cut to [B, T, k, V]) and, with `cached=True`, a prefill that
  reads encoder frames (a frozen encoder's feature cache) instead of audio."""

  def __init__(self, model, k: int, cached: bool = False):
    heads = model.cfg.mtp.num_heads
    if not 1 <= k <= heads:
      raise ValueError(f"mtp_jax/mwer/search.py: block size {k} must be in [1, {heads}] "
                       "(model.mtp.num_heads)")
    self.model = model
    self.cfg = dataclasses.replace(model.cfg, mtp=dataclasses.replace(model.cfg.mtp, num_heads=k))
    self.k = k
    self.prefill = model.prefill_cached if cached else model.prefill
    self.decode_step = model.decode_step
    self.unembedding_matrix = model.unembedding_matrix

  def apply(self, params, *args, method, **kwargs):
    out = self.model.apply(params, *args, method=method, **kwargs)
    if isinstance(out, tuple) and isinstance(out[0], dict) and "logits" in out[0]:
      head, rest = out[0], out[1:]
      return (dict(head, logits=head["logits"][:, :, :self.k]),) + rest
    return out


def search_model(model, block_size: int = 0, cached: bool = False):
  """The eval-mode model the search runs, restricted to `block_size` heads (0 = all),
  reading encoder frames instead of audio when `cached`."""
  eval_model = model.clone(train=False) if getattr(model, "train", False) else model
  heads = model.cfg.mtp.num_heads
  k = int(block_size) or heads
  return eval_model if k == heads and not cached else SearchView(eval_model, k, cached)


def make_nbest_search(model, *, beam: int, nbest: int, max_new_tokens: int,
                      block_size: int = 0, cached: bool = False) -> Callable:
  """`fn(params, audio, audio_len) -> dict` of N-best arrays, gradient-free
  (`fn(params, frames, frames_len)` with `cached`: encoder frames of a feature cache).

  Args:
    model: a SpeechLLaMA (train or eval mode; the search always runs in eval mode).
    beam: beam width W.
    nbest: hypotheses kept per utterance N (<= W).
    max_new_tokens: static hypothesis length cap (EOS excluded).
    block_size: tokens per prefix block K (<= the model's heads; 0 = all heads).
  Returns:
    fn whose dict holds "tokens" [B, N, max_new_tokens] int32 (PAD past the length),
    "lengths" [B, N] int32, "valid" [B, N] bool (False for missing entries and
    batch-padding rows), "scores" [B, N] length-normalized search scores (-inf
    where invalid), "calls" [B] decoder calls per utterance, "total_calls" [].
  """
  beam_fn = make_beam(search_model(model, block_size, cached), max_new_tokens=max_new_tokens,
                      beam=beam, nbest=nbest)

  def fn(params, audio, audio_len):
    res = beam_fn(jax.lax.stop_gradient(params), audio, audio_len)
    res = jax.lax.stop_gradient(res)
    valid = (res["nbest_scores"] > -jax.numpy.inf) & (audio_len > 0)[:, None]
    return {"tokens": res["nbest"], "lengths": res["nbest_lengths"], "valid": valid,
            "scores": res["nbest_scores"], "calls": res["calls"],
            "total_calls": res["total_calls"]}

  return fn
