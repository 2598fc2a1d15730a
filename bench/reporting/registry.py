"""Which renderer draws which results file: a table of file-name patterns.

A results file is rendered by the first kind whose glob matches its name (the file name
only, so bench/results/attempts/ files render like the others); a file no kind claims is
rendered by `render_generic`. A new results file in a known format therefore needs no
code: name it after its kind (e.g. `peer_whisper_<anything>.json`) and name it, or a glob
matching it, in a page's `<!-- report: ... -->` block (or find it in docs/results.md).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import pathlib
from typing import Callable

from reporting.fastadasp import render_fastadasp
from reporting.generic import render_generic
from reporting.longform import render_longform
from reporting.models import render_demo, render_mwer, render_race, render_recipe
from reporting.multi_token import (render_decode, render_heads_x_strategies, render_kernels,
                                   render_peer_decode, render_step_cost, render_unembed_layout)
from reporting.training import render_capacity, render_padding, render_train_throughput


@dataclasses.dataclass(frozen=True)
class Kind:
  name: str
  globs: tuple
  render: Callable  # (path, data, ctx) -> Section; group kinds: ([(path, data)], ctx) -> [Section]
  script: str       # what writes such files
  group: bool = False  # all files of the kind in one block are rendered together


KINDS = (
    Kind("demo", ("demo*.json",), render_demo, "python -m mtp_jax.demo"),
    Kind("decoding strategies", ("decode*.json",), render_decode, "bench/decode.py"),
    Kind("real-speech test sets", ("recipe_eval*.json",), render_recipe, "bench/recipe_eval.py"),
    Kind("heads × strategies", ("hxs_*.json", "whxs_*.json"), render_heads_x_strategies,
         "bench/recipe_eval.py --out bench/results/<w>hxs_<label>_<b16|speed_b1|speed_b16>.json",
         group=True),
    Kind("race against faster-whisper", ("peer_whisper*.json",), render_race,
         "bench/peer_whisper.py"),
    Kind("long recordings", ("longform*.json",), render_longform, "bench/longform.py"),
    Kind("MWER", ("mwer*.json",), render_mwer, "bench/mwer.py"),
    Kind("FastAdaSP", ("fastadasp*.json",), render_fastadasp, "bench/fastadasp.py"),
    Kind("batching and padding", ("data_padding*.json",), render_padding, "bench/data_padding.py"),
    Kind("training throughput", ("train_throughput*.json",), render_train_throughput,
         "bench/train_throughput.py"),
    Kind("capacity", ("capacity*.json",), render_capacity, "bench/capacity.py"),
    Kind("decoder-call cost", ("step_cost*.json",), render_step_cost, "bench/step_cost.py"),
    Kind("vocabulary projection", ("unembed_layout*.json",), render_unembed_layout,
         "bench/unembed_layout.py"),
    Kind("Pallas kernels", ("kernels*.json",), render_kernels,
         "bench/kernels.py (bench/gpu_suite.sh on a GPU)"),
    Kind("mtp_jax vs Hugging Face generate", ("peer_decode*.json",), render_peer_decode,
         "bench/peer_decode.py"),
)
GENERIC = Kind("other", ("*.json",), render_generic, "a bench script")


def kind_of(path: str | pathlib.Path) -> Kind:
  """The kind that renders the results file at `path`."""
  name = pathlib.Path(path).name
  return next((k for k in KINDS if any(fnmatch.fnmatch(name, g) for g in k.globs)), GENERIC)
