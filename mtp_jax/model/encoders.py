"""The encoder registry: `model.encoder.type` -> module, feature frontend, length rule.

A new encoder is one file (its flax module, taking `(feats, feat_len, train)` and
returning `(frames [B, T, d], lengths [B])`) plus one `register(...)` line here; the
rest of the model (projector, decoder, heads), parameter/FLOPs accounting, training,
decoding and FastAdaSP only see `EncoderSpec`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

from mtp_jax.config import ConfigError, ModelConfig, register_family_check
from mtp_jax.model import frontend
from mtp_jax.model import encoder as conformer
from mtp_jax.model import whisper


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  """How one encoder family plugs into SpeechLLaMA.

  Attributes:
    module: `(EncoderConfig, dtype, param_dtype) -> nn.Module`.
    features: `(audio [B, S], audio_len [B], FrontendConfig) -> (feats [B, F, M], feat_len [B])`.
    num_frames: samples -> feature frames (ints and arrays), the frontend's rule.
    output_length: feature frames -> encoder frames (ints and arrays).
    num_params: ModelConfig -> exact parameter count (`mtp_jax.flops`).
    flops_per_second: ModelConfig -> matmul FLOPs per second of audio.
    validate: `(ModelConfig, prefix) -> None`, raises ConfigError naming a field.
    max_seconds: ModelConfig -> the longest audio the encoder takes (inf: no limit).
  """
  module: Callable
  features: Callable
  num_frames: Callable
  output_length: Callable
  num_params: Callable
  flops_per_second: Callable
  validate: Callable = lambda cfg, prefix: None
  max_seconds: Callable = lambda cfg: math.inf


_REGISTRY: dict[str, EncoderSpec] = {}


def register(name: str, spec: EncoderSpec) -> None:
  _REGISTRY[name] = spec


def get(name: str) -> EncoderSpec:
  if name not in _REGISTRY:
    raise ConfigError(f"model.encoder.type={name!r}: unknown encoder, expected one of "
                      f"{sorted(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def max_audio_seconds(cfg: ModelConfig) -> float:
  """The longest audio (seconds) the model's encoder takes; inf when unlimited."""
  return float(get(cfg.encoder.type).max_seconds(cfg))


def _whisper_max_seconds(cfg: ModelConfig) -> float:
  """Whisper's positional table: max_positions frames after its stride-2 conv."""
  fe = cfg.frontend
  return 2 * cfg.encoder.max_positions * fe.hop_length / fe.sample_rate


def encoder_frames(num_samples, cfg: ModelConfig):
  """Encoder output frames for `num_samples` samples (before the projector's stacking)."""
  spec = get(cfg.encoder.type)
  return spec.output_length(spec.num_frames(num_samples, cfg.frontend))


def _validate_conformer(cfg: ModelConfig, p: str) -> None:
  enc = cfg.encoder
  if (enc.d_model // max(enc.num_heads, 1)) % 2:
    raise ConfigError(f"{p}.encoder.d_model/num_heads={enc.d_model // enc.num_heads}: head "
                      "dim must be even for rotary positions")
  if enc.conv_kernel % 2 != 1:
    raise ConfigError(f"{p}.encoder.conv_kernel={enc.conv_kernel}: must be odd")
  if cfg.frontend.win_length > cfg.frontend.n_fft:
    raise ConfigError(f"{p}.frontend.n_fft={cfg.frontend.n_fft}: must be >= window length "
                      f"{cfg.frontend.win_length}")
  if cfg.frontend.num_mels % 4:
    raise ConfigError(f"{p}.frontend.num_mels={cfg.frontend.num_mels}: must be divisible by 4")


def _validate_whisper(cfg: ModelConfig, p: str) -> None:
  fe = cfg.frontend
  want = dict(sample_rate=16000, n_fft=400, win_length=400, hop_length=160)
  for field, value in want.items():
    if getattr(fe, field) != value:
      raise ConfigError(f"{p}.frontend.{field}={getattr(fe, field)}: Whisper's frontend "
                        f"needs {value} (frontend {want})")
  if fe.num_mels not in (80, 128):
    raise ConfigError(f"{p}.frontend.num_mels={fe.num_mels}: Whisper uses 80 (128 for "
                      "large-v3)")
  if cfg.encoder.max_positions < 1:
    raise ConfigError(f"{p}.encoder.max_positions={cfg.encoder.max_positions}: must be >= 1")


register("conformer", EncoderSpec(
    module=conformer.ConformerEncoder, features=frontend.log_mel,
    num_frames=frontend.num_frames, output_length=conformer.output_length,
    num_params=conformer.num_params, flops_per_second=conformer.flops_per_second,
    validate=_validate_conformer))
register("whisper", EncoderSpec(
    module=whisper.WhisperEncoder, features=frontend.whisper_log_mel,
    num_frames=frontend.whisper_num_frames, output_length=whisper.output_length,
    num_params=whisper.num_params, flops_per_second=whisper.flops_per_second,
    validate=_validate_whisper, max_seconds=_whisper_max_seconds))


def _check_family(cfg: ModelConfig, p: str) -> None:
  """`model.encoder` by its family's own rules (and the frontend it needs)."""
  get(cfg.encoder.type).validate(cfg, p)


register_family_check(_check_family)
