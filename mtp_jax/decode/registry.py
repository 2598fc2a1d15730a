"""The strategy registry: name -> how to build it, its options, what it supports.

A new decoding strategy is one file under `mtp_jax/decode/` that calls
`register(StrategySpec(...))` at import, plus one line in `MODULES` below. `api.decode`,
`api.make_decode_fn` and `decode.py`'s flags are derived from what is registered.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

# One line per strategy module (imported on first use; each registers itself).
MODULES = (
    "mtp_jax.decode.greedy",
    "mtp_jax.decode.threshold",
    "mtp_jax.decode.verify",
    "mtp_jax.decode.tree",
    "mtp_jax.decode.beam",
    "mtp_jax.decode.ctc",
    "mtp_jax.decode.joint",
)


@dataclasses.dataclass(frozen=True)
class Option:
  """A static option of a strategy (a keyword of `api.decode`, a flag of decode.py).

  Attributes:
    name: keyword / flag name.
    default: value when not given.
    help: one line for --help.
    kind: "float" | "int" | "bool" | "string" (the flag's type).
    parse: value (or the flag's string) -> normalized hashable value; raises
      ValueError with a message naming the option when the value is invalid.
  """
  name: str
  default: Any
  help: str
  kind: str = "float"
  parse: Callable[[Any], Any] = lambda v: v


@dataclasses.dataclass(frozen=True)
class StrategySpec:
  """One decoding strategy.

  Attributes:
    name: the `strategy=` value.
    build: `(model, *, max_new_tokens, **options) -> fn(params, audio, audio_len) -> dict`
      (the dict has `api.DecodeResult`'s fields); pure, jit-able.
    options: the keywords `build` takes besides max_new_tokens.
    help: one line for --help.
    exact: its output equals greedy decoding token for token (tests check it).
    decoder_calls: it runs the decoder (ctc does not).
    reduction: works with prefill audio-token reduction (FastAdaSP & co.); when False
      `api` refuses the combination with a clear error.
    needs_ctc_head: it reads the model's CTC head (`api` refuses a model without one).
  """
  name: str
  build: Callable
  options: tuple[Option, ...] = ()
  help: str = ""
  exact: bool = False
  decoder_calls: bool = True
  reduction: bool = True
  needs_ctc_head: bool = False


_REGISTRY: dict[str, StrategySpec] = {}
_loaded = False


def register(spec: StrategySpec) -> StrategySpec:
  _REGISTRY[spec.name] = spec
  return spec


def _load() -> None:
  global _loaded
  if not _loaded:
    _loaded = True
    for m in MODULES:
      importlib.import_module(m)


def get(name: str) -> StrategySpec:
  _load()
  if name not in _REGISTRY:
    raise ValueError(f"strategy={name!r}: unknown decoding strategy, expected one of "
                     f"{names()}")
  return _REGISTRY[name]


def names() -> list[str]:
  """Registered strategies: the built-in ones in `MODULES` order (whichever was
  imported first), then any registered from outside in registration order."""
  _load()
  rank = {module: i for i, module in enumerate(MODULES)}
  return sorted(_REGISTRY, key=lambda name: rank.get(
      getattr(_REGISTRY[name].build, "__module__", None), len(MODULES)))


def all_options() -> dict[str, Option]:
  """Every option of every strategy by name (one flag each; same name = same meaning)."""
  _load()
  out: dict[str, Option] = {}
  for name in names():
    for o in _REGISTRY[name].options:
      out.setdefault(o.name, o)
  return out


def resolve_options(name: str, options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
  """The chosen strategy's options, parsed, with defaults filled in, as a sorted tuple.

  Options another strategy declares are ignored (e.g. `threshold` with
  strategy="greedy", as decode.py passes every flag); a name no strategy declares is
  an error. None means "the default".
  """
  spec = get(name)
  known = all_options()
  unknown = sorted(set(options) - set(known))
  if unknown:
    raise ValueError(f"decoding option(s) {unknown}: unknown, expected some of "
                     f"{sorted(known)}")
  values = {}
  for o in spec.options:
    v = options.get(o.name)
    values[o.name] = o.parse(o.default if v is None else v)
  return tuple(sorted(values.items()))


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
  """"verify:typical=0.3,0.09" -> ("verify", {"typical": "0.3,0.09"}): a strategy
  with options in one string (benchmarks' --strategies lists); values stay strings,
  parsed by the options' own parsers."""
  name, *items = spec.split(":")
  options = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"{spec!r}: expected name:option=value[:option=value]")
    options[key] = value
  return name, options


# ------------------------------------------------------------------- option parsers
def positive_int(name: str, low: int = 1) -> Callable[[Any], int]:
  """Parser of an integer option >= `low` (1 by default)."""
  def parse(v):
    try:
      ok = not isinstance(v, bool) and float(v) == int(float(v)) and int(float(v)) >= low
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise ValueError(f"{name}={v!r}: must be an integer >= {low}")
    return int(float(v))
  return parse


def number(name: str, low: float | None = None,
           high: float | None = None) -> Callable[[Any], float]:
  """Parser of a float option in [low, high] (None: unbounded); NaN and values that are
  not numbers are refused with a message naming the option."""
  def parse(v):
    try:
      x = float(v)
    except (TypeError, ValueError):
      x = float("nan")
    if x != x or (low is not None and x < low) or (high is not None and x > high):
      bounds = (f" in [{low}, {high}]" if low is not None and high is not None else
                f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
      raise ValueError(f"{name}={v!r}: must be a number{bounds}")
    return x
  return parse


def non_negative(name: str) -> Callable[[Any], float]:
  return number(name, 0)


# ------------------------------------------------------------------- shared options
# verify's and tree's shortlist for drafting (`common.draft_vocab_of`).
DRAFT_VOCAB = Option("draft_vocab", 0, "N > 0: in --strategy=verify/tree, heads 2..K draft "
                     "among the token ids < N only (BPE ids run from frequent to rare; "
                     "latent heads; output unchanged); 0: all", kind="int",
                     parse=positive_int("draft_vocab", 0))
# The beam width of the strategies that keep several hypotheses (beam, joint).
BEAM = Option("beam", 4, "beam width (--strategy=beam/joint)", kind="int",
              parse=positive_int("beam"))
