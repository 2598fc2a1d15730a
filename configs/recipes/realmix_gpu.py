"""Real-speech recipe, one GPU: a larger bf16 model on synthetic speech + Kathleen.

Same data as `configs/recipes/realmix_cpu.py` (espeak-ng speech of the LJSpeech
sentences in `../shared/data/text` with every voice variant, mixed with real Kathleen
train; eval on Kathleen / FSDD / AN4 test), more of it, and a ~34M-parameter model
(Conformer 256x12, decoder 384x8, K=4) in bf16 with scanned layers, 16x2 buckets.

Run (one GPU; synthesis is CPU-bound, ~140 s of audio per core-second):
  python -m mtp_jax.synth --sentences ../shared/data/text/ljspeech_sentences.txt \
      --variants all --snr_db 10,40 --noise_fraction 0.5 --num 12000 --workers 16 \
      --seed 0 --out runs/realmix/synth_large
  python train.py --config configs/recipes/realmix_gpu.py --workdir runs/realmix_gpu
  python bench/recipe_eval.py --workdir runs/realmix_gpu
Expected: `python -m mtp_jax.flops --config configs/recipes/realmix_gpu.py` reports ~34M
parameters; training runs `train.steps` (30000) or stops at `minutes` (120) with a
Kathleen-test eval every 2000 steps; `bench/recipe_eval.py` writes
`bench/results/recipe_eval.json` (WER, calls/utt and verify-vs-greedy speedup on the three
real test sets), with a lower Kathleen-test WER than the CPU recipe.
Arg: "K=<heads>,head=<independent|latent|sequential>,minutes=<train minutes>,
      data=<shared data folder>,synth=<synthetic corpus folder>".
"""
import pathlib

from mtp_jax.config import load_config_file, parse_arg

_RECIPES = pathlib.Path(__file__).resolve().parent


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=4, head="independent", minutes=120.0, data="../shared/data",
                   synth="runs/realmix/synth_large")
  c = load_config_file(_RECIPES / "realmix_cpu.py",
                       f"K={args.K},head={args.head},minutes={args.minutes},"
                       f"data={args.data},synth={args.synth}")
  m = c.model
  m.encoder.update(d_model=256, num_layers=12, num_heads=4, conv_kernel=31,
                   subsampling_channels=128)
  m.decoder.update(vocab_size=1024, d_model=384, num_layers=8, num_heads=6, num_kv_heads=2,
                   ff_dim=1024)
  m.dtype = "bfloat16"
  m.scan_layers = True
  m.remat_policy = "dots_no_batch"
  c.data.tokenizer.vocab_size = 1024
  c.data.max_duration = 16.0
  c.data.max_text_tokens = 127
  c.data.audio_seconds_per_batch = 480.0
  c.data.tokens_per_batch = 8192
  c.data.num_duration_bins = 16
  c.data.num_token_bins = 2
  c.data.num_workers = 4
  c.train.steps = 30000
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 1000
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.eval_every = 2000
  c.train.eval_max_utterances = 0
  return c
