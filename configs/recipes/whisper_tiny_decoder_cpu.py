"""Real speech on 2 CPU cores with a pretrained language model: the frozen Whisper tiny.en
encoder on the utterance's real length + Whisper tiny.en's own decoder (`decoder.type=
whisper`, cross-attending to the encoder frames, imported with `train.decoder_init`),
fine-tuned to read real-length frames; then K multi-token heads (`latent`: one vocabulary
matmul for all heads) alone; then decoder and heads jointly.

Same data and feature cache as the every-sentence run of `whisper_tiny_cpu.py` (its
docstring has the synthesis and caching commands; the cache holds tiny.en frames):
  python train.py --config configs/recipes/whisper_tiny_decoder_cpu.py \\
      --workdir runs/wt/wdec_k1 --config.data.feature_cache=runs/wt/features_all
Heads on the fine-tuned decoder (decoder frozen):
  python train.py --config configs/recipes/whisper_tiny_decoder_cpu.py:K=4,head=latent,steps=600,heads=1 \\
      --workdir runs/wt/wdec_k4 --config.data.feature_cache=runs/wt/features_all \\
      --config.train.init_from=runs/wt/wdec_k1 --config.train.init_exclude=mtp
  python bench/recipe_eval.py --workdir runs/wt/wdec_k4 \\
      --strategies greedy,verify,tree,threshold:threshold=0.8,beam:beam=4 \\
      --out bench/results/recipe_eval_whisper_tiny_wdec_k4.json
Then decoder and heads jointly (the token embedding still frozen):
  python train.py --config configs/recipes/whisper_tiny_decoder_cpu.py:K=4,head=latent,steps=400 \\
      --workdir runs/wt/wdec_k4j --config.data.feature_cache=runs/wt/features_all \\
      --config.train.init_from=runs/wt/wdec_k4 --config.train.head_weight_decay=0.3 \\
      --config.train.warmup_steps=50 --config.train.eval_every=400
  python bench/recipe_eval.py --workdir runs/wt/wdec_k4j --batch_size 16 \\
      --strategies greedy,verify,verify:draft_vocab=8192,tree,tree:draft_vocab=8192,threshold:threshold=0.9,beam:beam=4 \\
      --out bench/results/whxs_latent_joint_k4_b16.json
  python bench/peer_whisper.py --workdirs runs/wt/wdec_k4j --sets kathleen_test --max_utts 150 \\
      --peer float32:1,int8:1,float32:5 --strategies greedy,verify,verify:draft_vocab=8192,tree
Isolated words and short phrases (arg short=1: synthetic 1-3 word texts at 16 and 8 kHz,
FSDD's and AN4's real train splits) in the joint phase:
  python -m mtp_jax.synth.sentence_lists --out runs/wt/short.txt --short 3000 --seed 0
  python -m mtp_jax.synth.sentence_lists --out runs/wt/short8k.txt --short 1000 --seed 1
  python -m mtp_jax.synth --sentences runs/wt/short.txt --variants all --snr_db 10,40 \\
      --noise_fraction 0.3 --num 3000 --seed 3 --name train --out runs/wt/synth_short
  python -m mtp_jax.synth --sentences runs/wt/short8k.txt --variants all --snr_db 10,40 \\
      --noise_fraction 0.3 --num 1000 --seed 4 --name train --sample_rate 8000 \\
      --out runs/wt/synth_short8k
  python -m mtp_jax.train.pretrained --config configs/recipes/whisper_tiny_decoder_cpu.py:short=1 \\
      --out runs/wt/features_all
  python train.py --config configs/recipes/whisper_tiny_decoder_cpu.py:K=4,head=latent,steps=400,short=1 \\
      --workdir runs/wt/wdec_k4js --config.data.feature_cache=runs/wt/features_all \\
      --config.train.init_from=runs/wt/wdec_k4 --config.train.head_weight_decay=0.3 \\
      --config.train.warmup_steps=50 --config.train.eval_every=400
  python bench/recipe_eval.py --workdir runs/wt/wdec_k4js --batch_size 16 \\
      --strategies greedy,verify,tree,threshold:threshold=0.9,beam:beam=4 \\
      --out bench/results/whxs_latent_joint_short_k4_b16.json
Thinner or thicker decoders: the K=1 and heads commands with arg blocks=0+3 (2 blocks) or
blocks=0+1+2+1+2+3 (6 blocks) and workdirs runs/wt/wdec2_k1/_k4, runs/wt/wdec6_k1/_k4.
Expected (2-core AMD EPYC, 2026-12-02/03; Kathleen test, all 703 utterances, batch 16):
  * fine-tuning 1500 steps at ~1.3 steps/s (~19 min; dev WER on 64 utterances 4.1-5.2%),
    heads 600 steps at ~0.48 steps/s (~21 min), the joint phase 400 steps at ~0.45 steps/s
    (~15 min);
  * wdec_k4: greedy 5.5% = verify = tree (identical output; 5.4% in a second run of the
    same commands), verify 1.29x and tree 1.41x fewer decoder calls, prefix beam B=4 5.0%;
    FSDD's isolated digits make it loop;
  * wdec_k4j: greedy 6.2% = verify = tree, verify 1.58x / tree 1.71x fewer calls, prefix
    beam B=4 5.7%; at batch 1 verify is 1.09x greedy's speed and 5.04x faster-whisper
    tiny.en's greedy RTFx;
  * wdec_k4js (short=1): Kathleen 6.3%, verify 1.56x / tree 1.69x fewer calls; FSDD test
    5.7% (without short=1: 1858%); AN4 test 8.3% (1 of 12 words);
  * 2 / 6 blocks: greedy 8.9% / 5.7%, verify 1.26x / 1.31x and tree 1.37x / 1.43x fewer
    calls; 6-block fine-tuning ~25 min at 1.05 steps/s, its heads ~21 min at 0.53 steps/s.
The tables: docs/models.md, docs/multi_token.md.
Arg: "K=<heads>,head=<type>,steps=<train steps>,data=<shared data>,synth=<synth dir
prefix>,heads=<1: train only the heads>,short=<1: add isolated words and short phrases>,
blocks=<Whisper decoder blocks to keep, e.g. 0+3: a 2-block decoder; repeats make a
thicker one, e.g. 0+1+2+1+2+3: 6 blocks (depth up-scaling); default all 4>".
"""
import pathlib

