"""Decodes a manifest with a trained model and reports WER, calls, acceptance, RTFx;
or transcribes audio files.

  python decode.py --workdir runs/x --manifest test.jsonl --strategy verify \
      [--batch_size 16] [--out hyps.jsonl] [strategy options: --threshold 0.8, --beam 4,
      --nbest, --typical eps,alpha, --top 2, ... (`--help`; mtp_jax/decode/registry.py)]
  python decode.py --workdir runs/x --audio a.wav b.flac [--strategy verify]
      (one "path<TAB>transcript" line per file; any format and sample rate soundfile
      reads; see mtp_jax/decode/transcribe.py for long audio)

Writes hypotheses JSONL (utt_id, ref, hyp, calls, tokens), a summary JSON next to
it (`<out>.summary.json`) and prints a table. Loads config, params and tokenizer
with `mtp_jax.checkpoint.restore_for_inference(workdir, step)` (without --step, a
damaged newest checkpoint is skipped with a warning).

Every manifest row is decoded: training's max_duration / max_text_tokens limits do
not apply (only the encoder's own limit, e.g. Whisper's 30 s). Rows that cannot be
decoded (missing, corrupt or NaN audio, longer than the encoder takes, empty text)
are skipped, counted ("skipped" in the table and the summary) and named
("skipped_rows"); `--fail_on_skip` makes any of them an error instead.
"""
from __future__ import annotations

import json
import os

from absl import app, flags

from mtp_jax.config import REDUCTION_METHODS, REDUCTION_SCHEDULES
from mtp_jax.decode import registry

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "training workdir (config, checkpoints, tokenizer)")
flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
flags.DEFINE_string("manifest", None, "JSONL manifest to decode")
flags.DEFINE_multi_string("audio", None, "audio file(s) to transcribe instead of a manifest "
                          "(repeat the flag, or list the files after it)")
flags.DEFINE_enum("long_audio", "split", ["split", "error"],
                  "--audio longer than the model takes: split at silences, or refuse")
flags.DEFINE_enum("strategy", "greedy", registry.names(), "decoding strategy: " + "; ".join(
    f"{n}: {registry.get(n).help}" for n in registry.names()))
flags.DEFINE_integer("batch_size", 16, "utterances per batch", lower_bound=1)
flags.DEFINE_integer("max_new_tokens", None, "token cap (default or 0: "
                     "config.data.max_text_tokens)", lower_bound=0)
flags.DEFINE_bool("fail_on_skip", False, "exit with an error when a manifest row cannot "
                  "be decoded (default: skip it, count and name it in the table and summary)")
flags.DEFINE_bool("use_kernels", None, "Pallas kernels (overrides config.kernels.enabled): "
                  "fused verification (--strategy=verify, exact acceptance) and FastAdaSP "
                  "token merging (--reduce=fastadasp_*)")
flags.DEFINE_string("out", None, "hypotheses JSONL (default: <workdir>/decode_<strategy>.jsonl)")
flags.DEFINE_enum("reduce", None, list(REDUCTION_METHODS),
                  "audio-token reduction in the prefill (default: the config's)")
flags.DEFINE_float("flops_reduction", None, "target decoder-prefill FLOPs reduction, e.g. 0.3")
flags.DEFINE_enum("schedule", None, list(REDUCTION_SCHEDULES), "merge schedule")
flags.DEFINE_integer("reduce_start_layer", None, "start layer l0 (-1: solved)")
flags.DEFINE_float("reduce_ratio", None, "tokens removed at l0 / P (instead of --flops_reduction)")
flags.DEFINE_integer("sparse_layer", None, "fastadasp_sparse layer (-1: transfer-entropy choice)")
flags.DEFINE_integer("reduce_seed", None, "seed of random_merge / random_evict")
# One flag per option of the registered strategies (mtp_jax/decode/registry.py), e.g.
# --threshold, --beam, --nbest, --typical, --top; unset = the strategy's default.
_DEFINE = {"float": flags.DEFINE_float, "int": flags.DEFINE_integer,
           "bool": flags.DEFINE_bool, "string": flags.DEFINE_string}
for _o in registry.all_options().values():
  if _o.name not in FLAGS:
    _DEFINE[_o.kind](_o.name, None, f"{_o.help} (default: {_o.default})")
flags.mark_flags_as_required(["workdir"])


def strategy_options() -> dict:
  """The strategy's options from their flags, checked now (before anything is loaded)."""
  opts = {n: FLAGS[n].value for n in registry.all_options() if FLAGS[n].value is not None}
  try:
    registry.resolve_options(FLAGS.strategy, opts)
  except ValueError as e:
    raise app.UsageError(f"flag --{e}") from e
  return opts


def transcribe_main(paths) -> None:
  from mtp_jax.data.errors import BadInputError  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.transcribe import LongAudioError, Transcriber  # pylint: disable=g-import-not-at-top
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise app.UsageError(f"--audio: no such file: {', '.join(missing)}")
  tr = Transcriber(FLAGS.workdir, step=FLAGS.step, strategy=FLAGS.strategy,
                   batch_size=FLAGS.batch_size, long_audio=FLAGS.long_audio,
                   max_new_tokens=FLAGS.max_new_tokens, use_kernels=FLAGS.use_kernels,
                   **strategy_options())
  try:
    texts = tr(paths)
  except (LongAudioError, BadInputError) as e:
    raise DecodeError(str(e)) from e
  for path, text in zip(paths, texts):
    print(f"{path}\t{text}", flush=True)


class DecodeError(Exception):
  """A manifest that cannot be scored as asked (empty, rows skipped with
  --fail_on_skip); decode.py prints the message and exits with status 1."""


