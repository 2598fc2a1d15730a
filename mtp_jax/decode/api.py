"""Python entry point to every decoding strategy (those in `mtp_jax.decode.registry`).

    from mtp_jax.decode.api import decode
    res = decode(model, params, audio, audio_len, strategy="verify", max_new_tokens=64)
    res.tokens  # [B, N] without BOS/EOS, PAD=0 past res.lengths

Strategy options are keywords (`threshold=0.9`, `beam=8`, `typical=(0.3, 0.09)`, ...):
`registry.all_options()` lists them; an option of another strategy is ignored, an
unknown one is an error. `make_decode_fn` returns the pure (un-jitted) function for
use inside other jitted code (e.g. MWER training needs beam N-best from a traced
function).
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.struct
import jax

from mtp_jax.decode import registry


def strategies() -> list[str]:
  """Registered strategy names."""
  return registry.names()


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


def _check(model, spec: registry.StrategySpec, max_new_tokens) -> int:
  if isinstance(max_new_tokens, bool) or int(max_new_tokens) != max_new_tokens \
      or int(max_new_tokens) < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be an integer >= 1")
  if not spec.reduction and model.cfg.reduction.method != "none":
    raise ValueError(f"strategy={spec.name!r} does not support prefill token reduction "
                     f"(model.reduction.method={model.cfg.reduction.method!r}); use one of "
                     f"{[n for n in registry.names() if registry.get(n).reduction]}")
  if spec.needs_ctc_head and not model.cfg.ctc_head:
    raise ValueError(f"strategy {spec.name!r} needs a model trained with a CTC head "
                     "(model.encoder.ctc_head or model.projector.ctc_head)")
  return int(max_new_tokens)


def _build(model, strategy: str, max_new_tokens: int, options: tuple) -> Callable:
  spec = registry.get(strategy)
  return spec.build(model, max_new_tokens=_check(model, spec, max_new_tokens),
                    **dict(options))


def make_decode_fn(model, *, strategy: str = "greedy", max_new_tokens: int,
                   **options) -> Callable:
  """The pure function `(params, audio, audio_len) -> dict` of one strategy."""
  return _build(model, strategy, max_new_tokens, registry.resolve_options(strategy, options))


@functools.lru_cache(maxsize=64)
def _jitted(model, strategy: str, max_new_tokens: int, options: tuple):
  return jax.jit(_build(model, strategy, max_new_tokens, options))


def decode(model, params, audio, audio_len, *, strategy: str = "greedy", max_new_tokens: int,
           **options) -> DecodeResult:
  """Decodes a batch with one jitted function per (model, strategy, static options).

  Args:
    model: a `SpeechLLaMA` (eval mode).
    params: its variables (boxed or unboxed).
    audio: [B, S] float32 16 kHz waveforms, zero-padded.
    audio_len: [B] int32 valid samples (0 = batch-padding row, decodes to nothing).
    strategy: a registered strategy (`strategies()`).
    max_new_tokens: cap on tokens per row (EOS excluded); static.
    **options: the strategy's options (see `registry`), e.g. threshold=0.8 for
      "threshold", beam=4 / nbest for "beam", typical=(eps, alpha) for "verify", top
      for "tree". The Pallas kernels are the model's switch, not an option:
      `model.clone(kernels=KernelsConfig(enabled=True))` (`mtp_jax.config`).
  Returns:
    DecodeResult.
  """
  opts = registry.resolve_options(strategy, options)
  return DecodeResult(**_jitted(model, strategy, max_new_tokens, opts)(params, audio, audio_len))
