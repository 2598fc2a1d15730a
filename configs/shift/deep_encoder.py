"""Parameter-shift pair, arm 2: deep encoder, thin decoder (9 encoder + 2 decoder layers, K=4).

10.4M parameters, within 2% of configs/shift/deep_decoder.py, but a decoder call costs
~3.8x fewer FLOPs, so autoregressive decoding (and verification on top) runs faster.
Run:
  python train.py --config configs/shift/deep_encoder.py --workdir runs/shift_enc \
      --config.data.train_manifests=...
  python decode.py --workdir runs/shift_enc --manifest ../shared/data/kathleen/test.jsonl \
      --strategy verify
Expected: WER equal to deep_decoder's, >= 2x the decode RTFx (bench/capacity.py).
Arg: "K=<heads>,head=<type>" as in configs/small.py.
"""
import pathlib

from mtp_jax.config import load_config_file

SMALL = pathlib.Path(__file__).resolve().parents[1] / "small.py"


def get_config(arg: str | None = None):
  c = load_config_file(SMALL, arg)
  c.model.encoder.num_layers = 9
  c.model.decoder.num_layers = 2
  return c
