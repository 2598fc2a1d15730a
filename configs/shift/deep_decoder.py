"""Parameter-shift pair, arm 1: balanced model (4 encoder + 8 decoder layers, K=4), 10.5M params.

Compare with configs/shift/deep_encoder.py (same total size, most layers in the encoder).
Run:
  python train.py --config configs/shift/deep_decoder.py --workdir runs/shift_dec \
      --config.data.train_manifests=...
  python decode.py --workdir runs/shift_dec --manifest ../shared/data/kathleen/test.jsonl \
      --strategy verify
Expected: same WER as deep_encoder trained the same way; ~3x more decoder FLOPs per token
(`python -m mtp_jax.flops --config configs/shift/deep_decoder.py`), hence lower RTFx.
Arg: "K=<heads>,head=<type>" as in configs/small.py.
"""
import pathlib

from mtp_jax.config import load_config_file

SMALL = pathlib.Path(__file__).resolve().parents[1] / "small.py"


def get_config(arg: str | None = None):
  c = load_config_file(SMALL, arg)
  c.model.encoder.num_layers = 4
  c.model.decoder.num_layers = 8
  return c
