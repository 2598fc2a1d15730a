"""A small ctypes wrapper around libespeak-ng from the `espeakng-loader` wheel.

The wheel bundles `libespeak-ng.so` and its `espeak-ng-data` folder, so nothing
is downloaded or executed outside this process. The engine is initialised once
per process (synchronous mode, 22050 Hz native rate) and audio is collected
through the synth callback.

Determinism: `espeak_Initialize` seeds espeak's noise generator (used by the
breathy variants, e.g. "f2".."f5") from the clock; `init` reseeds it with 0 and
`synthesize(seed=...)` reseeds it per utterance. espeak-ng also keeps other
state between utterances (e.g. oscillator phases), so the samples of an
utterance depend on what the process spoke before. Output is reproducible for a
fresh process that makes the same calls in the same order;
`mtp_jax.synth` relies on that.

Not thread-safe: use one thread per process.

Example:
  >>> from mtp_jax.synth import espeak
  >>> wav = espeak.synthesize("Hello there.", accent="en-us", variant="f3",
  ...                         rate=160, pitch=55)
  >>> wav.dtype, espeak.NATIVE_SAMPLE_RATE
  (dtype('float32'), 22050)
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
from typing import Sequence

import numpy as np

NATIVE_SAMPLE_RATE = 22050

# espeak_PARAMETER ids and the ranges we accept for them.
_PARAM_IDS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}
PARAM_LIMITS = {"rate": (80, 450), "volume": (0, 200), "pitch": (0, 99),
                "range": (0, 99)}
PARAM_DEFAULTS = {"rate": 175, "volume": 100, "pitch": 50, "range": 50}

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_CHARS_UTF8 = 1


class EspeakError(RuntimeError):
  """The espeak-ng library failed (load, initialise or synthesis)."""


@dataclasses.dataclass(frozen=True)
class Voice:
  """One entry of `espeak_ListVoices`.

  Attributes:
    name: human-readable name, e.g. "English (America)".
    identifier: data-file path, e.g. "gmw/en-US" or "!v/f3" for a variant.
    languages: language codes in priority order, e.g. ("en-us", "en").
    gender: "male", "female" or "" when unspecified.
  """
  name: str
  identifier: str
  languages: tuple[str, ...]
  gender: str

  @property
  def key(self) -> str:
    """The lower-case name `set_voice` accepts: identifier's last component."""
    return self.identifier.rsplit("/", 1)[-1].lower()


class _VoiceStruct(ctypes.Structure):
  _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p),
              ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
              ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
              ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int),
              ("spare", ctypes.c_void_p)]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                                   ctypes.c_int, ctypes.c_void_p)


class _Engine:
  """The per-process library handle, callback and caches."""

  def __init__(self):
    try:
      import espeakng_loader  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise EspeakError("espeakng-loader is not installed; "
                        "`pip install espeakng-loader`") from e
    lib_path = espeakng_loader.get_library_path()
    data_path = espeakng_loader.get_data_path()
    try:
      self.lib = ctypes.CDLL(lib_path)
    except OSError as e:
      raise EspeakError(f"cannot load {lib_path}: {e}") from e
    lib = self.lib
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int,
                                      ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_VoiceStruct)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceStruct))
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                 ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                 ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    # The path argument is the folder that CONTAINS espeak-ng-data.
    parent = os.path.dirname(os.path.abspath(data_path))
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, parent.encode(),
                                 _INITIALIZE_DONT_EXIT)
    if rate != NATIVE_SAMPLE_RATE:
      raise EspeakError(f"espeak_Initialize({parent!r}) returned {rate}, "
                        f"expected the native rate {NATIVE_SAMPLE_RATE}")
    # espeak_Initialize seeds the noise generator (breathy variants such as
    # "f3") from the clock; reseed so that a fresh process is reproducible.
    lib.espeak_ng_SetRandSeed(0)
    self.chunks: list[np.ndarray] = []
    self.callback = _SYNTH_CALLBACK(self._on_audio)  # keep a reference
    lib.espeak_SetSynthCallback(self.callback)
    self.voices = self._list(None)
    spec = _VoiceStruct()
    self._variant_key = ctypes.c_char_p(b"variant")
    spec.languages = ctypes.cast(self._variant_key, ctypes.c_void_p)
    self.variants = self._list(ctypes.byref(spec))

  def _on_audio(self, wav, num_samples, events):
    del events
    if num_samples > 0 and wav:
      self.chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    return 0

  def _list(self, spec) -> tuple[Voice, ...]:
    arr = self.lib.espeak_ListVoices(spec)
    out = []
    i = 0
    while arr[i]:
      v = arr[i].contents
      out.append(Voice(name=(v.name or b"").decode("utf-8", "replace"),
                       identifier=(v.identifier or b"").decode("utf-8", "replace"),
                       languages=_parse_languages(v.languages),
                       gender={1: "male", 2: "female"}.get(v.gender, "")))
      i += 1
    return tuple(out)


