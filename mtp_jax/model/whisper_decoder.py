"""Whisper's text decoder in flax.linen, as a Speech-LLaMA decoder family (`decoder.type=whisper`).

Pre-LayerNorm blocks: causal self-attention over the transcript, cross-attention over
the audio tokens, GELU MLP; learned absolute positions for the text; a final LayerNorm;
the vocabulary projection tied to the token embedding. It brings the language model a
small from-scratch decoder lacks: imported from OpenAI Whisper (`interop.whisper`,
`train.decoder_init`), it has read 680k hours of transcripts.

The stack keeps `DecoderStack`'s contract, so the model, the KV cache and every
decoding strategy are unchanged. Its input is the same `[P audio tokens][T text]`
sequence and the same masks; the audio tokens are cross-attention memory instead of a
causal prefix. In the cache (`mtp_jax.model.kv_cache.KVCache`) the audio slots [0, P) of
layer l hold that layer's cross-attention keys/values, the text slots its self-attention
ones; a mask over the cache splits the same way (audio columns: cross, text: self).
Text positions are 0-based (`DecoderSpec.text_after_audio=False`).

Parameter names (d = d_model, H heads, D = d/H, F = ff_dim, N = max_positions):
  pos_embed [N, d];
  layer{i}/{self,cross}_norm, layer{i}/{self,cross}_{q,k,v} [d, H, D] (bias on q and v),
  layer{i}/{self,cross}_o [H, D, d] (+bias), layer{i}/mlp_norm, layer{i}/fc1 [d, F],
  layer{i}/fc2 [F, d] (+biases). The token embedding and the final norm are the model's.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mtp_jax.config import DecoderConfig, ModelConfig
from mtp_jax.model.kv_cache import write_slots
from mtp_jax.model.layers import ACT, constrain, dense, TORCH_LN_EPS, dot_product_attention, dtype_of, layer_norm


def layer_params(cfg: ModelConfig) -> int:
  """Exact parameters of one block."""
  c = cfg.decoder
  d, f = c.d_model, c.ff_dim
  attn = 4 * d * d + 3 * d  # q, k, v, o; biases on q, v, o
  return 2 * attn + (d * f + f) + (f * d + d) + 3 * 2 * d


def token_matmul_params(cfg: ModelConfig) -> int:
  """Matmul weights per text token and layer: self q, k, v, o; cross q, o; the MLP (the
  cross-attention's k, v run once per audio token, in the prefill)."""
  c = cfg.decoder
  return 6 * c.d_model * c.d_model + 2 * c.d_model * c.ff_dim


class WhisperDecoderLayer(nn.Module):
  """One block. Self-attention keys come from the new tokens (no cache) or the cache's
  text slots; cross-attention keys from `audio` (no cache / prefill) or the cache's
  audio slots."""
  cfg: DecoderConfig
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, audio, self_mask, cross_mask, cache=None, write_index=None):
    """x [B, T, d] text; audio [B, P, d] (None: decode from the cache);
    self_mask [B, T, T] and cross_mask [B, T, P] (no cache / prefill), or both [B, T, S]
    over the whole cache (decode: the self mask covers text slots only, the cross mask
    audio slots only, so neither attention slices the cache);
    cache {"k", "v"} [B * H, S, D] or None. Returns (x, new cache or None)."""
    c = self.cfg
    h, hd = c.num_heads, c.d_model // c.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def proj(name, kind):
      axes = {"q": ("embed", "heads", "head_dim"), "k": ("embed", "kv_heads", "head_dim"),
              "v": ("embed", "kv_heads", "head_dim")}[kind]
      return dense((h, hd), axes, name=name, use_bias=kind != "k", **kw)

    def out(name, o):
      return dense(c.d_model, ("heads", "head_dim", "embed"), axis=(-2, -1), name=name,
                   use_bias=True, **kw)(o)

    def attend(q, k, v, mask, heads_first=False):
      return dot_product_attention(q, k.astype(self.dtype), v.astype(self.dtype), mask,
                                   heads_first=heads_first)

    drop = lambda y: nn.Dropout(c.dropout)(y, deterministic=self.deterministic)
    decoding = audio is None
    y = layer_norm(self.dtype, self.param_dtype, name="self_norm", epsilon=TORCH_LN_EPS)(x)
    q, ks, vs = proj("self_q", "q")(y), proj("self_k", "k")(y), proj("self_v", "v")(y)
    new_cache = None
    if decoding:  # the new keys go to their slots; the cache's text slots are the keys
      new_cache = {"k": write_slots(cache["k"], ks, write_index),
                   "v": write_slots(cache["v"], vs, write_index)}
      o = attend(q, new_cache["k"], new_cache["v"], self_mask, heads_first=True)
    else:
      o = attend(q, ks, vs, self_mask)
    x = x + drop(out("self_o", o))
    y = layer_norm(self.dtype, self.param_dtype, name="cross_norm", epsilon=TORCH_LN_EPS)(x)
    q = proj("cross_q", "q")(y)
    if decoding:
      o = attend(q, new_cache["k"], new_cache["v"], cross_mask, heads_first=True)
    else:
      kc, vc = proj("cross_k", "k")(audio), proj("cross_v", "v")(audio)
      o = attend(q, kc, vc, cross_mask)
      if cache is not None:  # prefill: [cross k/v of the audio][self k/v of the text]
        new_cache = {"k": write_slots(cache["k"], jnp.concatenate([kc, ks], 1), write_index),
                     "v": write_slots(cache["v"], jnp.concatenate([vc, vs], 1), write_index)}
    x = x + drop(out("cross_o", o))
    y = layer_norm(self.dtype, self.param_dtype, name="mlp_norm", epsilon=TORCH_LN_EPS)(x)
    y = dense(c.ff_dim, ("embed", "mlp"), name="fc1", use_bias=True, **kw)(y)
    y = constrain(nn.gelu(y, approximate=False),
                  ("activation_batch", "activation_length", "activation_mlp"))
    y = dense(c.d_model, ("mlp", "embed"), name="fc2", use_bias=True, **kw)(y)
    return constrain(x + drop(y), ACT), new_cache


