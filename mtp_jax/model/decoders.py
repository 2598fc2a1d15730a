"""The decoder registry: `model.decoder.type` -> stack module, final norm, position rule.

A new decoder family is one file (a flax module with `DecoderStack`'s call contract,
`mtp_jax/model/decoder.py`) plus one `register(...)` line here; the model, the KV cache,
training and every decoding strategy only see `DecoderSpec`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from mtp_jax.config import ConfigError, ModelConfig, register_family_check
from mtp_jax.model import decoder as llama
from mtp_jax.model import whisper_decoder
from mtp_jax.model.layers import TORCH_LN_EPS, RMSNorm, layer_norm


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
  """How one decoder family plugs into SpeechLLaMA.

  Attributes:
    stack: `(ModelConfig, deterministic=...) -> nn.Module` with `DecoderStack`'s contract.
    final_norm: `(ModelConfig, dtype, param_dtype) -> nn.Module`, applied before the heads.
    text_after_audio: True: text positions continue after the row's valid audio tokens
      (a causal prefix); False: they start at 0 (the audio is cross-attention memory).
    layer_params: ModelConfig -> exact parameters of one layer (`mtp_jax.flops`).
    token_matmul_params: ModelConfig -> the matmul weights one text token goes through
      in one layer (what a decode step's FLOPs count; e.g. not the cross-attention's
      key/value projections, which run once per audio token).
    extra_params: ModelConfig -> parameters besides layers, token embedding and norm.
    final_norm_params: ModelConfig -> parameters of the final norm.
    supports_reduction: prefill token reduction (`model.reduction`) works with it.
    validate: `(ModelConfig, prefix) -> None`, raises ConfigError naming a field.
  """
  stack: Callable
  final_norm: Callable
  text_after_audio: bool
  layer_params: Callable
  token_matmul_params: Callable
  final_norm_params: Callable
  extra_params: Callable = lambda cfg: 0
  supports_reduction: bool = True
  validate: Callable = lambda cfg, prefix: None


_REGISTRY: dict[str, DecoderSpec] = {}


def register(name: str, spec: DecoderSpec) -> None:
  _REGISTRY[name] = spec


def get(name: str) -> DecoderSpec:
  if name not in _REGISTRY:
    raise ConfigError(f"model.decoder.type={name!r}: unknown decoder, expected one of "
                      f"{sorted(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def _llama_layer_params(cfg: ModelConfig) -> int:
  c = cfg.decoder
  d, hd = c.d_model, c.head_dim
  attn = d * c.num_heads * hd * 2 + d * c.num_kv_heads * hd * 2
  return attn + 3 * d * c.ff_dim + 2 * d


def _validate_whisper(cfg: ModelConfig, p: str) -> None:
  c = cfg.decoder
  if c.num_kv_heads != c.num_heads:
    raise ConfigError(f"{p}.decoder.num_kv_heads={c.num_kv_heads}: Whisper's decoder has "
                      f"no grouped-query attention; set it to {p}.decoder.num_heads="
                      f"{c.num_heads}")
  if not c.tie_embeddings:
    raise ConfigError(f"{p}.decoder.tie_embeddings=False: Whisper's decoder ties its "
                      "vocabulary projection to the token embedding")
  if c.max_text_len > c.max_positions:
    raise ConfigError(f"{p}.decoder.max_text_len={c.max_text_len}: more than "
                      f"{p}.decoder.max_positions={c.max_positions} learned text positions")
  if cfg.reduction.method != "none":
    raise ConfigError(f"{p}.reduction.method={cfg.reduction.method!r}: prefill token "
                      f"reduction needs {p}.decoder.type='llama' (Whisper's decoder "
                      "cross-attends to the audio instead of running over it)")


register("llama", DecoderSpec(
    stack=llama.DecoderStack,
    final_norm=lambda cfg, dtype, pdtype: RMSNorm(cfg.decoder.norm_eps, dtype=dtype,
                                                  param_dtype=pdtype),
    text_after_audio=True, layer_params=_llama_layer_params,
    token_matmul_params=lambda cfg: _llama_layer_params(cfg) - 2 * cfg.decoder.d_model,
    final_norm_params=lambda cfg: cfg.decoder.d_model))
register("whisper", DecoderSpec(
    stack=whisper_decoder.WhisperDecoderStack,
    final_norm=lambda cfg, dtype, pdtype: layer_norm(dtype, pdtype, epsilon=TORCH_LN_EPS),
    text_after_audio=False, layer_params=whisper_decoder.layer_params,
    token_matmul_params=whisper_decoder.token_matmul_params,
    final_norm_params=lambda cfg: 2 * cfg.decoder.d_model,
    extra_params=lambda cfg: cfg.decoder.max_positions * cfg.decoder.d_model,
    supports_reduction=False, validate=_validate_whisper))


def _check_family(cfg: ModelConfig, p: str) -> None:
  """`model.decoder` by its family's own rules."""
  get(cfg.decoder.type).validate(cfg, p)


register_family_check(_check_family)