def main(argv):
  from mtp_jax.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    if FLAGS.audio:
      transcribe_main(list(FLAGS.audio) + list(argv[1:]))
    else:
      decode_main()
  except (DecodeError, ConfigError, CheckpointError, FileNotFoundError) as e:
    raise SystemExit(f"decode.py: error: {e}") from e


def _output_path() -> str:
  """--out (default <workdir>/decode_<strategy>.jsonl), its folder created now, before
  decoding, so that a bad --out fails at once."""
  path = FLAGS.out or os.path.join(FLAGS.workdir, f"decode_{FLAGS.strategy}.jsonl")
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise app.UsageError(f"--out={path}: cannot create its folder {folder}: {e}") from e
  if not os.access(folder, os.W_OK):
    raise app.UsageError(f"--out={path}: folder {folder} is not writable")
  return path


def _check_skipped(decodable: int, skipped: list[dict], decoded: bool) -> None:
  """Fails when nothing can be decoded (an empty manifest, every row skipped) and,
  with --fail_on_skip, on any skipped row."""
  from mtp_jax.decode.summary import describe_skipped  # pylint: disable=g-import-not-at-top
  if not decodable and not skipped:
    raise DecodeError(f"--manifest={FLAGS.manifest}: no utterance in it (empty manifest)")
  if not decodable:
    raise DecodeError(f"--manifest={FLAGS.manifest}: no row can be decoded, all "
                      f"{len(skipped)} skipped:\n{describe_skipped(skipped)}")
  if skipped and FLAGS.fail_on_skip:
    when = "while decoding" if decoded else "before decoding"
    raise DecodeError(f"--fail_on_skip: {len(skipped)} row(s) of {FLAGS.manifest} cannot be "
                      f"decoded (found {when}):\n{describe_skipped(skipped)}")


def decode_main() -> None:
  if not FLAGS.manifest:
    raise app.UsageError("give --manifest (scored decoding) or --audio (transcription)")
  if not os.path.isfile(FLAGS.manifest):
    raise app.UsageError(f"--manifest={FLAGS.manifest}: no such file")
  options = strategy_options()
  path = _output_path()
  from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import KernelsConfig, ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.pipeline import make_eval_batches, scoring_data_config  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.summary import decode_batches, describe_skipped, format_table  # pylint: disable=g-import-not-at-top
  from mtp_jax.model import encoders  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top

  config, params, tokenizer = restore_for_inference(FLAGS.workdir, step=FLAGS.step)
  red = config.model.reduction
  for flag, field in (("reduce", "method"), ("flops_reduction", "flops_reduction"),
                      ("schedule", "schedule"), ("reduce_start_layer", "start_layer"),
                      ("reduce_ratio", "ratio"), ("sparse_layer", "sparse_layer"),
                      ("reduce_seed", "seed")):
    if getattr(FLAGS, flag) is not None:
      red[field] = getattr(FLAGS, flag)
  data = scoring_data_config(config.data, encoders.max_audio_seconds(
      ModelConfig.from_config(config.model)))
  batches = make_eval_batches(FLAGS.manifest, tokenizer, data, batch_size=FLAGS.batch_size)
  _check_skipped(batches.num_utterances, batches.bad_input_report()["rows"], decoded=False)
  if red.method == "fastadasp_sparse" and red.sparse_layer < 0:
    red.sparse_layer = _calibrate_sparse_layer(config, params, batches)
  # The one kernel switch: config.kernels, --use_kernels overriding it.
  kernels = KernelsConfig.from_config(config.get("kernels", {}), enabled=FLAGS.use_kernels)
  model = SpeechLLaMA(ModelConfig.from_config(config.model), kernels=kernels)
  max_new = FLAGS.max_new_tokens or int(config.data.max_text_tokens)
  out = decode_batches(model, params, tokenizer, batches, strategy=FLAGS.strategy,
                       max_new_tokens=max_new, sample_rate=int(config.data.sample_rate),
                       numbers_to_words=bool(config.data.numbers_to_words), **options)
  _check_skipped(out["summary"]["utterances"], out["summary"]["skipped_rows"], decoded=True)
  with open(path, "w") as f:
    for r in out["records"]:
      f.write(json.dumps(r) + "\n")
  s = dict(out["summary"], workdir=FLAGS.workdir, manifest=FLAGS.manifest,
           batch_size=FLAGS.batch_size, max_new_tokens=max_new)
  with open(os.path.splitext(path)[0] + ".summary.json", "w") as f:
    json.dump(s, f, indent=2)
  print(format_table([s], ["strategy", "utterances", "skipped", "wer", "substitutions",
                           "deletions", "insertions", "calls_per_utt", "tokens_per_call",
                           "acceptance_per_head", "rtfx", "compile_s", "latency_p50_s",
                           "latency_p90_s"]))
  if s["skipped"]:
    print(f"skipped {s['skipped']} row(s), not in the WER:\n{describe_skipped(s['skipped_rows'])}")
  print(f"hypotheses: {path}")


def _calibrate_sparse_layer(config, params, batches) -> int:
  """Transfer-entropy layer choice for fastadasp_sparse on the first batch."""
  from mtp_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.model import reduction_calibrate  # pylint: disable=g-import-not-at-top
  batch = next(iter(batches))
  target = float(config.model.reduction.flops_reduction) or 0.3
  layer, _ = reduction_calibrate.calibrate_sparse_layer(
      ModelConfig.from_config(config.model), params, batch["audio"], batch["audio_len"], target)
  return int(layer)


if __name__ == "__main__":
  app.run(main)
