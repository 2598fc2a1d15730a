"""Small Speech-LLaMA (~10.7M parameters with K=4), trainable on a 2-core CPU in under an hour.

Run:
  python train.py --config configs/small.py:K=4 --workdir runs/small \
      --config.data.train_manifests=runs/synth/train.jsonl
Expected: `python -m mtp_jax.flops --config configs/small.py:K=4` reports ~10.7M parameters;
on the synthetic demo corpus it reaches a low WER on held-out synthetic speech within
the demo's time budget.
Arg: "K=<heads>,head=<independent|latent|sequential>".
"""
from mtp_jax.config import parse_arg
from mtp_jax.train.config import default_config


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=4, head="independent")
  c = default_config()
  m = c.model
  m.encoder.update(d_model=192, num_layers=6, num_heads=4, ff_mult=4, conv_kernel=15,
                   subsampling_channels=64, dropout=0.1)
  m.projector.stack = 2
  m.decoder.update(vocab_size=512, d_model=256, num_layers=6, num_heads=8, num_kv_heads=4,
                   ff_dim=704, max_text_len=128)
  m.mtp.num_heads = int(args.K)
  m.mtp.head_type = args.head
  c.data.tokenizer.vocab_size = 512
  return c
