"""The one place for parameter and FLOPs accounting (analytical, from the config).

`python -m mtp_jax.flops --config configs/paper.py` prints a report. Counts are
exact for parameters (a test checks them against `jax.eval_shape(model.init)`).
FLOPs count a multiply-add as 2 and cover matmuls (projections, attention scores and
values, unembedding); norms, activations and the FFT frontend are ignored.
"""
from __future__ import annotations

from mtp_jax.config import ModelConfig, projector_block_config
from mtp_jax.model import decoders
from mtp_jax.model import encoder
from mtp_jax.model import encoders


def _dense(n_in: int, n_out: int, bias: bool = False) -> int:
  return n_in * n_out + (n_out if bias else 0)


def encoder_params(cfg: ModelConfig) -> int:
  """The speech encoder's parameters (its family's formula, `mtp_jax.model.encoders`)."""
  return encoders.get(cfg.encoder.type).num_params(cfg)


def projector_params(cfg: ModelConfig) -> int:
  if cfg.projector.type == "none":
    return 0
  proj = cfg.projector
  hidden = proj.hidden or cfg.decoder.d_model
  n = _dense(proj.stack * cfg.encoder.d_model, hidden, True) + _dense(
      hidden, cfg.decoder.d_model, True)
  if proj.layers:
    n += proj.layers * encoder.block_params(projector_block_config(cfg)) + _dense(
        hidden, hidden, True)
  return n + (cfg.decoder.d_model if proj.out_rms > 0 else 0)


def decoder_layer_params(cfg: ModelConfig) -> int:
  """One decoder layer (its family's formula, `mtp_jax.model.decoders`)."""
  return decoders.get(cfg.decoder.type).layer_params(cfg)


def decoder_params(cfg: ModelConfig) -> int:
  """Embedding + layers + final norm + head-1 unembedding (if untied)."""
  c, spec = cfg.decoder, decoders.get(cfg.decoder.type)
  n = (c.vocab_size * c.d_model + c.num_layers * decoder_layer_params(cfg)
       + spec.final_norm_params(cfg) + spec.extra_params(cfg))
  if not c.tie_embeddings:
    n += c.d_model * c.vocab_size
  return n


def mtp_head_params(cfg: ModelConfig) -> int:
  """Parameters of heads 2..K (head 1 is the decoder's unembedding)."""
  c, k = cfg.decoder, cfg.mtp.num_heads
  d, v = c.d_model, c.vocab_size
  per = {"independent": _dense(d, d, True) + d * v,
         "latent": d * d + d,
         "sequential": _dense(2 * d, d, True) + d}[cfg.mtp.head_type]
  return (k - 1) * per


def ctc_head_params(cfg: ModelConfig) -> int:
  """The encoder's auxiliary CTC classifier (d_enc -> vocab, with bias), if any."""
  if not cfg.ctc_head:
    return 0
  if cfg.projector.ctc_tied:  # the token embedding: a temperature and a bias of its own
    return 1 + cfg.decoder.vocab_size
  d = cfg.encoder.d_model if cfg.ctc_head == "encoder" else cfg.decoder.d_model
  return _dense(d, cfg.decoder.vocab_size, True)


def param_counts(cfg: ModelConfig) -> dict[str, int]:
  out = {"encoder": encoder_params(cfg), "projector": projector_params(cfg),
         "decoder": decoder_params(cfg), "mtp_heads": mtp_head_params(cfg),
         "ctc_head": ctc_head_params(cfg)}
  out["total"] = sum(out.values())
  return out


def decoder_layer_flops(cfg: ModelConfig, num_tokens: int, context: float) -> float:
  """Matmul FLOPs of one decoder layer for `num_tokens` queries over `context` keys."""
  c = cfg.decoder
  proj = 2 * num_tokens * decoders.get(c.type).token_matmul_params(cfg)
  attn = 2 * 2 * num_tokens * context * c.num_heads * c.head_dim
  return proj + attn


