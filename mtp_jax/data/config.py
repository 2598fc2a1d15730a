"""The data-pipeline configuration (the `config.data` section): typed, validated.

`data_defaults()` is the ConfigDict users edit; `DataConfig.from_config(config.data)`
checks it (unknown fields, types, ranges) with errors naming the field, like
`mtp_jax.config.ModelConfig`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from mtp_jax.config import (ConfigError, build, require_at_least, require_one_of,
                            require_positive)

POLICIES = ("skip", "error")          # bad_input_policy
BATCHING = ("random", "1d", "2d")
TOKENIZER_TYPES = ("unigram", "bpe")


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """The run's SentencePiece tokenizer."""
  model_type: str = "unigram"  # unigram | bpe
  vocab_size: int = 256        # requested size (a small corpus may give fewer ids)
  path: str = ""               # existing .model file; empty = train one into the workdir
  # A pretrained LM's tokenizer (path) with only its first N BPE merges; 0 = all of them.
  merges: int = 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Manifests, limits, bucketing and reading (see `mtp_jax.data.pipeline`)."""
  train_manifests: str = ""          # comma-separated JSONL manifests
  dev_manifest: str = ""
  sample_rate: int = 16000           # must equal model.frontend.sample_rate
  max_duration: float = 20.0         # seconds; longer utterances follow bad_input_policy
  min_duration: float = 0.1
  # Longer transcripts follow bad_input_policy; padded L <= round_up(127 + text_pad_extra, 8) = 128.
  max_text_tokens: int = 127
  numbers_to_words: bool = False     # text.normalize option for targets (and WER)
  batching: str = "2d"               # random | 1d | 2d
  batch_size: int = 16               # for random batching
  num_duration_bins: int = 16        # duration bins (at most; <= 32 shapes with num_token_bins=2)
  num_token_bins: int = 2            # token sub-buckets per duration bin (2d)
  # min_padding (exact DP, least padding) | equal_total (bins of equal total duration);
  # bench/data_padding.py: 16x2 min_padding ~4-5% audio padding, 8x4 equal_total ~9-12%.
  binning: str = "min_padding"
  audio_seconds_per_batch: float = 160.0  # padded-audio budget that sets per-bucket batch size
  tokens_per_batch: int = 4096       # padded-token budget, idem (whichever binds)
  bucket_batch_sizes: str = ""       # optional per-bucket override file (JSON), see bucketing.load_batch_size_overrides
  batch_size_multiple: int = 0       # batch sizes are multiples of this; 0 = jax.device_count()
  audio_pad_multiple: int = 1280     # padded samples S are a multiple (1280 = 8 frames of hop 160)
  token_pad_multiple: int = 8        # padded tokens L are a multiple
  text_pad_extra: int = 1            # L >= longest transcript + this (room for an eos)
  remainder: str = "fill"            # last partial batch of a bucket: fill (other utts of the bucket) | pad | drop
  bad_input_policy: str = "skip"     # skip | error
  validate_headers: bool = True      # read every audio header up front (missing/corrupt/duration checks)
  duration_tolerance_s: float = 0.5  # manifest vs real duration: allowed difference is
  duration_tolerance_frac: float = 0.1  # max(tolerance_s, tolerance_frac * real duration)
  num_workers: int = 0               # grain worker processes (0 = in-process)
  num_threads: int = 2               # reading threads per process
  prefetch: int = 2                  # batches buffered (per worker)
  shuffle: bool = True
  seed: int = 0
  eval_audio_multiple_s: float = 2.0  # eval batches: S rounded up to this many seconds
  eval_token_multiple: int = 32      # eval batches: L rounded up to this many tokens
  feature_cache: str = ""            # directory of cached frozen-encoder frames (mtp_jax.train.pretrained)
  # Comma-separated text files (.txt lines, .tsv last column, .jsonl "text"): training
  # batches are then text only, no audio (decoder LM pretraining, mtp_jax.data.text_corpus;
  # data.batch_size sentences per batch; then train.init_from the run for speech).
  text_corpus: str = ""
  tokenizer: TokenizerConfig = TokenizerConfig()

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any] | ml_collections.ConfigDict,
                  prefix: str = "data") -> "DataConfig":
    """Builds and validates a DataConfig from `config.data`."""
    out = build(cls, cfg, prefix)
    validate(out, prefix)
    return out


def validate(cfg: DataConfig, prefix: str = "data") -> None:
  """Raises ConfigError naming the first invalid `data.*` field."""
  from mtp_jax.data import bucketing  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.tokenizer import SPECIAL_IDS  # pylint: disable=g-import-not-at-top
  p = prefix
  require_positive(f"{p}.sample_rate", cfg.sample_rate)
  require_positive(f"{p}.max_duration", cfg.max_duration)
  require_at_least(f"{p}.min_duration", cfg.min_duration, 0.0)
  if cfg.min_duration >= cfg.max_duration:
    raise ConfigError(f"{p}.min_duration={cfg.min_duration}: must be below "
                      f"{p}.max_duration={cfg.max_duration}")
  require_at_least(f"{p}.max_text_tokens", cfg.max_text_tokens, 1)
  require_one_of(f"{p}.batching", cfg.batching, BATCHING)
  for name in ("batch_size", "num_duration_bins", "num_token_bins", "tokens_per_batch",
               "audio_pad_multiple", "token_pad_multiple", "eval_token_multiple",
               "num_threads"):
    require_at_least(f"{p}.{name}", getattr(cfg, name), 1)
  for name in ("batch_size_multiple", "text_pad_extra", "duration_tolerance_s",
               "duration_tolerance_frac", "num_workers", "prefetch"):
    require_at_least(f"{p}.{name}", getattr(cfg, name), 0)
  require_positive(f"{p}.audio_seconds_per_batch", cfg.audio_seconds_per_batch)
  require_positive(f"{p}.eval_audio_multiple_s", cfg.eval_audio_multiple_s)
  require_one_of(f"{p}.binning", cfg.binning, bucketing.BINNINGS)
  require_one_of(f"{p}.remainder", cfg.remainder, bucketing.REMAINDER_MODES)
  require_one_of(f"{p}.bad_input_policy", cfg.bad_input_policy, POLICIES)
  if cfg.text_corpus and cfg.feature_cache:
    raise ConfigError(f"{p}.text_corpus={cfg.text_corpus!r} and {p}.feature_cache="
                      f"{cfg.feature_cache!r}: a text-only run reads no audio; set one")
  require_one_of(f"{p}.tokenizer.model_type", cfg.tokenizer.model_type, TOKENIZER_TYPES)
  require_at_least(f"{p}.tokenizer.vocab_size", cfg.tokenizer.vocab_size,
                   len(SPECIAL_IDS) + 1)
  require_at_least(f"{p}.tokenizer.merges", cfg.tokenizer.merges, 0)
  if cfg.tokenizer.merges and not cfg.tokenizer.path:
    raise ConfigError(f"{p}.tokenizer.merges={cfg.tokenizer.merges}: keeps the first merges "
                      f"of a pretrained LM's tokenizer; set {p}.tokenizer.path to one")


def data_defaults() -> ml_collections.ConfigDict:
  """`config.data` with every field at its `DataConfig` default."""
  return ml_collections.ConfigDict(dataclasses.asdict(DataConfig()))
