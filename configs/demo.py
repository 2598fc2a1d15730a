"""The demo model: frozen Whisper tiny.en encoder + projector + 4-layer LLaMA-style decoder
with K=4 heads (the `configs/recipes/whisper_tiny_cpu.py` model), trained on the synthetic
espeak-ng corpus only. Used by `python -m mtp_jax.demo` (the README's first command).

By hand (the demo runs exactly these):
  python -m mtp_jax.synth --out runs/demo/corpus --num 3000 --seed 0
  python -m mtp_jax.train.pretrained --config configs/demo.py:corpus=runs/demo/corpus \
      --out runs/demo/features
  python train.py --config configs/demo.py:corpus=runs/demo/corpus --workdir runs/demo/run \
      --config.data.feature_cache=runs/demo/features
Training is bounded by steps (`steps`, 1200), not minutes: the same command gives the same
model on a busy machine and an idle one. Expected (2-core AMD EPYC, 2026-12-01): the demo
takes 11.8 min; synthetic-test greedy WER 31.5%, verify 2.08x fewer decoder calls with
identical output; Kathleen test 98.5% (generator sentences only).
Arg: "K=<heads>,head=<type>,steps=<train steps>,corpus=<synthetic corpus folder>".
"""
import pathlib

from mtp_jax.config import load_config_file, parse_arg

_CONFIGS = pathlib.Path(__file__).resolve().parent


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=4, head="independent", steps=1200, corpus="runs/demo/corpus")
  c = load_config_file(_CONFIGS / "recipes" / "whisper_tiny_cpu.py",
                       f"K={args.K},head={args.head},steps={args.steps}")
  c.data.train_manifests = f"{args.corpus}/train.jsonl"
  c.data.dev_manifest = f"{args.corpus}/test.jsonl"
  c.data.tokenizer.vocab_size = 256
  c.model.decoder.vocab_size = 256
  c.train.warmup_steps = 100
  c.train.checkpoint_every = 400
  c.train.log_every = 50
  c.train.eval_max_utterances = 50
  return c
