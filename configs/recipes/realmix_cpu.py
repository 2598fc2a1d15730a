"""Real-speech recipe, CPU: synthetic LJSpeech-sentence speech (many voices) + Kathleen.

The `configs/small.py` model (~10.7M parameters, K=4) trained for a bounded time on
espeak-ng speech of the LJSpeech sentences in `../shared/data/text` (8 accents x every
voice variant, random rate/pitch, half with noise) mixed with the real Kathleen train
set, then evaluated on three REAL held-out sets: Kathleen test, FSDD test (8 kHz,
resampled to 16 kHz by the loader) and AN4 test.

Run (from the repository root; ~5 min synthesis + `minutes` of training on 2 cores):
  python -m mtp_jax.synth --sentences ../shared/data/text/ljspeech_sentences.txt \
      --variants all --snr_db 10,40 --noise_fraction 0.5 --num 4000 --workers 2 \
      --seed 0 --out runs/realmix/synth
  python train.py --config configs/recipes/realmix_cpu.py --workdir runs/realmix_cpu
  python bench/recipe_eval.py --workdir runs/realmix_cpu --max_utts 100
Expected: training stops at `train.max_minutes` (60) with a checkpoint and a Kathleen-test
eval; `bench/recipe_eval.py` writes `bench/results/recipe_eval.json` with WER, decoder calls
per utterance and the speedup of `verify` over `greedy` on Kathleen / FSDD / AN4 test.
`verify` output equals `greedy`, so their WERs match and calls/utt drops below greedy's.
An hour on 2 CPU cores is far from convergence: expect high WER on real speech (the
synthetic-to-real gap is large, see ../shared/data/README.md); the recipe is the
reproducible baseline that the GPU recipe (`configs/recipes/realmix_gpu.py`) scales up.
Arg: "K=<heads>,head=<independent|latent|sequential>,minutes=<train minutes>,
      data=<shared data folder>,synth=<synthetic corpus folder>".
"""
import pathlib

from mtp_jax.config import load_config_file, parse_arg

_CONFIGS = pathlib.Path(__file__).resolve().parents[1]


def realmix_manifests(data: str, synth: str) -> tuple[str, str]:
  """(train manifests, dev manifest): synthetic train + Kathleen train; Kathleen test."""
  train = f"{synth}/train.jsonl,{data}/kathleen/train.jsonl"
  return train, f"{data}/kathleen/test.jsonl"


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=4, head="independent", minutes=60.0, data="../shared/data",
                   synth="runs/realmix/synth")
  c = load_config_file(_CONFIGS / "small.py", f"K={args.K},head={args.head}")
  c.data.train_manifests, c.data.dev_manifest = realmix_manifests(args.data, args.synth)
  # LJSpeech sentences run to ~10 s; longer ones are skipped (bad_input_policy=skip).
  c.data.max_duration = 12.0
  c.data.max_text_tokens = 95
  c.model.decoder.max_text_len = 128
  c.data.audio_seconds_per_batch = 64.0
  c.data.tokens_per_batch = 2048
  # Few buckets: each padded shape is one compile (~30 s on 2 cores), done up front.
  c.data.num_duration_bins = 6
  c.data.num_token_bins = 1
  c.train.steps = 6000
  c.train.max_minutes = float(args.minutes)
  c.train.learning_rate = 2e-3
  c.train.warmup_steps = 300
  c.train.log_every = 25
  c.train.checkpoint_every = 250
  c.train.eval_every = 0
  c.train.eval_max_utterances = 100
  return c
