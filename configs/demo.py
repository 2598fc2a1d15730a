"""The demo model: the project's best model family on 2 CPU cores in at most 20 minutes.

Whisper tiny.en's encoder (frozen, on the utterance's real length, frames cached) and
Whisper tiny.en's own decoder (`decoder.type=whisper`, imported with
`train.decoder_init`) with K=4 `latent` multi-token heads: the model of
`configs/recipes/whisper_tiny_decoder_cpu.py`, whose three phases (decoder fine-tune,
heads alone, joint) are folded into ONE short joint run from the pretrained decoder:
decoder and heads train together from step 0 (token embedding frozen, lr 1e-4, heads
2..4 weighted 0.3 / 0.09 / 0.027 on the shared trunk), on half-size batches (60 s of
padded audio: twice the updates per second). Data: the real Kathleen train set (listed
twice) plus a small espeak-ng corpus; with arg `data=` (empty) the espeak-ng corpus alone.
Used by `python -m mtp_jax.demo` (the README's first command).

By hand (the demo runs these, with --verbosity=-2; `python -m mtp_jax.demo --dry_run`
prints them), then decodes Kathleen test as bench/recipe_eval.py does:
  python -m mtp_jax.synth --out runs/demo/corpus --num 400 --seed 0 \\
      --split_fractions train=0.75,test=0.25 --workers 2
  python -m mtp_jax.train.pretrained --config configs/demo.py:corpus=runs/demo/corpus \\
      --out runs/demo/features
  python train.py --config configs/demo.py:corpus=runs/demo/corpus --workdir runs/demo/run \\
      --config.data.feature_cache=runs/demo/features
  python bench/recipe_eval.py --workdir runs/demo/run --sets kathleen_test --batch_size 1 \\
      --strategies greedy,verify,tree --out runs/demo/recipe_eval.json
Training is bounded by steps (`steps`, 320), not minutes: the same command gives the
same model on a busy machine and an idle one (later). The step count is sized for 20
minutes on an idle 2-core AMD EPYC: there 500 steps took 22.8 min in all (training 13.6
min at 0.65 steps/s, decoding 8.0 min: 703 + 100 test utterances, three strategies,
batch 1) and reached 8.9% on Kathleen test.
Expected (2-core AMD EPYC, jax 0.10.2, 2026-12-07; the same numbers idle and beside
another 2-core job): Kathleen test (all 703) 8.0% WER for greedy, verify and tree (output
identical to greedy's on every utterance), 11.55 / 7.88 / 7.06 decoder calls per
utterance (1.47x / 1.64x fewer), 0.66x / 0.56x greedy's speed at batch 1 (greedy decodes
the 703 in 70 s); synthetic test 26.2%. 18.3 min on the idle machine (training 8.9 min,
decoding 8.1 min; decoding 6.8 min since the KV-cache layout change), 31.6 min beside
another 2-core job (training 16.8, decoding 12.9).
Arg: "K=<heads>,head=<type>,steps=<train steps>,data=<shared data folder; empty: the
      synthetic corpus only>,corpus=<synthetic corpus folder>".
"""
import pathlib

from mtp_jax.config import load_config_file, parse_arg

_CONFIGS = pathlib.Path(__file__).resolve().parent
STEPS = 320


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=4, head="latent", steps=STEPS, data="../shared/data",
                   corpus="runs/demo/corpus")
  base = args.data or "../shared/data"  # only the recipe's own manifests read it
  c = load_config_file(_CONFIGS / "recipes" / "whisper_tiny_decoder_cpu.py",
                       f"K={args.K},head={args.head},steps={args.steps},data={base}")
  manifests = [f"{args.corpus}/train.jsonl"]
  if args.data:  # real speech: Kathleen train, twice (~3/4 of the audio)
    manifests += [f"{args.data}/kathleen/train.jsonl"] * 2
  c.data.train_manifests = ",".join(manifests)
  c.data.dev_manifest = ""  # the demo decodes the test sets itself, after training
  c.data.audio_seconds_per_batch = 60.0
  c.data.num_duration_bins = 4  # 4 step shapes to compile (the utterances are 1-7 s)
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 50
  c.train.head_weight_decay = 0.3
  c.train.checkpoint_every = 160
  c.train.log_every = 25
  c.train.eval_every = 0
  return c