def decoder_token_flops(cfg: ModelConfig, context: float, heads: int | None = None) -> float:
  """FLOPs to run one token through the decoder and `heads` heads (default: all K)."""
  c = cfg.decoder
  k = cfg.mtp.num_heads if heads is None else heads
  head_flops = 2 * c.d_model * c.vocab_size
  if k > 1:
    head_flops += 2 * mtp_head_params(cfg) / (cfg.mtp.num_heads - 1) * (k - 1)
  return c.num_layers * decoder_layer_flops(cfg, 1, context) + head_flops


def prefill_flops(cfg: ModelConfig, num_audio_tokens: int, num_text_tokens: int = 1) -> list[float]:
  """Per-layer decoder prefill FLOPs (causal attention: token i sees i + 1 keys)."""
  n = num_audio_tokens + num_text_tokens
  mean_ctx = (n + 1) / 2.0
  return [decoder_layer_flops(cfg, n, mean_ctx) for _ in range(cfg.decoder.num_layers)]


def prefill_layer_flops(cfg: ModelConfig, tokens_in: int, tokens_out: int | None = None,
                        causal: bool = True) -> float:
  """Matmul FLOPs of one decoder layer in a prefill that may drop tokens mid-layer.

  Token reduction (mtp_jax/model/reduction_ops.py) runs after attention and before the
  MLP, so q/k/v/o projections and attention see `tokens_in` tokens and the SwiGLU
  sees `tokens_out`.

  Args:
    cfg: the model config.
    tokens_in: tokens entering the layer (audio + text).
    tokens_out: tokens leaving the attention block (default `tokens_in`).
    causal: count only the causal half of the score/value matmuls (ideal kernel);
      False counts the dense [T, T] matmuls the masked XLA attention actually runs.
  """
  c = cfg.decoder
  tokens_out = tokens_in if tokens_out is None else tokens_out
  hd = c.head_dim
  qkvo = 2 * tokens_in * c.d_model * hd * (2 * c.num_heads + 2 * c.num_kv_heads)
  keys = (tokens_in + 1) / 2.0 if causal else float(tokens_in)
  attn = 2 * 2 * tokens_in * keys * c.num_heads * hd
  mlp = 2 * tokens_out * 3 * c.d_model * c.ff_dim
  return qkvo + attn + mlp


def reduced_prefill_flops(cfg: ModelConfig, num_audio_tokens: int, num_text_tokens: int,
                          merges, causal: bool = True) -> list[float]:
  """Per-layer decoder prefill FLOPs when layer l removes `merges[l]` audio tokens.

  With `merges` all zero and causal=True this equals `prefill_flops`. The budgets
  themselves are planned (and solved for a FLOPs target) in
  `mtp_jax.model.reduction_plan`.
  """
  out, p = [], num_audio_tokens
  for n in merges:
    t = p + num_text_tokens
    out.append(prefill_layer_flops(cfg, t, t - n, causal))
    p -= n
  return out


def encoder_flops_per_second(cfg: ModelConfig) -> float:
  """Matmul FLOPs of frontend-to-projector for one second of audio (encoder + projector)."""
  spec = encoders.get(cfg.encoder.type)
  t = float(spec.output_length(spec.num_frames(cfg.frontend.sample_rate, cfg.frontend)))
  proj = 2 * (t / cfg.projector.stack) * projector_params(cfg)
  return spec.flops_per_second(cfg) + proj


def report(cfg: ModelConfig, context: int = 256) -> str:
  pc = param_counts(cfg)
  lines = [f"{'component':<12}{'parameters':>16}"]
  lines += [f"{k:<12}{v:>16,}" for k, v in pc.items()]
  lines.append("")
  lines.append(f"decoder FLOPs/token (context {context}, K={cfg.mtp.num_heads} heads): "
               f"{decoder_token_flops(cfg, context):.3e}")
  lines.append(f"decoder FLOPs/token head 1 only: {decoder_token_flops(cfg, context, 1):.3e}")
  lines.append(f"encoder FLOPs per audio second: {encoder_flops_per_second(cfg):.3e}")
  return "\n".join(lines)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  cfg = ModelConfig.from_config(flags.FLAGS.config.model)
  print(report(cfg, flags.FLAGS.context))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_integer("context", 256, "Context length for per-token FLOPs.")
  from mtp_jax.config import parse_flags_with_config  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=parse_flags_with_config)