def _parse_languages(ptr: int | None) -> tuple[str, ...]:
  """Decodes espeak's `languages` field: (priority byte, code, NUL)* then NUL."""
  if not ptr:
    return ()
  out = []
  offset = 0
  while ctypes.string_at(ptr + offset, 1) != b"\0":
    code = ctypes.string_at(ptr + offset + 1)
    out.append(code.decode("utf-8", "replace"))
    offset += 2 + len(code)
  return tuple(out)


_engine: _Engine | None = None
_engine_pid: int | None = None


def _get() -> _Engine:
  global _engine, _engine_pid
  if _engine is None or _engine_pid != os.getpid():
    _engine = _Engine()
    _engine_pid = os.getpid()
  return _engine


def init() -> int:
  """Loads and initialises espeak-ng once per process; returns the sample rate."""
  _get()
  return NATIVE_SAMPLE_RATE


def version() -> str:
  """The espeak-ng library version, e.g. "1.52.0"."""
  return (_get().lib.espeak_Info(None) or b"").decode("utf-8", "replace")


def set_rand_seed(seed: int) -> None:
  """Reseeds espeak-ng's noise generator (breath noise of some variants)."""
  if not 0 <= int(seed) < 2**31:
    raise ValueError(f"espeak seed={seed!r} is out of range: expected 0..2**31-1")
  _get().lib.espeak_ng_SetRandSeed(int(seed))


def list_voices() -> tuple[Voice, ...]:
  """All language voices (not variants) that espeak-ng knows."""
  return _get().voices


def list_accents(prefix: str = "en") -> list[str]:
  """Voice names usable as `accent`, e.g. "en-us", filtered by a prefix.

  Args:
    prefix: keep names starting with this ("" keeps every language).

  Returns:
    Sorted lower-case names such as ["en", "en-029", "en-gb-scotland", ...].
  """
  return sorted({v.key for v in list_voices() if v.key.startswith(prefix)})


def list_variants() -> list[str]:
  """Voice variant names usable as `variant`, e.g. "f3", "m1", "klatt".

  Variants whose file name holds a space cannot be selected by name and are
  left out.
  """
  return sorted({v.identifier.rsplit("/", 1)[-1] for v in _get().variants
                 if v.identifier and " " not in v.identifier})


def _suggest(valid: Sequence[str], limit: int = 40) -> str:
  shown = ", ".join(valid[:limit])
  return shown + (f", ... ({len(valid)} in all)" if len(valid) > limit else "")


def validate_accent(accent: str) -> str:
  """Returns the canonical (lower-case) accent name or raises ValueError."""
  key = str(accent).strip().lower()
  valid = list_accents("")
  if key not in valid:
    english = [a for a in valid if a.startswith("en")]
    hint = " (use 'en' for British English)" if key == "en-gb" else ""
    raise ValueError(f"unknown espeak accent {accent!r}{hint}; valid English "
                     f"accents: {_suggest(english)} (other languages: see "
                     "list_accents(''))")
  return key


