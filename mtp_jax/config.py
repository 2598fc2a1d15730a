"""Typed model configuration, validation, and the project's default ConfigDict.

Users edit ml-collections `ConfigDict`s (files under `configs/`, overridable from
the command line as `--config.model.mtp.num_heads=4`). The model itself consumes
frozen dataclasses built from `config.model` by `ModelConfig.from_config`, which
rejects unknown fields and invalid values with an error naming the field.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

HEAD_TYPES = ("independent", "latent", "sequential")
PROJECTOR_TYPES = ("mlp", "none")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")
REDUCTION_METHODS = ("none", "fastadasp_dense", "fastadasp_sparse", "random_merge",
                     "random_evict", "atome", "fastv")
REDUCTION_SCHEDULES = ("decay", "constant")


class ConfigError(ValueError):
  """An invalid configuration value; the message names the field."""


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
  """Log-mel frontend and SpecAugment."""
  sample_rate: int = 16000
  num_mels: int = 80
  win_ms: float = 25.0
  hop_ms: float = 10.0
  n_fft: int = 512
  freq_masks: int = 2
  freq_mask_width: int = 27
  time_masks: int = 4
  time_mask_ratio: float = 0.05  # max width of one time mask, fraction of length

  @property
  def win_length(self) -> int:
    return int(round(self.sample_rate * self.win_ms / 1000))

  @property
  def hop_length(self) -> int:
    return int(round(self.sample_rate * self.hop_ms / 1000))


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The speech encoder. `type` picks it from `mtp_jax.model.encoders` (conformer:
  conv subsampling x4 + Conformer blocks, trained from scratch; whisper: OpenAI
  Whisper's encoder, usually imported with `train.encoder_init` and frozen)."""
  type: str = "conformer"
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  ff_mult: int = 4
  conv_kernel: int = 15
  subsampling_channels: int = 64
  dropout: float = 0.1
  # A linear CTC classifier over the decoder vocabulary (blank = PAD id 0) on the
  # encoder output, trained with the auxiliary loss `train.ctc_weight`. It makes a
  # from-scratch model learn to read the audio instead of letting the LM ignore it.
  ctc_head: bool = False
  # whisper: positional table length (1500 = 30 s) and whether to pad every input to
  # that window as OpenAI's encoder does (default: the utterance's real length).
  max_positions: int = 1500
  pad_to_window: bool = False


