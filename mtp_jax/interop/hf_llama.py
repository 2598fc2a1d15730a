"""Hugging Face `LlamaForCausalLM` checkpoints <-> the Speech-LLaMA decoder's parameters.

A Hugging Face checkpoint directory holds `config.json` and `model.safetensors` (or
shards listed in `model.safetensors.index.json`). The mapping, per layer i
(d = d_model, H/Hkv = query/key-value heads, D = head dim, F = ff_dim, V = vocab):

  HF tensor (torch [out, in])                      decoder parameter
  model.embed_tokens.weight          [V, d]       embed/embedding            [V, d]
  model.layers.i.input_layernorm.weight [d]       decoder/layer{i}/attn_norm/scale
  model.layers.i.self_attn.q_proj.weight [H*D, d] decoder/layer{i}/attn/q/kernel [d, H, D]
  model.layers.i.self_attn.k_proj.weight [Hkv*D,d] .../attn/k/kernel          [d, Hkv, D]
  model.layers.i.self_attn.v_proj.weight [Hkv*D,d] .../attn/v/kernel          [d, Hkv, D]
  model.layers.i.self_attn.o_proj.weight [d, H*D] .../attn/o/kernel           [H, D, d]
  model.layers.i.post_attention_layernorm.weight  .../mlp_norm/scale
  model.layers.i.mlp.gate_proj.weight [F, d]      .../mlp/wi_gate/kernel      [d, F]
  model.layers.i.mlp.up_proj.weight   [F, d]      .../mlp/wi_up/kernel        [d, F]
  model.layers.i.mlp.down_proj.weight [d, F]      .../mlp/wo/kernel           [F, d]
  model.norm.weight                  [d]          final_norm/scale
  lm_head.weight                     [V, d]       unembed/proj/kernel        [d, V] (untied)

Both sides use the half-split ("rotate_half") rotary convention with inverse
frequencies theta^(-2i/D), RMSNorm x * rsqrt(mean(x^2) + eps) * scale and attention
scale 1/sqrt(D), and HF lays the q/k/v output rows out as (head, head_dim); so the
mapping is transposes and reshapes only, no rotary permutation. (Checkpoints converted
from Meta's original interleaved format by HF's script are already permuted.)

With `scan_layers=True` the layers live under decoder/layers with a leading layer axis.

Not supported (raise HFConversionError): rotary scaling other than "default"
(llama3, yarn, linear, dynamic), attention/MLP biases, head_dim != hidden/heads,
activations other than SiLU.

CLI:
  python -m mtp_jax.interop.hf_llama import --hf_dir HF_DIR [--out CKPT_DIR] [--scan_layers]
      prints the DecoderConfig as `--config.model.decoder.*` overrides; with --out also
      saves the converted decoder parameters ({"params": ...}) as an orbax checkpoint.
  python -m mtp_jax.interop.hf_llama export --config configs/small.py:K=4 \
      --checkpoint CKPT_DIR --out HF_DIR [--dtype bfloat16]
      reads the parameters from an orbax checkpoint (any tree holding a subtree with
      "embed", "decoder" and "final_norm") and writes a HF checkpoint directory.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.config import DecoderConfig, ModelConfig
from mtp_jax.model.layers import dtype_of

PathLike = str | os.PathLike
Params = Any

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

# Fields that must agree between a HF config and our DecoderConfig when loading.
SHAPE_FIELDS = ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "ff_dim")
VALUE_FIELDS = ("rope_theta", "norm_eps")


class HFConversionError(ValueError):
  """A checkpoint or config that cannot be converted; the message names file and field."""


# ------------------------------------------------------------------------------ config


def read_hf_config(hf_dir: PathLike) -> dict[str, Any]:
  """Reads `hf_dir/config.json` as a dict."""
  path = pathlib.Path(hf_dir) / CONFIG_NAME
  if not path.exists():
    raise HFConversionError(f"{path}: not found (expected a Hugging Face checkpoint directory)")
  with open(path) as f:
    return json.load(f)


def _rope_theta(hf: Mapping[str, Any], src: str) -> float:
  """The rotary base from either the new `rope_parameters` or legacy `rope_theta` fields."""
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  for field, d in (("rope_parameters", params), ("rope_scaling", scaling)):
    rope_type = d.get("rope_type", d.get("type", "default"))
    if rope_type != "default":
      raise HFConversionError(
          f"{src}: {field}.rope_type={rope_type!r}: only unscaled ('default') rotary "
          "positions are supported by mtp_jax.model.layers.apply_rope")
  theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
  return float(theta)


def decoder_config_from_hf(hf_config: Mapping[str, Any] | PathLike, *,
                           max_text_len: int | None = None) -> DecoderConfig:
  """A DecoderConfig equal in architecture to a HF LLaMA config.

  Args:
    hf_config: the parsed config.json, or the checkpoint directory holding it.
    max_text_len: our text-slot budget (default: DecoderConfig's default).
  Returns:
    DecoderConfig (dropout 0).
  Raises:
    HFConversionError naming the config field that we cannot represent.
  """
  if isinstance(hf_config, (str, os.PathLike)):
    src = str(pathlib.Path(hf_config) / CONFIG_NAME)
    hf = read_hf_config(hf_config)
  else:
    src, hf = CONFIG_NAME, dict(hf_config)
  model_type = hf.get("model_type", "llama")
  if model_type != "llama":
    raise HFConversionError(f"{src}: model_type={model_type!r}: expected 'llama'")
  for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads"):
    if field not in hf:
      raise HFConversionError(f"{src}: missing field {field!r}")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise HFConversionError(f"{src}: hidden_act={act!r}: only 'silu' (SwiGLU) is supported")
  for field in ("attention_bias", "mlp_bias"):
    if hf.get(field, False):
      raise HFConversionError(f"{src}: {field}=true: the decoder has no biases")
  d, h = int(hf["hidden_size"]), int(hf["num_attention_heads"])
  head_dim = hf.get("head_dim")
  if head_dim is not None and int(head_dim) * h != d:
    raise HFConversionError(
        f"{src}: head_dim={head_dim}: the decoder needs head_dim = hidden_size / "
        f"num_attention_heads = {d / h:g}")
  kw = {} if max_text_len is None else {"max_text_len": int(max_text_len)}
  return DecoderConfig(
      vocab_size=int(hf["vocab_size"]), d_model=d, num_layers=int(hf["num_hidden_layers"]),
      num_heads=h, num_kv_heads=int(hf.get("num_key_value_heads") or h),
      ff_dim=int(hf["intermediate_size"]), rope_theta=_rope_theta(hf, src),
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), dropout=0.0, **kw)


def decoder_overrides(hf_dir: PathLike) -> dict[str, Any]:
  """`config.model.decoder` fields that make a model match a HF checkpoint's architecture.

  Use as `config.model.decoder.update(**decoder_overrides(hf_dir))` before building
  the ModelConfig (keeps max_text_len and dropout).
  """
  dc = decoder_config_from_hf(hf_dir)
  return {k: getattr(dc, k) for k in SHAPE_FIELDS + VALUE_FIELDS + ("tie_embeddings",)}


def hf_config_from_decoder(dc: DecoderConfig, *, dtype: str = "float32",
                           max_position_embeddings: int = 4096,
                           bos_token_id: int = 1, eos_token_id: int = 2,
                           pad_token_id: int = 0) -> dict[str, Any]:
  """A HF LlamaForCausalLM config.json dict for our decoder (token ids: mtp_jax's)."""
  return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": dc.vocab_size,
      "hidden_size": dc.d_model,
      "intermediate_size": dc.ff_dim,
      "num_hidden_layers": dc.num_layers,
      "num_attention_heads": dc.num_heads,
      "num_key_value_heads": dc.num_kv_heads,
      "head_dim": dc.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": dc.norm_eps,
      # Both spellings: transformers >= 5 reads rope_parameters, older ones rope_theta.
      "rope_theta": dc.rope_theta,
      "rope_parameters": {"rope_type": "default", "rope_theta": dc.rope_theta},
      "rope_scaling": None,
      "tie_word_embeddings": dc.tie_embeddings,
      "attention_bias": False,
      "mlp_bias": False,
      "attention_dropout": 0.0,
      "max_position_embeddings": max_position_embeddings,
      "bos_token_id": bos_token_id,
      "eos_token_id": eos_token_id,
      "pad_token_id": pad_token_id,
      "dtype": dtype,
      "torch_dtype": dtype,  # the name before transformers 5
      "use_cache": True,
  }


# ------------------------------------------------------------------------------ tensors


def load_hf_tensors(hf_dir: PathLike) -> dict[str, np.ndarray]:
  """All tensors of a safetensors checkpoint (single file or sharded with an index)."""
  import ml_dtypes  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (bfloat16 for numpy)
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(hf_dir)
  index = root / INDEX_NAME
  if index.exists():
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif (root / WEIGHTS_NAME).exists():
    files = [WEIGHTS_NAME]
  else:
    files = sorted(p.name for p in root.glob("*.safetensors"))
  if not files:
    raise HFConversionError(f"{root}: no {WEIGHTS_NAME}, {INDEX_NAME} or *.safetensors found")
  out = {}
  for name in files:
    path = root / name
    if not path.exists():
      raise HFConversionError(f"{index}: lists {name}, which does not exist")
    with safe_open(str(path), framework="numpy") as f:
      for key in f.keys():
        out[key] = f.get_tensor(key)
  return out


def _layer_names(i: int) -> dict[tuple[str, ...], str]:
  p = f"model.layers.{i}."
  return {
      ("attn_norm", "scale"): p + "input_layernorm.weight",
      ("attn", "q", "kernel"): p + "self_attn.q_proj.weight",
      ("attn", "k", "kernel"): p + "self_attn.k_proj.weight",
      ("attn", "v", "kernel"): p + "self_attn.v_proj.weight",
      ("attn", "o", "kernel"): p + "self_attn.o_proj.weight",
      ("mlp_norm", "scale"): p + "post_attention_layernorm.weight",
      ("mlp", "wi_gate", "kernel"): p + "mlp.gate_proj.weight",
      ("mlp", "wi_up", "kernel"): p + "mlp.up_proj.weight",
      ("mlp", "wo", "kernel"): p + "mlp.down_proj.weight",
  }


def _to_ours(key: tuple[str, ...], w: np.ndarray, dc: DecoderConfig) -> np.ndarray:
  """One HF layer tensor -> our layout."""
  d, h, hkv, hd = dc.d_model, dc.num_heads, dc.num_kv_heads, dc.head_dim
  name = key[-2] if key[-1] == "kernel" else key[0]
  if name == "q":
    return w.T.reshape(d, h, hd)
  if name in ("k", "v"):
    return w.T.reshape(d, hkv, hd)
  if name == "o":
    return w.T.reshape(h, hd, d)
  if key[-1] == "kernel":
    return w.T
  return w


def _to_hf(key: tuple[str, ...], w: np.ndarray, dc: DecoderConfig) -> np.ndarray:
  """One of our layer parameters -> HF layout [out, in]."""
  d = dc.d_model
  name = key[-2] if key[-1] == "kernel" else key[0]
  if name in ("q", "k", "v"):
    return w.reshape(d, -1).T
  if name == "o":
    return w.reshape(-1, d).T
  if key[-1] == "kernel":
    return w.T
  return w


def _hf_shape(key: tuple[str, ...], dc: DecoderConfig) -> tuple[int, ...]:
  d, f, hd = dc.d_model, dc.ff_dim, dc.head_dim
  return {
      "attn_norm": (d,), "mlp_norm": (d,),
      "q": (dc.num_heads * hd, d), "k": (dc.num_kv_heads * hd, d),
      "v": (dc.num_kv_heads * hd, d), "o": (d, dc.num_heads * hd),
      "wi_gate": (f, d), "wi_up": (f, d), "wo": (d, f),
  }[key[0] if key[0].endswith("norm") else key[1]]


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict:
  out: dict = {}
  for path, v in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return out


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def hf_to_decoder_params(tensors: Mapping[str, np.ndarray], dc: DecoderConfig, *,
                         scan_layers: bool = False, source: str = "checkpoint") -> dict:
  """HF LLaMA tensors -> the decoder part of our parameter tree (raw numpy arrays).

  Args:
    tensors: HF state dict (name -> array), e.g. from `load_hf_tensors`.
    dc: the architecture (e.g. `decoder_config_from_hf`).
    scan_layers: stack the layers under decoder/layers (for ModelConfig.scan_layers).
    source: named in error messages.
  Returns:
    {"embed": {"embedding"}, "decoder": {...}, "final_norm": {"scale"}} plus
    {"unembed": {"proj": {"kernel" [d, V]}}} when dc is untied: the contents of
    params["params"] for those modules.
  """
  def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in tensors:
      raise HFConversionError(f"{source}: missing tensor {name!r}")
    w = np.asarray(tensors[name])
    if w.shape != shape:
      raise HFConversionError(f"{source}: tensor {name!r} has shape {w.shape}, the config "
                              f"implies {shape}")
    return w

  d, v = dc.d_model, dc.vocab_size
  layers = []
  for i in range(dc.num_layers):
    layers.append(_nest({k: _to_ours(k, get(n, _hf_shape(k, dc)), dc)
                         for k, n in _layer_names(i).items()}))
  if scan_layers:
    decoder = {"layers": jax.tree.map(lambda *xs: np.stack(xs), *layers)}
  else:
    decoder = {f"layer{i}": l for i, l in enumerate(layers)}
  out = {"embed": {"embedding": get("model.embed_tokens.weight", (v, d))},
         "decoder": decoder,
         "final_norm": {"scale": get("model.norm.weight", (d,))}}
  if not dc.tie_embeddings:
    if "lm_head.weight" not in tensors:
      raise HFConversionError(f"{source}: tie_word_embeddings is false but 'lm_head.weight' "
                              "is missing")
    out["unembed"] = {"proj": {"kernel": get("lm_head.weight", (v, d)).T}}
  return out


def _decoder_root(params: Params, where: str = "params") -> Mapping:
  """The mapping holding "embed"/"decoder"/"final_norm" (accepts params or params["params"])."""
  if isinstance(params, Mapping) and "params" in params and "decoder" not in params:
    params = params["params"]
  if not (isinstance(params, Mapping) and {"embed", "decoder", "final_norm"} <= set(params)):
    keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
    raise HFConversionError(f"{where}: expected a SpeechLLaMA parameter tree with 'embed', "
                            f"'decoder' and 'final_norm' (under 'params'); got {keys}")
  return params


def decoder_params_to_hf(params: Params, dc: DecoderConfig) -> dict[str, np.ndarray]:
  """Our parameters (boxed or not, scanned or not) -> HF LLaMA state dict (numpy).

  Args:
    params: the model variables ({"params": ...}) or params["params"]; only the embed,
      decoder, final_norm and unembed entries are read (MTP heads 2..K are dropped).
    dc: the decoder's config.
  Returns:
    name -> contiguous array in HF layout; no "lm_head.weight" when tied.
  """
  root = {k: v for k, v in _decoder_root(params).items()
          if k in ("embed", "decoder", "final_norm", "unembed")}
  root = jax.tree.map(np.asarray, nn.unbox(root))
  dec = root["decoder"]
  if "layers" in dec:
    layers = [jax.tree.map(lambda x, i=i: x[i], dec["layers"]) for i in range(dc.num_layers)]
  else:
    layers = [dec[f"layer{i}"] for i in range(dc.num_layers)]
  out = {"model.embed_tokens.weight": root["embed"]["embedding"],
         "model.norm.weight": root["final_norm"]["scale"]}
  for i, layer in enumerate(layers):
    flat = _flatten(layer)
    for key, name in _layer_names(i).items():
      out[name] = _to_hf(key, flat[key], dc)
  if not dc.tie_embeddings:
    out["lm_head.weight"] = root["unembed"]["proj"]["kernel"].T
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def save_hf_checkpoint(params: Params, dc: DecoderConfig, out_dir: PathLike, *,
                       dtype: str | None = None, max_shard_bytes: int = 4 << 30,
                       **config_kw) -> pathlib.Path:
  """Writes a HF LlamaForCausalLM directory (config.json + safetensors [+ index]).

  Args:
    params: as for `decoder_params_to_hf`.
    dc: the decoder's config.
    out_dir: created if missing.
    dtype: "float32" / "bfloat16" / "float16" for the stored tensors (default: as is).
    max_shard_bytes: split into model-0000i-of-0000n.safetensors beyond this size.
    **config_kw: passed to `hf_config_from_decoder` (e.g. max_position_embeddings).
  Returns:
    out_dir as a Path.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  state = decoder_params_to_hf(params, dc)
  if dtype is not None:
    np_dtype = np.dtype(dtype_of(dtype))
    state = {k: v.astype(np_dtype) for k, v in state.items()}
  stored = dtype or str(next(iter(state.values())).dtype)
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, w in state.items():
    if shards[-1] and size + w.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = w
    size += w.nbytes
  meta = {"format": "pt"}
  if len(shards) == 1:
    save_file(shards[0], str(out / WEIGHTS_NAME), metadata=meta)
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(shard, str(out / fname), metadata=meta)
      weight_map.update({k: fname for k in shard})
    total = sum(w.nbytes for w in state.values())
    with open(out / INDEX_NAME, "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  with open(out / CONFIG_NAME, "w") as f:
    json.dump(hf_config_from_decoder(dc, dtype=stored, **config_kw), f, indent=2)
  return out


# ------------------------------------------------------------------------------ loading


def _place(old: Any, value: np.ndarray, where: str) -> Any:
  """`value` in the place of leaf `old`: same shape, dtype, sharding and boxing."""
  boxed = isinstance(old, nn.meta.AxisMetadata)
  raw = old.unbox() if boxed else old
  if tuple(raw.shape) != tuple(value.shape):
    raise HFConversionError(f"{where}: shape {tuple(value.shape)} from the checkpoint, "
                            f"{tuple(raw.shape)} in the model")
  value = np.asarray(value).astype(raw.dtype)
  sharding = getattr(raw, "sharding", None)
  # An uncommitted array (plain init on the default device) stays uncommitted.
  if isinstance(sharding, jax.sharding.Sharding) and getattr(raw, "committed", True):
    new = jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])
  else:
    new = jnp.asarray(value)
  return old.replace_boxed(new) if boxed else new


def _check_compatible(dc: DecoderConfig, hf_dc: DecoderConfig, src: str) -> None:
  for field in SHAPE_FIELDS + VALUE_FIELDS:
    ours, theirs = getattr(dc, field), getattr(hf_dc, field)
    if ours != theirs:
      raise HFConversionError(
          f"model.decoder.{field}={ours!r} but {src} implies {theirs!r}: set "
          f"--config.model.decoder.{field}={theirs!r} (see decoder_config_from_hf)")
  if dc.tie_embeddings and not hf_dc.tie_embeddings:
    raise HFConversionError(
        f"model.decoder.tie_embeddings=True but {src} has an untied lm_head: set "
        "--config.model.decoder.tie_embeddings=False")


def load_decoder_into(params: Params, hf_dir: PathLike, cfg: ModelConfig, *,
                      copy_unembed_to_heads: bool = False) -> Params:
  """Overwrites the decoder of a SpeechLLaMA parameter tree with a HF LLaMA checkpoint.

  Replaces embed, every decoder layer, final_norm and (untied) unembed; the encoder,
  projector and MTP heads keep their values. Each written leaf keeps the dtype,
  sharding and `nn.Partitioned` boxing of the leaf it replaces. A tied HF checkpoint
  loaded into an untied model initializes unembed with the embedding's transpose.

  Args:
    params: model variables ({"params": ...}, boxed or not) from `model.init` or a
      restored train state; not modified.
    hf_dir: directory with config.json and safetensors weights.
    cfg: the model's config; its decoder must match the checkpoint's architecture
      (fields named in the error otherwise; see `decoder_config_from_hf`).
    copy_unembed_to_heads: for `independent` MTP heads, also set each head's own
      vocabulary projection (mtp/out{k}) to the checkpoint's unembedding.
  Returns:
    A new tree of the same structure with the checkpoint's decoder.
  """
  return load_tensors_into(params, read_hf_config(hf_dir), load_hf_tensors(hf_dir), cfg,
                           str(hf_dir), copy_unembed_to_heads=copy_unembed_to_heads)


def load_tensors_into(params: Params, hf_config: Mapping[str, Any],
                      tensors: Mapping[str, np.ndarray], cfg: ModelConfig, source: str, *,
                      copy_unembed_to_heads: bool = False) -> Params:
  """`load_decoder_into` from an already read HF config dict and HF-named tensors (the
  GGUF importer's entry point)."""
  hf_dc = decoder_config_from_hf(hf_config)
  _check_compatible(cfg.decoder, hf_dc, source)
  new = hf_to_decoder_params(tensors, hf_dc, scan_layers=cfg.scan_layers, source=source)
  if not cfg.decoder.tie_embeddings and "unembed" not in new:
    new["unembed"] = {"proj": {"kernel": new["embed"]["embedding"].T}}
  flat_new = _flatten(new)
  if copy_unembed_to_heads and cfg.mtp.head_type == "independent":
    u = flat_new.get(("unembed", "proj", "kernel"), new["embed"]["embedding"].T)
    for k in range(2, cfg.mtp.num_heads + 1):
      flat_new[("mtp", f"out{k}", "kernel")] = u

  return replace_decoder(params, flat_new, f"{source} (scan_layers={cfg.scan_layers})",
                         "a LLaMA checkpoint")


def replace_decoder(params: Params, flat_new: Mapping[tuple[str, ...], Any], source: str,
                    what: str) -> Params:
  """`params` (boxed or not, with or without the "params" level) with every decoder leaf
  (embed, decoder, final_norm, unembed) replaced by `flat_new` [path tuple -> array],
  each keeping the dtype, sharding and boxing of the leaf it replaces. A decoder leaf
  that `flat_new` lacks, or a new leaf our model lacks, is an error naming it."""
  has_top = isinstance(params, Mapping) and "params" in params and "decoder" not in params
  root = dict(_decoder_root(params))
  owned = {"embed", "decoder", "final_norm", "unembed"}
  flat_old = _flatten(root)  # boxed leaves (nn.Partitioned) are not Mappings
  missing = [p for p in flat_new if p not in flat_old]
  if missing:
    raise HFConversionError(f"params: no leaf params/{'/'.join(missing[0])} to load "
                            f"{source} into")
  # LoRA adapters (lora_a / lora_b beside a kernel) are not the checkpoint's: kept.
  untouched = [p for p in flat_old if p[0] in owned and p not in flat_new
               and p[-1] not in ("lora_a", "lora_b")]
  if untouched:
    raise HFConversionError(f"params/{'/'.join(untouched[0])}: no counterpart in {what} "
                            "(has the decoder gained a parameter?)")
  out = dict(flat_old)
  for path, value in flat_new.items():
    out[path] = _place(flat_old[path], value, "params/" + "/".join(path))
  tree = _rebuild(root, out)
  if has_top:
    return dict(params, params=tree)
  return tree


def _rebuild(tree: Mapping, flat: Mapping[tuple[str, ...], Any],
             prefix: tuple[str, ...] = ()) -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out[k] = _rebuild(v, flat, prefix + (k,))
    else:
      out[k] = flat[prefix + (k,)]
  return out


# ------------------------------------------------------------------------------ text-only forward


def _text_forward(m, tokens):
  b, t = tokens.shape
  x = m.embed(tokens).astype(dtype_of(m.cfg.dtype))
  pos = jnp.broadcast_to(jnp.arange(t)[None], (b, t))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool))[None], (b, t, t))
  h, _ = m.decoder(x, pos, mask)
  return m.unembed(m.final_norm(h)).astype(jnp.float32)