from mtp_jax.config import ConfigError, load_config_file, model_defaults, parse_arg
from mtp_jax.data.config import data_defaults
from mtp_jax.train.config import train_defaults

_HERE = pathlib.Path(__file__).resolve().parent


def _short_manifests(args) -> list[str]:
  """Isolated words and short phrases: synthetic 1-3 word texts (16 kHz and 8 kHz) and
  the real train splits of FSDD and AN4, so the decoder learns to stop after a word."""
  return ([f"{args.synth}_short{s}/train.jsonl" for s in ("", "8k")]
          + [f"{args.data}/{d}/train.jsonl" for d in ("fsdd", "an4")])


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=1, head="latent", steps=1500, data="../shared/data",
                   synth="runs/wt/synth", heads=0, short=0, blocks="")
  # The LLaMA-decoder recipe's encoder, frontend and data; its decoder side replaced.
  c = load_config_file(_HERE / "whisper_tiny_cpu.py",
                       f"K={args.K},head={args.head},steps={args.steps},data={args.data},"
                       f"synth={args.synth}")
  m, base = c.model, model_defaults()
  m.projector = base.projector
  m.projector.update(type="none", stack=1)  # the decoder cross-attends to the frames
  m.decoder.update(type="whisper", vocab_size=51864, d_model=384, num_layers=4,
                   num_heads=6, num_kv_heads=6, ff_dim=1536, max_positions=448,
                   max_text_len=128, dropout=0.1)
  if args.blocks:  # a thinner (e.g. "0+3") or thicker ("0+1+2+1+2+3") decoder
    try:
      layers = tuple(int(b) for b in args.blocks.split("+"))
    except ValueError as err:
      raise ConfigError(f"config arg blocks={args.blocks!r}: expected block indices "
                        "joined by '+', e.g. 0+3") from err
    m.decoder.num_layers = len(layers)
    c.train.decoder_init_layers = layers
  kathleen = f"{args.data}/kathleen/train.jsonl"
  c.data.train_manifests = ",".join(
      [f"{args.synth}{s}/train.jsonl" for s in ("", "_unseen", "_rest")] + [kathleen] * 2
      + (_short_manifests(args) if int(args.short) else []))
  c.data.tokenizer = data_defaults().tokenizer
  c.data.tokenizer.path = "whisper:tiny.en"
  t = train_defaults()
  for field in ("ctc_weight", "head_weight_decay"):
    c.train[field] = t[field]
  c.train.decoder_init = "tiny.en"
  # The token embedding (= the vocabulary projection) stays as pretrained: the test's
  # words are mostly unseen in training, and their rows must not drift.
  c.train.frozen = "^params/(encoder|embed)/"
  if int(args.heads):
    c.train.frozen = "^params/(encoder|embed|decoder|final_norm)/"
  c.train.learning_rate = 1e-4 if not int(args.heads) else 1e-3
  c.train.warmup_steps = 100
  c.train.eval_every = 500
  c.train.eval_max_utterances = 60
  return c
