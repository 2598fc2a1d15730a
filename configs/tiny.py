"""Tiny Speech-LLaMA for CPU tests and smoke runs (well under 1M parameters).

Run:
  python train.py --config configs/tiny.py --workdir runs/tiny \
      --config.data.train_manifests=../shared/data/kathleen/train.jsonl
Expected: trains at several steps/s on a 2-core CPU; used by the unit tests, which
overfit a handful of utterances with it. `python -m mtp_jax.flops --config configs/tiny.py`
reports ~0.3M parameters.
Arg: optional "K=4,head=latent" to set the MTP heads, e.g. `configs/tiny.py:K=4`.
"""
from mtp_jax.config import parse_arg
from mtp_jax.train.config import default_config


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=1, head="independent")
  c = default_config()
  m = c.model
  m.encoder.update(d_model=64, num_layers=2, num_heads=4, ff_mult=2, conv_kernel=7,
                   subsampling_channels=16, dropout=0.0)
  m.projector.stack = 2
  m.decoder.update(vocab_size=128, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   ff_dim=172, max_text_len=64)
  m.mtp.num_heads = int(args.K)
  m.mtp.head_type = args.head
  c.data.tokenizer.vocab_size = 128
  c.data.max_duration = 12.0
  c.data.max_text_tokens = 63  # + EOS, rounded to 8 -> at most 64 = decoder.max_text_len
  c.data.audio_seconds_per_batch = 48.0
  return c