def text_logits(model: nn.Module, params: Params, tokens: jax.Array) -> jax.Array:
  """Head-1 logits of the decoder alone (no audio prefix), as a HF LLaMA computes them.

  Args:
    model: a SpeechLLaMA.
    params: its variables (only embed/decoder/final_norm/unembed are used).
    tokens: [B, T] int32 token ids at rotary positions 0..T-1.
  Returns:
    [B, T, V] float32 logits.
  """
  return model.apply(params, tokens, method=_text_forward)


def init_decoder_params(model: nn.Module, key: jax.Array, tokens: jax.Array) -> Params:
  """Initializes only the text path (embed, decoder, final_norm, unembed): no encoder."""
  return jax.jit(lambda k, t: model.init(k, t, method=_text_forward))(key, tokens)


# ------------------------------------------------------------------------------ CLI


def _find_decoder_tree(tree: Any) -> Mapping | None:
  if isinstance(tree, Mapping):
    if {"embed", "decoder", "final_norm"} <= set(tree):
      return tree
    for v in tree.values():
      found = _find_decoder_tree(v)
      if found is not None:
        return found
  return None




def _cli_import(flags) -> None:
  dc = decoder_config_from_hf(flags.hf_dir)
  print(f"# {flags.hf_dir}: {dc}")
  print(" ".join(f"--config.model.decoder.{k}={v}"
                 for k, v in decoder_overrides(flags.hf_dir).items()))
  if flags.out:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    tree = hf_to_decoder_params(load_hf_tensors(flags.hf_dir), dc,
                                scan_layers=flags.scan_layers, source=flags.hf_dir)
    path = pathlib.Path(flags.out).resolve()
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(path, {"params": tree})
    print(f"# wrote decoder parameters to {path}")


