"""Parameter-shift pair, arm 1: balanced encoder/decoder (K=4).

base=small (default): 4 encoder + 8 decoder layers, 10.5M parameters.
base=demo_conformer: the demo model's widths with 3 encoder + 6 decoder layers, 4.35M parameters.
Compare with configs/shift/deep_encoder.py (same total size, most layers in the encoder).
Run (the real-data pair, ~40 min: both arms from scratch, same data, same steps,
trained side by side on 2 cores; the demo corpus and ljsynth come from the commands in
configs/demo_conformer.py and configs/recipes/realmix_demo.py):
  for arm in dec enc; do name=$([ $arm = dec ] && echo deep_decoder || echo deep_encoder)
    python train.py --config configs/shift/$name.py:base=demo_conformer,minutes=200 \
      --workdir runs/shift_$arm --config.train.steps=2400 \
      --config.data.train_manifests=<demo corpus>/train.jsonl,runs/realmix/ljsynth/train.jsonl,../shared/data/kathleen/train.jsonl \
      --config.data.dev_manifest=../shared/data/kathleen/test.jsonl \
      --config.data.tokenizer.path=runs/demo_conformer/run/tokenizer.model &
  done; wait
  python bench/decode.py --workdirs runs/shift_dec,runs/shift_enc \
      --manifest ../shared/data/kathleen/test.jsonl --strategies greedy,verify,ctc \
      --batch_sizes 1,16 --out bench/results/decode_shift_kathleen.json
Expected: same WER as deep_encoder trained the same way; several times more decoder FLOPs
per token (`python -m mtp_jax.flops --config configs/shift/deep_decoder.py:base=demo_conformer`),
hence a lower decode RTFx. Measured (docs/models.md): greedy RTFx 183 (this arm) vs 244
on Kathleen test; the deep encoder had not left the CTC blank plateau after 2400 steps.
Arg: "base=<small|demo>" plus the base config's own keys ("K=<heads>,head=<type>", and
for demo also "minutes=<train minutes>,ctc=<weight>").
"""
import pathlib

from mtp_jax.config import shifted_config

_CONFIGS = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {"small": (4, 8), "demo_conformer": (3, 6)}  # base -> (encoder layers, decoder layers)


def get_config(arg: str | None = None):
  return shifted_config(_CONFIGS, LAYERS, arg)
