"""Real-speech recipe in about an hour on 2 CPU cores: the demo model warm-started on real speech.

Starts from a finished `configs/demo_conformer.py` run (the demo before the Whisper
models: its encoder already reads espeak-ng speech thanks to its CTC head) and fine-tunes
all of it, with that run's tokenizer, on synthetic speech of short LJSpeech sentences (every voice variant, half
with noise) mixed with the real Kathleen train set, listed twice so real speech is
~1/3 of the audio. Evaluate on the REAL held-out sets: Kathleen test (unseen text),
FSDD test and AN4 test.

Run (from the repository root, after the commands in configs/demo_conformer.py wrote
runs/demo_conformer/run):
  awk 'length($0)>=20 && length($0)<=100' ../shared/data/text/ljspeech_sentences.txt \
      > runs/realmix/lj_short.txt
  python -m mtp_jax.synth --sentences runs/realmix/lj_short.txt --variants all \
      --snr_db 10,40 --noise_fraction 0.5 --num 3000 --workers 2 --seed 0 --name train \
      --out runs/realmix/ljsynth
  python train.py --config configs/recipes/realmix_demo.py:init=runs/demo_conformer/run,minutes=55 \
      --workdir runs/realmix_demo_k4
  python bench/decode.py --workdirs runs/realmix_demo_k4 \
      --manifest ../shared/data/kathleen/test.jsonl --batch_sizes 1,16
K=4 heads of another type on a frozen trunk (`init=` a K=1 run, here for latent heads):
  python train.py --config configs/recipes/realmix_demo.py:init=runs/realmix_demo_k1,K=4 \
      --config.model.mtp.head_type=latent --config.train.mode=heads_only \
      --config.train.ctc_weight=0 --config.train.steps=1500 --config.train.learning_rate=2e-3 \
      --workdir runs/realmix_demo_k1_heads_latent
Expected (2-core CPU, 55 min; measured 2026-11-23, docs/negative_results.md): far from
usable on real speech. Kathleen-test greedy WER is 98% for K=4 and 93% for K=1, while the
encoder-only CTC head alone scores 83% and 76%. The decoder learns the Kathleen train
prompts by heart. Verify needs 1.3-1.5x fewer decoder calls than greedy.
Arg: "init=<demo_conformer workdir>,K=<heads, must match init>,minutes=<train minutes>,
      data=<shared data folder>,synth=<synthetic corpus folder>".
"""
import pathlib

from mtp_jax.config import load_config_file, parse_arg

_CONFIGS = pathlib.Path(__file__).resolve().parents[1]


def get_config(arg: str | None = None):
  args = parse_arg(arg, init="runs/demo_conformer/run", K=4, minutes=35.0, data="../shared/data",
                   synth="runs/realmix/ljsynth")
  c = load_config_file(_CONFIGS / "demo_conformer.py", f"K={args.K}")
  kathleen = f"{args.data}/kathleen/train.jsonl"
  c.data.train_manifests = f"{args.synth}/train.jsonl,{kathleen},{kathleen}"
  c.data.dev_manifest = f"{args.data}/kathleen/test.jsonl"
  c.data.tokenizer.path = f"{args.init}/tokenizer.model"
  c.train.init_from = args.init
  c.train.steps = 4000
  c.train.max_minutes = float(args.minutes)
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 100
  c.train.head_weight_decay = 0.8
  # Real speech is scarce (0.8 h): light SpecAugment against memorizing Kathleen train.
  c.model.frontend.update(freq_masks=2, time_masks=2)
  return c
