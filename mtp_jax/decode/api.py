"""Python entry point to every decoding strategy.

    from mtp_jax.decode.api import decode
    res = decode(model, params, audio, audio_len, strategy="verify", max_new_tokens=64)
    res.tokens  # [B, N] without BOS/EOS, PAD=0 past res.lengths

`make_decode_fn` returns the pure (un-jitted) function for use inside other jitted
code (e.g. MWER training needs beam N-best from a traced function).
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.struct
import jax

from mtp_jax.decode.beam import make_beam
from mtp_jax.decode.greedy import make_greedy
from mtp_jax.decode.threshold import make_threshold
from mtp_jax.decode.verify import make_verify

STRATEGIES = ("greedy", "threshold", "verify", "tree", "beam", "ctc")


@flax.struct.dataclass
class DecodeResult:
  """Decoding output (a pytree of jax arrays; B rows, N = max_new_tokens).

  Attributes:
    tokens: [B, N] int32 best hypothesis without BOS/EOS, PAD (0) past `lengths`.
    lengths: [B] int32 tokens per row.
    calls: [B] int32 decoder calls per row (prefill included; 0 for empty rows).
    total_calls: [] int32 decoder calls for the whole batch (loop iterations + 1).
    accepted: [B, K] int32 emitted tokens credited to each head (head 1: its own
      tokens or corrections; head k >= 2: accepted drafts / threshold tokens).
    nbest, nbest_lengths, nbest_scores, nbest_logprob: beam only: [B, nbest, N],
      [B, nbest], length-normalized and total head-1 log-probs [B, nbest]
      (sorted by normalized score, distinct, -inf for missing entries).
  """
  tokens: jax.Array
  lengths: jax.Array
  calls: jax.Array
  total_calls: jax.Array
  accepted: jax.Array
  nbest: jax.Array | None = None
  nbest_lengths: jax.Array | None = None
  nbest_scores: jax.Array | None = None
  nbest_logprob: jax.Array | None = None


def make_decode_fn(model, *, strategy: str = "greedy", max_new_tokens: int,
                   threshold: float = 0.8, beam: int = 4, nbest: int | None = None,
                   typical: tuple[float, float] | None = None, use_kernels: bool = False
                   ) -> Callable:
  """The pure function `(params, audio, audio_len) -> dict` of one strategy."""
  if strategy == "greedy":
    return make_greedy(model, max_new_tokens=max_new_tokens)
  if strategy == "threshold":
    return make_threshold(model, max_new_tokens=max_new_tokens, threshold=threshold)
  if strategy == "verify":
    return make_verify(model, max_new_tokens=max_new_tokens, typical=typical,
                       use_kernels=use_kernels)
  if strategy == "tree":
    from mtp_jax.decode.tree import make_tree  # pylint: disable=g-import-not-at-top
    return make_tree(model, max_new_tokens=max_new_tokens)
  if strategy == "beam":
    return make_beam(model, max_new_tokens=max_new_tokens, beam=beam, nbest=nbest)
  if strategy == "ctc":
    from mtp_jax.decode.ctc import make_ctc  # pylint: disable=g-import-not-at-top
    return make_ctc(model, max_new_tokens=max_new_tokens)
  raise ValueError(f"mtp_jax/decode/api.py: strategy={strategy!r}: expected one of {STRATEGIES}")


@functools.lru_cache(maxsize=64)
def _jitted(model, strategy, max_new_tokens, threshold, beam, nbest, typical, use_kernels):
  return jax.jit(make_decode_fn(model, strategy=strategy, max_new_tokens=max_new_tokens,
                                threshold=threshold, beam=beam, nbest=nbest, typical=typical,
                                use_kernels=use_kernels))


def decode(model, params, audio, audio_len, *, strategy: str = "greedy", max_new_tokens: int,
           threshold: float = 0.8, beam: int = 4, nbest: int | None = None,
           typical: tuple[float, float] | None = None,
           use_kernels: bool = False) -> DecodeResult:
  """Decodes a batch with one jitted function per (model, strategy, static args).

  Args:
    model: a `SpeechLLaMA` (eval mode).
    params: its variables (boxed or unboxed).
    audio: [B, S] float32 16 kHz waveforms, zero-padded.
    audio_len: [B] int32 valid samples (0 = batch-padding row, decodes to nothing).
    strategy: one of STRATEGIES.
    max_new_tokens: cap on tokens per row (EOS excluded); static.
    threshold: tau for "threshold".
    beam: beam width for "beam".
    nbest: hypotheses returned by "beam" (default `beam`).
    typical: (eps, alpha) for typical acceptance in "verify" (default exact).
    use_kernels: "verify" uses `pallas_kernels.dispatch.fused_verify`.
  Returns:
    DecodeResult.
  """
  if typical is not None:
    typical = (float(typical[0]), float(typical[1]))
  fn = _jitted(model, strategy, int(max_new_tokens), float(threshold), int(beam),
               None if nbest is None else int(nbest), typical, bool(use_kernels))
  return DecodeResult(**fn(params, audio, audio_len))
