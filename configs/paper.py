"""Paper-scale Speech-LLaMA: a 125M-parameter LLaMA decoder and a Conformer encoder.

Mirrors the decoder size of the Speech-LLaMA multi-token-prediction paper (d=768,
12 layers, GQA 12/4 heads, SwiGLU 2048, untied 32k vocabulary: 124.7M decoder
parameters). Meant for one GPU or a TPU slice, bf16 compute, layers scanned.
Run:
  python train.py --config configs/paper.py:K=4 --workdir runs/paper \
      --config.data.train_manifests=/data/librispeech/train.jsonl
Expected: `python -m mtp_jax.flops --config configs/paper.py` reports a 124.7M decoder.
Arg: "K=<heads>,head=<independent|latent|sequential>".
"""
from mtp_jax.config import parse_arg
from mtp_jax.train.config import default_config


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=1, head="independent")
  c = default_config()
  m = c.model
  m.encoder.update(d_model=512, num_layers=12, num_heads=8, ff_mult=4, conv_kernel=31,
                   subsampling_channels=256, dropout=0.1)
  m.projector.update(stack=2, hidden=2048)
  m.decoder.update(vocab_size=32000, d_model=768, num_layers=12, num_heads=12,
                   num_kv_heads=4, ff_dim=2048, tie_embeddings=False, max_text_len=256,
                   rope_theta=10000.0)
  m.mtp.num_heads = int(args.K)
  m.mtp.head_type = args.head
  m.dtype = "bfloat16"
  m.scan_layers = True
  m.remat_policy = "dots_no_batch"
  c.data.tokenizer.vocab_size = 32000
  c.mesh.update(data=-1, fsdp=1, tensor=1)
  return c
