"""Long-form fine-tune: the demo model taught to read a whole window, not one sentence.

The demo model (`configs/demo.py`: Whisper tiny.en encoder + Whisper tiny.en's decoder
with K=4 latent heads) is trained on single utterances of 1-7 s. A long recording is
decoded in chunks cut at pauses (`decode.py --audio`, `bench/longform.py`), and a chunk
of several sentences is outside what it has seen. This run continues it (every
parameter, the optimizer afresh) on Kathleen TRAIN utterances joined into 8-28 s windows
(`python -m mtp_jax.data.longform --sets kathleen_train_windows`: three passes over the
manifest, seeded pauses of 0.3-1.0 s), mixed with the single utterances it was trained on,
so that it reads a 28-s chunk to its end. Kathleen TEST text never enters training.

  python -m mtp_jax.demo                      # the starting point: runs/demo/run
  python -m mtp_jax.data.longform --data ../shared/data --out runs/longform_train \\
      --sets kathleen_train_windows
  python -m mtp_jax.train.pretrained --config configs/recipes/whisper_tiny_longform_cpu.py \\
      --out runs/longform_train/features
  python train.py --config configs/recipes/whisper_tiny_longform_cpu.py \\
      --workdir runs/longform_train/run \\
      --config.data.feature_cache=runs/longform_train/features
  # 400 more steps from there (a second warmup and cosine decay), what docs/longform.md uses:
  python train.py --config configs/recipes/whisper_tiny_longform_cpu.py:steps=400 \\
      --workdir runs/longform_train/run600 \\
      --config.data.feature_cache=runs/longform_train/features \\
      --config.train.init_from=runs/longform_train/run
  python -m mtp_jax.data.longform --data ../shared/data --out runs/longform
  python bench/longform.py --sets runs/longform/kathleen_60s.jsonl \\
      --workdirs runs/demo/run,runs/longform_train/run,runs/longform_train/run600 \\
      --strategies greedy,verify --segmenters silence --chunk_seconds 28
Bounded by steps (`steps`, 200).
Expected (2-core AMD EPYC, 2026-12-07): 604 windows (2.7 h); 6.4 min of caching, 15.9 min
of training (0.21 steps/s, another job sharing the machine), then 400 more steps in 26 min
(0.2-0.36 steps/s). On the first 10 kathleen_60s recordings (28-s chunks cut at pauses,
greedy): after 200 steps 7.8% WER (the demo model it starts from: 38.8%), after 600 steps
4.8% (faster-whisper tiny.en's own greedy long-form in the same run: 4.8%); verify:
identical output, 1.71x fewer decoder calls. On all 42 recordings after 600 steps: 8.8%
(0.88x its 10.0% one utterance at a time; faster-whisper greedy 6.1%, beam 5 5.0%)
(docs/longform.md).
Arg: "steps=<train steps>,init=<the demo workdir>,data=<shared data folder>,
      windows=<the training windows' folder>,corpus=<the demo's synthetic corpus>".
"""
import pathlib

from mtp_jax.config import load_config_file, parse_arg

_CONFIGS = pathlib.Path(__file__).resolve().parents[1]


def get_config(arg: str | None = None):
  args = parse_arg(arg, steps=200, init="runs/demo/run", data="../shared/data",
                   windows="runs/longform_train", corpus="runs/demo/corpus")
  c = load_config_file(_CONFIGS / "demo.py",
                       f"steps={args.steps},data={args.data},corpus={args.corpus}")
  # Windows (about half the audio), Kathleen train and the synthetic corpus once each.
  c.data.train_manifests = ",".join([f"{args.windows}/kathleen_train_windows.jsonl",
                                     f"{args.data}/kathleen/train.jsonl",
                                     f"{args.corpus}/train.jsonl"])
  c.data.max_duration = 29.0
  c.data.audio_seconds_per_batch = 120.0
  c.data.num_duration_bins = 4
  c.train.init_from = args.init
  c.train.learning_rate = 5e-5
  c.train.warmup_steps = 30
  c.train.checkpoint_every = 100
  return c