class WhisperDecoderStack(nn.Module):
  """All blocks plus the text positional table; `DecoderStack`'s contract (see module doc).

  `num_audio` (static) is P: the audio tokens leading `x` (full pass, prefill) or the
  cache's audio slots (decode)."""
  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, positions, mask, cache=None, write_index=None, attend_cache=True,
               reduction=None, num_audio: int = 0):
    """Args as `DecoderStack.__call__`; `positions` of text tokens are 0-based.
    Returns (hidden [B, T, d], new cache or None); a full pass or a prefill returns the
    audio tokens unchanged in front of the text's hidden states."""
    mc, c = self.cfg, self.cfg.decoder
    if reduction is not None:
      raise ValueError("model.decoder.type='whisper' cross-attends to the audio tokens; "
                       "prefill token reduction (model.reduction) needs decoder.type='llama'")
    if mask.ndim == 4:
      raise ValueError("a per-layer attention mask (token reduction) needs "
                       "decoder.type='llama'")
    dtype, pdtype = dtype_of(mc.dtype), dtype_of(mc.param_dtype)
    p = num_audio
    decoding = cache is not None and attend_cache
    if decoding:
      audio, text, text_pos = None, x, positions
      query_mask = mask
    else:
      audio, text, text_pos = x[:, :p], x[:, p:], positions[:, p:]
      query_mask = mask[:, p:]
    if decoding:  # full-width masks over the cache: audio columns cross, text ones self
      is_audio = jnp.arange(query_mask.shape[-1]) < p
      cross_mask, self_mask = query_mask & is_audio, query_mask & ~is_audio
    else:
      cross_mask, self_mask = query_mask[..., :p], query_mask[..., p:]
    table = self.param("pos_embed", nn.with_logical_partitioning(
        nn.initializers.normal(stddev=0.01), (None, "embed")),
        (c.max_positions, c.d_model), pdtype)
    # The table is tiny (max_positions x d): read it whole (replicated), so the gather
    # comes out batch-sharded like `text` instead of the table's embed-sharded layout,
    # which XLA's partitioner could only convert by full rematerialization.
    table = constrain(table, (None, None))
    h = text + jnp.take(table, text_pos, axis=0, mode="clip").astype(text.dtype)
    h = constrain(h, ACT)
    new_k, new_v = [], []
    for i in range(c.num_layers):
      layer_cache = None if cache is None else {"k": cache["k"][i], "v": cache["v"][i]}
      h, nc = WhisperDecoderLayer(c, dtype, pdtype, self.deterministic, name=f"layer{i}")(
          h, audio, self_mask, cross_mask, layer_cache, write_index)
      if nc is not None:
        new_k.append(nc["k"])
        new_v.append(nc["v"])
    new_cache = None if cache is None else {"k": tuple(new_k), "v": tuple(new_v)}
    if not decoding:
      h = jnp.concatenate([audio.astype(h.dtype), h], axis=1)
    return h, new_cache