@dataclasses.dataclass(frozen=True)
class ProjectorConfig:
  """Frame stacking + MLP into the decoder width (`type="mlp"`), or the encoder frames
  as they are (`type="none"`: stack 1, encoder width = decoder width; what a pretrained
  Whisper decoder's cross-attention expects)."""
  type: str = "mlp"
  stack: int = 2
  hidden: int = 0  # 0: the decoder's d_model
  # > 0: Conformer blocks (the encoder's own block: self-attention over the utterance,
  # a depthwise conv over time) at the hidden width, between the MLP's two layers. An
  # MLP alone sees `stack` frames (80 ms at stack 4) while a text token spans several
  # audio tokens: the blocks give each audio token its neighbours before it is read.
  # They are a residual branch whose output layer starts at zero, so they can be added
  # to a trained projector (`train.init_from` a run without them) without undoing it.
  layers: int = 0
  heads: int = 0  # attention heads of those blocks; 0: hidden // 64
  dropout: float = 0.1  # in those blocks, when training
  # A linear CTC classifier (blank = PAD id 0) on the audio tokens the projector emits,
  # trained with `train.ctc_weight`: with a frozen encoder it is the CTC head that
  # teaches the projector to emit token-like audio tokens.
  ctc_head: bool = False
  # With ctc_head: the classifier is the decoder's own token embedding (transposed), with
  # a learned temperature and per-token bias, instead of a fresh matrix. Trained alone
  # (`train.objective=ctc`, the decoder never runs) it moves every audio token next to the
  # embedding of the text token it reads: where a pretrained LM expects its input.
  ctc_tied: bool = False
  # With ctc_head: pass on only the audio tokens the CTC head reads as a token (not
  # blank, not a repeat of the previous frame's), in time order: a prefix about as long
  # as the transcript, where a pretrained LM finds what looks like its own input.
  ctc_compress: bool = False
  # With ctc_compress: the kept audio tokens become the token embeddings of what the CTC
  # head read (a straight-through estimator passes the gradient on to the audio token):
  # the LM reads its own input, a first-pass transcript, and learns to copy and correct it.
  ctc_hard: bool = False
  # With ctc_compress, > 0: each kept audio token becomes the mixture of the embeddings of
  # the CTC head's `ctc_mix` most likely tokens (blank excluded), weighted by their
  # renormalized probabilities: where the head is sure, the token's own embedding (as
  # ctc_hard); where it hesitates, its alternatives too. The LM's loss reaches the
  # projector through the weights (a true gradient, not straight-through).
  ctc_mix: int = 0
  # With ctc_compress, < 1: the compressed prefix is also narrower: ceil(this x the audio
  # tokens) positions instead of all of them, so the decoder computes over what it reads
  # and not over the blanks' empty slots (0.5 = 6.25 read tokens a second at stack 4;
  # speech has ~3-4 tokens a second). Read tokens beyond the width are dropped.
  ctc_compress_width: float = 1.0
  # > 0: RMS-normalize each audio token and scale it (a learned per-channel scale
  # initialized to this value) to the decoder's token-embedding scale: a pretrained LM
  # reads inputs of the size it was trained on (SmolLM2's embedding RMS is ~0.14,
  # a fresh projector's output ~2.5). 0: no normalization.
  out_rms: float = 0.0


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """The text decoder. `type` picks its family from `mtp_jax.model.decoders` (llama:
  LLaMA-style decoder-only LM over `[audio][text]`; whisper: OpenAI Whisper's decoder,
  cross-attending to the audio tokens, usually imported with `train.decoder_init`)."""
  type: str = "llama"
  vocab_size: int = 256
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2
  ff_dim: int = 688
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  max_text_len: int = 128
  dropout: float = 0.0
  # whisper: length of the learned text positional table (448 in every Whisper).
  max_positions: int = 448

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads


@dataclasses.dataclass(frozen=True)
class MTPConfig:
  """Multi-token prediction heads: head 1 is the ordinary next-token head."""
  num_heads: int = 1
  head_type: str = "independent"


@dataclasses.dataclass(frozen=True)
class ReductionConfig:
  """Audio-token reduction in the decoder prefill (FastAdaSP and baselines).

  See `mtp_jax/model/reduction_ops.py` for the methods. The per-layer token budget
  (`mtp_jax/model/reduction_plan.py`) comes either from `flops_reduction` (a target
  fraction of decoder prefill FLOPs, solved for (start_layer, ratio) by
  `reduction_plan.solve_reduction`) or, when that is 0, from `start_layer` and `ratio`
  directly (`ratio` = tokens removed at the start layer as a fraction of the audio
  prefix length P).
  """
  method: str = "none"
  flops_reduction: float = 0.0
  schedule: str = "decay"     # multi-layer methods; fastv/fastadasp_sparse merge once
  start_layer: int = -1       # -1: chosen by the solver
  ratio: float = 0.0
  sparse_layer: int = -1      # fastadasp_sparse: layer from
  #                             `reduction_calibrate.choose_sparse_layer`
  max_step_ratio: float = 0.5  # multi-layer methods: cap on tokens removed at one layer
  #                              (fraction of the audio tokens entering it)
  seed: int = 0               # random_merge / random_evict


