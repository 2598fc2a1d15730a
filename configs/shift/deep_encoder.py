"""Parameter-shift pair, arm 2: deep encoder, thin decoder (K=4).

base=small (default): 9 encoder + 2 decoder layers, 10.4M parameters, within 2% of
configs/shift/deep_decoder.py, but a decoder call costs ~3.8x fewer FLOPs.
base=demo_conformer: the demo model's widths with 7 encoder + 1 decoder layers, 4.32M parameters
(deep_decoder's base=demo_conformer: 3 + 6 layers, 4.35M); a decoder call costs ~5.5x fewer FLOPs.
Run (the real-data pair, both arms trained the same way; see
configs/shift/deep_decoder.py for the full command set):
  python train.py --config configs/shift/deep_encoder.py:base=demo_conformer,minutes=200 \
      --workdir runs/shift_enc --config.train.steps=2400 \
      --config.data.train_manifests=<demo corpus>/train.jsonl,runs/realmix/ljsynth/train.jsonl,../shared/data/kathleen/train.jsonl \
      --config.data.dev_manifest=../shared/data/kathleen/test.jsonl \
      --config.data.tokenizer.path=runs/demo_conformer/run/tokenizer.model
  python bench/decode.py --workdirs runs/shift_dec,runs/shift_enc \
      --manifest ../shared/data/kathleen/test.jsonl --strategies greedy,verify --batch_sizes 1,16
Expected: WER equal to deep_decoder's and a higher decode RTFx, with verify on top.
Measured (docs/models.md): greedy RTFx 244 vs 183 on Kathleen test, but after 2400 steps
the encoder had not left the CTC blank plateau (synthetic-test CTC WER 99.9% vs 38.5%).
Arg: "base=<small|demo>" plus the base config's own keys ("K=<heads>,head=<type>", and
for demo also "minutes=<train minutes>,ctc=<weight>").
"""
import pathlib

from mtp_jax.config import shifted_config

_CONFIGS = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {"small": (9, 2), "demo_conformer": (7, 1)}  # base -> (encoder layers, decoder layers)


def get_config(arg: str | None = None):
  return shifted_config(_CONFIGS, LAYERS, arg)
