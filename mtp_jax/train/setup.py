"""What every trainer of a config builds before it reads data: model, optimizer, the
abstract sharded train state and the jitted train step.

One function, `make_train_setup`, shared by the training loop (`mtp_jax.train.loop`),
the batch-size search (`mtp_jax.tools.batch_search`) and the benchmarks, so that they
all compile the very step that training runs. Nothing is allocated on the devices
until `TrainSetup.create_state`.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import optax

from mtp_jax.config import ModelConfig
from mtp_jax.model.speech_llama import SpeechLLaMA
from mtp_jax.train import lora as lora_lib
from mtp_jax.train import optimizer as opt_lib
from mtp_jax.train import state as state_lib
from mtp_jax.train import step as step_lib


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """A config's model, optimizer and train-state layout on a mesh.

  Attributes:
    config: the full ConfigDict (model, train, seed, ...).
    mesh, rules: see `mtp_jax.sharding`.
    model: the SpeechLLaMA in eval mode (init, evaluation, decoding).
    train_model: the same in train mode (dropout, SpecAugment), used by the step.
    tx: the optimizer (`optimizer.make_optimizer`).
    labels: the params' trainable/frozen labels, None when `config.train` freezes nothing.
    abstract_state: TrainState of ShapeDtypeStructs carrying their shardings (what
      `.lower` and checkpoint restores take).
    shardings: TrainState of NamedShardings.
  """
  config: Any
  mesh: jax.sharding.Mesh
  rules: Any
  model: SpeechLLaMA
  train_model: SpeechLLaMA
  tx: optax.GradientTransformation
  labels: Any
  abstract_state: state_lib.TrainState
  shardings: state_lib.TrainState
  lora: lora_lib.LoRAConfig = lora_lib.LoRAConfig()
  ctc_units: Any = None  # [U] ids a tied CTC head scores (`ctc_units_of`), or None: all

  def create_state(self, seed: int | None = None, params: Any | None = None):
    """A fresh sharded TrainState (seed default `config.seed`); `params` (unboxed)
    replace the initialized ones, e.g. warm-start params."""
    seed = int(self.config.get("seed", 0)) if seed is None else int(seed)
    state, _ = state_lib.create_train_state(self.model, self.tx, self.mesh, self.rules, seed,
                                            params=params, lora=self.lora)
    return state

  def jit_step(self, word_tables=None, kind: str = "audio") -> Callable:
    """The jitted train step `(state, batch) -> (state, metrics)` (state donated).

    Args:
      word_tables: `mwer.word_errors.WordTables`, for `train.objective=mwer` only.
      kind: the batches' kind (`step.batch_keys`): "audio", "frames" (cached encoder
        frames instead of audio) or "text" (text only, no audio).
    """
    step = step_lib.make_train_step(self.train_model, self.tx, self.config.train,
                                    self.labels, word_tables, self.ctc_units)
    return step_lib.jit_train_step(step, self.shardings, self.mesh, self.rules, kind=kind)

  def compile_step(self, shapes: Sequence[tuple[int, int, int]], *, word_tables=None,
                   frames_dim: int = 0, kind: str | None = None,
                   log: Callable[[str], None] = logging.info) -> dict:
    """AOT-compiles the step for each global batch shape (B, S, L), S in samples or,
    with `frames_dim` > 0, in cached frames of that width (kind "text": no audio, S
    ignored); returns {shape: executable}."""
    kind = kind or ("frames" if frames_dim > 0 else "audio")
    jitted = self.jit_step(word_tables, kind=kind)
    return step_lib.compile_for_shapes(jitted, self.abstract_state, shapes, self.mesh,
                                       self.rules, log=log, frames_dim=frames_dim, kind=kind)


def ctc_units_of(config, mcfg: ModelConfig):
  """The ids a tied CTC head need score: all its tokenizer can produce, when
  `data.tokenizer.merges` keeps few merges (`LMTokenizer.unit_ids`); else None (the
  whole vocabulary). A fresh run masks the others (`state.mask_ctc_bias`), and an
  alignment run (`train.objective=ctc`) computes the logits of these ids alone."""
  merges = config.data.tokenizer.get("merges", 0)
  if not (merges and mcfg.ctc_head and mcfg.projector.ctc_tied):
    return None
  from mtp_jax.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  return tok_lib.load_configured(config.data.tokenizer.path, merges).unit_ids()


def make_train_setup(config, mesh, rules) -> TrainSetup:
  """Builds the `TrainSetup` of `config` (no FLOPs: shapes are traced abstractly).

  Raises:
    ConfigError: an invalid `config.model` field (named).
  """
  mcfg = ModelConfig.from_config(config.model)
  model = SpeechLLaMA(mcfg)
  tcfg = config.train
  lora = lora_lib.of(tcfg)
  abstract_params = nn.unbox(state_lib.abstract_params(model, mesh, rules, lora))
  tx = opt_lib.make_optimizer(tcfg, abstract_params)
  labels = (opt_lib.trainable_labels(abstract_params, tcfg)
            if opt_lib.freezes_anything(tcfg) else None)
  abstract, shardings = state_lib.abstract_train_state(model, tx, mesh, rules, lora)
  return TrainSetup(config=config, mesh=mesh, rules=rules, model=model,
                    train_model=SpeechLLaMA(mcfg, train=True), tx=tx, labels=labels,
                    abstract_state=state_lib.with_shardings(abstract, shardings),
                    shardings=shardings, lora=lora, ctc_units=ctc_units_of(config, mcfg))