def validate_variant(variant: str) -> str:
  """Returns the variant name as espeak spells it or raises ValueError."""
  valid = list_variants()
  by_lower = {v.lower(): v for v in valid}
  key = str(variant).strip().lower()
  if key not in by_lower:
    raise ValueError(f"unknown espeak voice variant {variant!r}; valid variants: "
                     f"{_suggest(valid, limit=200)}")
  return by_lower[key]


def set_voice(accent: str, variant: str | None = None) -> None:
  """Selects `accent` (e.g. "en-us") with an optional `variant` (e.g. "f3").

  Raises:
    ValueError: unknown accent or variant (the message lists valid names).
    EspeakError: espeak-ng refused a name it listed.
  """
  name = validate_accent(accent)
  if variant:
    name += "+" + validate_variant(variant)
  status = _get().lib.espeak_SetVoiceByName(name.encode())
  if status != 0:
    raise EspeakError(f"espeak_SetVoiceByName({name!r}) failed with status {status}")


def set_params(*, rate: int | None = None, pitch: int | None = None,
               range: int | None = None, volume: int | None = None) -> None:  # pylint: disable=redefined-builtin
  """Sets speaking parameters; None leaves a parameter unchanged.

  Args:
    rate: words per minute, 80..450 (espeak default 175).
    pitch: base pitch, 0..99 (default 50), relative to the voice's own range.
    range: pitch range (intonation), 0..99 (default 50; 0 = monotone).
    volume: amplitude, 0..200 (default 100).

  Raises:
    ValueError: a value outside its range (the message names the parameter).
  """
  values = {"rate": rate, "pitch": pitch, "range": range, "volume": volume}
  for field, value in values.items():
    if value is None:
      continue
    lo, hi = PARAM_LIMITS[field]
    if isinstance(value, bool) or not float(value).is_integer() or not lo <= value <= hi:
      raise ValueError(f"espeak {field}={value!r} is out of range: "
                       f"expected an integer in [{lo}, {hi}]")
  lib = _get().lib
  for field, value in values.items():
    if value is not None:
      status = lib.espeak_SetParameter(_PARAM_IDS[field], int(value), 0)
      if status != 0:
        raise EspeakError(f"espeak_SetParameter({field}={value}) failed "
                          f"with status {status}")


def synthesize(text: str, *, accent: str | None = None, variant: str | None = None,
               rate: int | None = None, pitch: int | None = None,
               range: int | None = None, seed: int | None = None) -> np.ndarray:  # pylint: disable=redefined-builtin
  """Speaks `text` and returns a float32 waveform in [-1, 1] at 22050 Hz.

  Args:
    text: plain UTF-8 text (no SSML).
    accent: if given, selects the voice first (see `set_voice`).
    variant: voice variant used with `accent`.
    rate, pitch, range: if given, set before speaking (see `set_params`).
      Selecting a voice does not reset them.
    seed: if given, reseeds espeak's noise generator first (`set_rand_seed`).

  Returns:
    1-D float32 array (may start and end with silence).

  Raises:
    ValueError: empty text, bad voice or parameter.
    EspeakError: synthesis failed.
  """
  if not isinstance(text, str) or not text.strip():
    raise ValueError(f"text must be a non-empty string, got {text!r}")
  engine = _get()
  if accent is not None:
    set_voice(accent, variant)
  elif variant is not None:
    raise ValueError("variant given without accent")
  set_params(rate=rate, pitch=pitch, range=range)
  if seed is not None:
    set_rand_seed(seed)
  data = text.encode("utf-8")
  engine.chunks = []
  status = engine.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8,
                                   None, None)
  engine.lib.espeak_Synchronize()
  if status != 0:
    raise EspeakError(f"espeak_Synth failed with status {status} for {text!r}")
  chunks, engine.chunks = engine.chunks, []
  if not chunks:
    return np.zeros(0, np.float32)
  return np.concatenate(chunks).astype(np.float32) / 32768.0