def _cli_export(flags, config) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if config is None:
    raise HFConversionError("export: --config is required (the model's config file)")
  cfg = ModelConfig.from_config(config.model)
  path = pathlib.Path(flags.checkpoint).resolve()
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.restore(path)
  root = _find_decoder_tree(tree)
  if root is None:
    raise HFConversionError(f"{path}: no subtree with 'embed', 'decoder' and 'final_norm'")
  out = save_hf_checkpoint(root, cfg.decoder, flags.out, dtype=flags.dtype or None)
  print(f"# wrote {out}")


def main() -> None:
  """`python -m mtp_jax.interop.hf_llama import|export ...` (flags defined only here)."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("hf_dir", None, "import: HF checkpoint directory.")
  flags.DEFINE_string("out", None, "import: orbax output dir; export: HF output dir.")
  flags.DEFINE_bool("scan_layers", False, "import: stack layers (ModelConfig.scan_layers).")
  flags.DEFINE_string("checkpoint", None, "export: orbax checkpoint holding the params.")
  flags.DEFINE_string("dtype", "", "export: stored dtype (float32/bfloat16/float16).")
  config_flags.DEFINE_config_file("config", None, "export: model config file[:arg].")
  fl = flags.FLAGS

  def run(argv):
    if len(argv) != 2 or argv[1] not in ("import", "export"):
      raise app.UsageError("usage: python -m mtp_jax.interop.hf_llama import|export [flags]")
    if argv[1] == "import":
      if not fl.hf_dir:
        raise app.UsageError("import needs --hf_dir")
      _cli_import(fl)
    else:
      if not (fl.checkpoint and fl.out):
        raise app.UsageError("export needs --config, --checkpoint and --out")
      _cli_export(fl, fl.config)

  app.run(run)


if __name__ == "__main__":
  main()