@dataclasses.dataclass(frozen=True)
class KernelsConfig:
  """`config.kernels`: the one switch for the Pallas kernels (`pallas_kernels/`).

  With `enabled`, the computations a kernel implements run it instead of its pure-JAX
  reference (same results, tests/test_*_kernel_vs_reference.py): FastAdaSP token
  merging in the prefill (`model.reduction.method` fastadasp_*) and verification in
  decoding (strategy "verify" with exact acceptance; typical acceptance needs the full
  logits and keeps the reference). Kernels compile with Triton on GPU and Mosaic on
  TPU; elsewhere they run in the Pallas interpreter (correct but slow). The model
  carries it (`SpeechLLaMA(cfg, kernels=...)`); decode.py's --use_kernels overrides it.
  """
  enabled: bool = False

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any] | ml_collections.ConfigDict,
                  prefix: str = "kernels", enabled: bool | None = None) -> "KernelsConfig":
    """Builds `config.kernels`; `enabled` (a command-line override) wins unless None."""
    out = build(cls, cfg, prefix)
    return out if enabled is None else dataclasses.replace(out, enabled=bool(enabled))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything `SpeechLLaMA` needs."""
  frontend: FrontendConfig = FrontendConfig()
  encoder: EncoderConfig = EncoderConfig()
  projector: ProjectorConfig = ProjectorConfig()
  decoder: DecoderConfig = DecoderConfig()
  mtp: MTPConfig = MTPConfig()
  reduction: ReductionConfig = ReductionConfig()
  dtype: str = "float32"        # compute dtype
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat_policy: str = "none"
  # A text prompt between the audio and the transcript, as token ids of the run's
  # tokenizer (SLAM-ASR's "Transcribe speech to text."; a recipe computes them with
  # `tokenizer.encode_prompt`). The model appends their embeddings to each row's audio
  # tokens, so they are part of the decoder prefix: never in the loss, fed once in the
  # prefill. Decoder-only (llama) decoders only.
  prompt_ids: tuple = ()

  @property
  def ctc_head(self) -> str:
    """Where the auxiliary CTC head sits: "encoder", "projector" or "" (none)."""
    return "encoder" if self.encoder.ctc_head else ("projector" if self.projector.ctc_head
                                                    else "")

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any] | ml_collections.ConfigDict,
                  prefix: str = "model") -> "ModelConfig":
    """Builds and validates a ModelConfig from `config.model`."""
    out = build(cls, cfg, prefix)
    validate(out, prefix)
    return out


def _to_dict(cfg) -> dict:
  if isinstance(cfg, ml_collections.ConfigDict):
    return cfg.to_dict()
  return dict(cfg)


def _reject_unknown(cls, cfg: Mapping[str, Any], prefix: str) -> None:
  known = {f.name for f in dataclasses.fields(cls)}
  for key in cfg:
    if key not in known:
      raise ConfigError(f"{prefix}.{key}: unknown field (known: {sorted(known)})")


def build(cls, cfg, prefix: str):
  """A frozen `cls` dataclass from a mapping, without range checks.

  Unknown keys and wrongly typed values raise ConfigError naming the field
  (`prefix.field`); fields whose default is a dataclass are built recursively;
  missing fields keep their defaults. An int is accepted for a float field and
  a list for a tuple field (JSON has no tuples).
  """
  if not isinstance(cfg, (Mapping, ml_collections.ConfigDict)):
    raise ConfigError(f"{prefix}={cfg!r}: expected a section (mapping) of {cls.__name__}")
  cfg = _to_dict(cfg)
  _reject_unknown(cls, cfg, prefix)
  return cls(**{f.name: _typed(f.default, cfg[f.name], f"{prefix}.{f.name}")
                for f in dataclasses.fields(cls) if f.name in cfg})


def _typed(default, value, name: str):
  """`value` checked against (and converted to) the type of `default`."""
  if dataclasses.is_dataclass(default):
    return build(type(default), value, name)
  expected = type(default)
  if expected is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if expected is tuple and isinstance(value, list):
    return tuple(value)
  if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
    raise ConfigError(f"{name}={value!r}: expected {expected.__name__}")
  return value


def projector_block_config(cfg: ModelConfig) -> EncoderConfig:
  """The Conformer block shape of `projector.layers` (at the projector's hidden width)."""
  proj = cfg.projector
  width = proj.hidden or cfg.decoder.d_model
  return EncoderConfig(d_model=width, num_layers=proj.layers,
                       num_heads=proj.heads or width // 64, dropout=proj.dropout)


def _require(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def require_at_least(name: str, value, low) -> None:
  """ConfigError "name=value: must be >= low" unless value >= low."""
  _require(value >= low, f"{name}={value}: must be >= {low}")


def require_positive(name: str, value) -> None:
  _require(value > 0, f"{name}={value}: must be > 0")


def require_fraction(name: str, value, *, closed: bool = False) -> None:
  """value in [0, 1) (or [0, 1] with `closed`)."""
  ok = 0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0
  _require(ok, f"{name}={value}: must be in [0, 1{']' if closed else ')'}")


def require_one_of(name: str, value, choices) -> None:
  _require(value in choices, f"{name}={value!r}: expected one of {tuple(choices)}")


def validate(cfg: ModelConfig, prefix: str = "model") -> None:
  """Raises ConfigError naming the first invalid field."""
  fe, enc, proj, dec, mtp = cfg.frontend, cfg.encoder, cfg.projector, cfg.decoder, cfg.mtp
  p = prefix
  _require(mtp.num_heads >= 1, f"{p}.mtp.num_heads={mtp.num_heads}: must be >= 1 (1 = baseline)")
  _require(mtp.head_type in HEAD_TYPES,
           f"{p}.mtp.head_type={mtp.head_type!r}: unknown head type, expected one of {HEAD_TYPES}")
  for name, d, h in (("encoder", enc.d_model, enc.num_heads), ("decoder", dec.d_model, dec.num_heads)):
    _require(d > 0 and h > 0, f"{p}.{name}.d_model/num_heads must be positive")
    _require(d % h == 0, f"{p}.{name}.num_heads={h}: must divide {p}.{name}.d_model={d}")
  _require((dec.d_model // dec.num_heads) % 2 == 0,
           f"{p}.decoder.d_model/num_heads={dec.d_model // dec.num_heads}: head dim must be "
           "even for rotary positions")
  _require(dec.num_kv_heads > 0 and dec.num_heads % dec.num_kv_heads == 0,
           f"{p}.decoder.num_kv_heads={dec.num_kv_heads}: must divide "
           f"{p}.decoder.num_heads={dec.num_heads}")
  _require(dec.vocab_size >= 8, f"{p}.decoder.vocab_size={dec.vocab_size}: must be >= 8")
  _require(dec.num_layers >= 1, f"{p}.decoder.num_layers={dec.num_layers}: must be >= 1")
  _require(enc.num_layers >= 0, f"{p}.encoder.num_layers={enc.num_layers}: must be >= 0")
  _require(proj.stack >= 1, f"{p}.projector.stack={proj.stack}: must be >= 1")
  require_at_least(f"{p}.projector.layers", proj.layers, 0)
  require_at_least(f"{p}.projector.heads", proj.heads, 0)
  if proj.layers:
    bc = projector_block_config(cfg)
    width, heads = bc.d_model, bc.num_heads
    _require(heads >= 1 and width % heads == 0 and (width // heads) % 2 == 0,
             f"{p}.projector.heads={proj.heads}: the blocks' width {width} (projector.hidden, "
             f"or the decoder's d_model) must split into {heads} heads of an even size "
             "(rotary positions)")
    _require(proj.type == "mlp", f"{p}.projector.layers={proj.layers}: needs "
             f"{p}.projector.type='mlp' (got {proj.type!r})")
  _require(0.0 <= proj.dropout < 1.0, f"{p}.projector.dropout={proj.dropout}: must be in [0, 1)")
  require_at_least(f"{p}.projector.out_rms", proj.out_rms, 0.0)
  require_one_of(f"{p}.projector.type", proj.type, PROJECTOR_TYPES)
  if proj.type == "none":
    _require(proj.stack == 1 and enc.d_model == dec.d_model,
             f"{p}.projector.type='none' passes the encoder frames on unchanged: it needs "
             f"{p}.projector.stack=1 (got {proj.stack}) and {p}.encoder.d_model="
             f"{p}.decoder.d_model (got {enc.d_model} and {dec.d_model})")
  _require(not proj.ctc_compress or proj.ctc_head,
           f"{p}.projector.ctc_compress=True: needs {p}.projector.ctc_head=True")
  _require(not proj.ctc_hard or proj.ctc_compress,
           f"{p}.projector.ctc_hard=True: needs {p}.projector.ctc_compress=True")
  _require(0 <= proj.ctc_mix < cfg.decoder.vocab_size,
           f"{p}.projector.ctc_mix={proj.ctc_mix}: must be in [0, "
           f"{p}.decoder.vocab_size={cfg.decoder.vocab_size})")
  _require(not proj.ctc_mix or (proj.ctc_compress and not proj.ctc_hard),
           f"{p}.projector.ctc_mix={proj.ctc_mix}: needs projector.ctc_compress=True and "
           "projector.ctc_hard=False (a mixture replaces the hard token)")
  _require(0 < proj.ctc_compress_width <= 1,
           f"{p}.projector.ctc_compress_width={proj.ctc_compress_width}: must be in (0, 1]")
  _require(proj.ctc_compress_width == 1 or proj.ctc_compress,
           f"{p}.projector.ctc_compress_width={proj.ctc_compress_width}: needs "
           "projector.ctc_compress=True")
  _require(not proj.ctc_tied or proj.ctc_head,
           f"{p}.projector.ctc_tied=True: needs {p}.projector.ctc_head=True")
  _require(not (enc.ctc_head and proj.ctc_head),
           f"{p}.encoder.ctc_head and {p}.projector.ctc_head: set one (one CTC head)")
  _require(fe.sample_rate > 0, f"{p}.frontend.sample_rate={fe.sample_rate}: must be > 0")
  for name in ("freq_masks", "freq_mask_width", "time_masks"):
    require_at_least(f"{p}.frontend.{name}", getattr(fe, name), 0)
  require_fraction(f"{p}.frontend.time_mask_ratio", fe.time_mask_ratio)
  require_fraction(f"{p}.encoder.dropout", enc.dropout)
  require_fraction(f"{p}.decoder.dropout", dec.dropout)
  _require(not enc.pad_to_window or enc.type == "whisper",
           f"{p}.encoder.pad_to_window=True: only for encoder.type='whisper'")
  _require(cfg.dtype in DTYPES, f"{p}.dtype={cfg.dtype!r}: expected one of {DTYPES}")
  _require(cfg.param_dtype in DTYPES, f"{p}.param_dtype={cfg.param_dtype!r}: expected one of {DTYPES}")
  _require(cfg.remat_policy in REMAT_POLICIES,
           f"{p}.remat_policy={cfg.remat_policy!r}: expected one of {REMAT_POLICIES}")
  validate_reduction(cfg.reduction, dec.num_layers, f"{p}.reduction")
  _require(all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < dec.vocab_size
               for i in cfg.prompt_ids),
           f"{p}.prompt_ids={cfg.prompt_ids}: expected token ids in [0, "
           f"{p}.decoder.vocab_size={dec.vocab_size})")
  _require(not cfg.prompt_ids or dec.type == "llama",
           f"{p}.prompt_ids: a prompt between audio and transcript needs a decoder-only "
           f"decoder ({p}.decoder.type='llama', got {dec.type!r})")
  # Each family registry (mtp_jax.model.encoders / decoders) checks its own section.
  if not _FAMILY_CHECKS:
    raise RuntimeError("no model family registry loaded: import mtp_jax (its __init__ "
                       "loads mtp_jax.model.encoders and mtp_jax.model.decoders)")
  for check in _FAMILY_CHECKS:
    check(cfg, p)


# Checks registered by the family registries (`register_family_check`), run by `validate`
# after the generic ones: this module imports nothing of the project.
_FAMILY_CHECKS: list = []


def register_family_check(check) -> None:
  """Adds `check(cfg: ModelConfig, prefix: str)` (raising ConfigError) to `validate`."""
  if check not in _FAMILY_CHECKS:
    _FAMILY_CHECKS.append(check)


def validate_reduction(r: ReductionConfig, num_layers: int, p: str = "model.reduction") -> None:
  """Raises ConfigError naming the first invalid `model.reduction` field."""
  _require(r.method in REDUCTION_METHODS,
           f"{p}.method={r.method!r}: expected one of {REDUCTION_METHODS}")
  _require(r.schedule in REDUCTION_SCHEDULES,
           f"{p}.schedule={r.schedule!r}: expected one of {REDUCTION_SCHEDULES}")
  _require(0.0 <= r.flops_reduction < 0.95,
           f"{p}.flops_reduction={r.flops_reduction}: must be in [0, 0.95)")
  _require(0.0 <= r.ratio < 1.0, f"{p}.ratio={r.ratio}: must be in [0, 1)")
  _require(not (r.flops_reduction > 0 and r.ratio > 0),
           f"{p}.ratio={r.ratio} and {p}.flops_reduction={r.flops_reduction}: set one "
           "(flops_reduction is solved for ratio)")
  _require(-1 <= r.start_layer < num_layers,
           f"{p}.start_layer={r.start_layer}: must be -1 (solver) or in [0, {num_layers})")
  _require(-1 <= r.sparse_layer < num_layers,
           f"{p}.sparse_layer={r.sparse_layer}: must be -1 or in [0, {num_layers})")
  _require(0.0 < r.max_step_ratio <= 1.0,
           f"{p}.max_step_ratio={r.max_step_ratio}: must be in (0, 1]")


def model_defaults() -> ml_collections.ConfigDict:
  """`config.model` with every field at its dataclass default."""
  return ml_collections.ConfigDict(dataclasses.asdict(ModelConfig()))


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config-file argument `key=value,key=value` (big_vision style).

  Unknown keys raise ConfigError; values take the type of their default.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    if "=" not in item:
      raise ConfigError(f"config arg {item!r}: expected key=value")
    key, value = item.split("=", 1)
    if key not in defaults:
      raise ConfigError(f"config arg {key!r}: unknown, expected one of {sorted(defaults)}")
    kind = type(defaults[key])
    try:
      out[key] = kind(value)
    except ValueError as e:
      raise ConfigError(f"config arg {key}={value!r}: expected {kind.__name__}") from e
  return out


def pop_arg(arg: str | None, key: str, default: str) -> tuple[str, str | None]:
  """Splits `key=value` out of a config-file argument; returns (value, rest of the arg).

  For config files that pick a base config by `key` and pass the rest on to it.
  """
  items = [i for i in (arg or "").split(",") if i]
  value, rest = default, []
  for item in items:
    if item.startswith(f"{key}="):
      value = item.split("=", 1)[1]
    else:
      rest.append(item)
  return value, (",".join(rest) or None)


def shifted_config(configs_dir, layers: dict[str, tuple[int, int]], arg: str | None):
  """A parameter-shift arm: `base=<name>` picks configs_dir/<name>.py (the rest of `arg`
  goes to it) and `layers[name]` = (encoder layers, decoder layers) overrides its depths."""
  import pathlib  # pylint: disable=g-import-not-at-top
  base, rest = pop_arg(arg, "base", "small")
  if base not in layers:
    raise ConfigError(f"config arg base={base!r}: expected one of {sorted(layers)}")
  c = load_config_file(pathlib.Path(configs_dir) / f"{base}.py", rest)
  c.model.encoder.num_layers, c.model.decoder.num_layers = layers[base]
  return c


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Loads `get_config(arg)` from a config file; `path` may carry `:arg` (as on the CLI).

  The result is locked (fields can change, none can be added). A field the config
  file misspells or sets to a wrong type raises ConfigError naming file, line and
  field, e.g. "configs/x.py:12: `c.train.learning_rte = 1e-3`: no config field
  'learning_rte' (did you mean 'learning_rate'?)".
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  if arg is None and ":" in str(path):
    path, arg = str(path).split(":", 1)
  path = pathlib.Path(path)
  if not path.exists():
    raise ConfigError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  mod = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(mod)
    config = mod.get_config(arg) if arg is not None else mod.get_config()
  except (AttributeError, KeyError, TypeError) as e:
    located = _config_dict_error(e)
    if located is None:
      raise
    raise located from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, "
                      "expected an ml_collections.ConfigDict")
  config.lock()
  return config


def _config_dict_error(err: Exception) -> ConfigError | None:
  """"file:line: `source`: what" for an error a ConfigDict raised on a config file's
  line (unknown field, wrong type); None for any other error."""
  import os  # pylint: disable=g-import-not-at-top
  import traceback  # pylint: disable=g-import-not-at-top
  frames = traceback.extract_tb(err.__traceback__)
  inside = [i for i, f in enumerate(frames)
            if f"{os.sep}ml_collections{os.sep}" in f.filename]
  if not inside or inside[0] == 0:
    return None
  caller = frames[inside[0] - 1]
  return ConfigError(f"{caller.filename}:{caller.lineno}: `{caller.line}`: "
                     f"{_describe_config_dict_error(err)}")


def _describe_config_dict_error(err: Exception) -> str:
  """ml_collections' message, shortened: the missing field and its likely spelling."""
  import re  # pylint: disable=g-import-not-at-top
  text = str(err.args[0]) if err.args else str(err)
  key = (re.search(r'Key "([^"]+)" does not exist', text)
         or re.match(r"'([^'\n]+)'\s*(\n|$)", text))
  if key is None:
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
  hint = re.search(r'Did you mean "([^"]+)"', text)
  return (f"no config field {key.group(1)!r}"
          + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))


def parse_flags_with_config(argv: list[str], flag_values=None, name: str = "config"):
  """An absl `flags_parser` (`app.run(main, flags_parser=...)`) for a program with a
  `--config` file flag (`config_flags.DEFINE_config_file`).

  Like absl's own parser it prints a flag error as one line ("FATAL Flags parsing
  error: ...") and exits with status 1, and it also does so, naming the file or the
  flag, for a config file that fails to load and for a `--config.<field>` override
  of a field that does not exist ("--config.train.learning_rte: no config field
  'learning_rte' in train (did you mean 'learning_rate'?)"), which would otherwise end
  in a traceback.
  """
  import sys  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    return flag_values(argv)
  except Exception as e:  # pylint: disable=broad-except
    message = _config_flag_problem(argv, name)
    if message is None and not isinstance(e, flags.Error):
      raise
    sys.stderr.write(f"FATAL Flags parsing error: {message or e}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def _config_flag_problem(argv: list[str], name: str) -> str | None:
  """Why `--name` (a config file) or one of its overrides in argv cannot apply."""
  path = _flag_value(argv, name)
  if path is None:
    return None
  try:
    config = load_config_file(path)
  except ConfigError as err:
    return f"--{name}={path}: {err}"
  except Exception:  # pylint: disable=broad-except  # a bug in the file: absl's own message
    return None
  return _unknown_override(argv, name, config)


def _flag_value(argv: list[str], name: str) -> str | None:
  """The value of `--name=value` / `--name value` in argv (None when absent)."""
  for i, arg in enumerate(argv):
    for dashes in ("--", "-"):
      if arg.startswith(f"{dashes}{name}="):
        return arg.split("=", 1)[1]
      if arg == f"{dashes}{name}" and i + 1 < len(argv):
        return argv[i + 1]
  return None


def _unknown_override(argv: list[str], name: str, config) -> str | None:
  """A message for the first `--name.a.b=...` whose field `a.b` is not in config."""
  import difflib  # pylint: disable=g-import-not-at-top
  for arg in argv:
    flag = arg.lstrip("-").split("=", 1)[0]
    if not arg.startswith("-") or not flag.startswith(f"{name}."):
      continue
    node, parts = config, flag.split(".")[1:]
    for i, key in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict):
        break
      if key not in node:
        section = ".".join(parts[:i]) or "the config"
        close = difflib.get_close_matches(key, list(node.keys()), n=1)
        return (f"--{flag}: no config field {key!r} in {section}"
                + (f" (did you mean {close[0]!r}?)" if close else
                   f" (fields: {', '.join(sorted(node.keys()))})"))
      node = node[key]
  return None
