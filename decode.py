"""Decodes a manifest with a trained model and reports WER, calls, acceptance, RTFx;
or transcribes audio files.

  python decode.py --workdir runs/x --manifest test.jsonl --strategy verify \
      [--batch_size 16] [--out hyps.jsonl] [strategy options: --threshold 0.8, --beam 4,
      --nbest, --typical eps,alpha, --top 2, ... (`--help`; mtp_jax/decode/registry.py)]
  python decode.py --workdir runs/x --audio a.wav b.flac [--strategy verify]
      [--format txt,jsonl,srt,vtt --output_dir out] [--segmenter silence|overlap]
      (one "path<TAB>transcript" line per file on stdout; any format, channel count,
      bit depth and sample rate soundfile reads, of any length: read and decoded in
      chunks, see mtp_jax/decode/transcribe.py and docs/longform.md)

--audio never stops at a bad file: each file gets its transcript (and, with --format,
<output_dir>/<stem>.<format> files of timed segments) or one "decode.py: error: <file>:
<reason>" line on stderr; the exit status is 1 when any file failed. Files of a minute
or more print progress lines on stderr (--progress: for every file, --noprogress: none).

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
                  "--audio longer than the model takes: split (see --segmenter), or refuse")
flags.DEFINE_list("format", [], "--audio: also write <output_dir>/<stem>.<format> for each "
                  "of txt, jsonl, srt, vtt (timed segments)")
flags.DEFINE_string("output_dir", None, "--audio: folder of the --format files (default: .)")
flags.DEFINE_enum("segmenter", "silence", ["silence", "overlap"],
                  "--audio chunk boundaries: cut at the quietest stretch before the limit "
                  "(silence), or fixed windows overlapping by --overlap_seconds, their "
                  "overlapped words merged (overlap)")
flags.DEFINE_float("chunk_seconds", None, "--audio: longest chunk / overlap window "
                   "(default and at most: the model's limit)")
flags.DEFINE_float("overlap_seconds", None, "--segmenter=overlap: seconds shared by "
                   "consecutive windows (default: a sixth of the window)")
flags.DEFINE_float("tokens_per_second", 15.0, "--audio: token cap per second of chunk audio "
                   "(0: only --max_new_tokens)")
flags.DEFINE_integer("repeat_ngram", 8, "--audio: cut a chunk's words where an n-gram of up "
                     "to this many words repeats more than --max_repeats times in a row (0: "
                     "off)", lower_bound=0)
flags.DEFINE_integer("max_repeats", 4, "see --repeat_ngram", lower_bound=1)
flags.DEFINE_bool("progress", None, "--audio progress lines on stderr (default: for files "
                  "of a minute or more)")
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


def _output_stems(paths, output_dir: str) -> list[str]:
  """<output_dir>/<file stem> per input, "-2", "-3", ... added to repeated stems."""
  stems, seen = [], {}
  for p in paths:
    stem = os.path.splitext(os.path.basename(p))[0] or "audio"
    seen[stem] = seen.get(stem, 0) + 1
    stems.append(os.path.join(output_dir, stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
  return stems


def transcribe_main(paths) -> None:
  """Transcribes each file; a file that fails is named on stderr, the others go on."""
  import sys  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.guards import Guards  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.segments import check_formats, write_transcript  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.transcribe import ProgressPrinter, Transcriber, TranscribeError  # pylint: disable=g-import-not-at-top
  try:
    formats = check_formats(FLAGS.format)
    guards = Guards(tokens_per_second=FLAGS.tokens_per_second, max_ngram=FLAGS.repeat_ngram,
                    max_repeats=FLAGS.max_repeats)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  output_dir = FLAGS.output_dir or "."
  if formats:
    try:
      os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
      raise app.UsageError(f"--output_dir={output_dir}: cannot create it: {e}") from e
  try:
    tr = Transcriber(FLAGS.workdir, step=FLAGS.step, strategy=FLAGS.strategy,
                     batch_size=FLAGS.batch_size, long_audio=FLAGS.long_audio,
                     max_new_tokens=FLAGS.max_new_tokens, use_kernels=FLAGS.use_kernels,
                     segmenter=FLAGS.segmenter, max_seconds=FLAGS.chunk_seconds,
                     overlap_seconds=FLAGS.overlap_seconds, guards=guards,
                     **strategy_options())
  except (TranscribeError, ValueError) as e:  # a strategy the model cannot run, a bad setting
    raise DecodeError(str(e)) from e
  stems = iter(_output_stems(paths, output_dir))  # on_done comes in input order
  failed = []

  def done(t) -> None:
    stem = next(stems)
    for w in t.warnings:
      print(f"decode.py: warning: {w}", file=sys.stderr, flush=True)
    if t.error is not None:
      failed.append(t.name)
      print(f"decode.py: error: {t.error}", file=sys.stderr, flush=True)
      return
    print(f"{t.name}\t{t.text}", flush=True)
    try:
      write_transcript(stem, t.segments, formats)
    except OSError as e:
      failed.append(t.name)
      print(f"decode.py: error: {t.name}: cannot write its transcript: {e}",
            file=sys.stderr, flush=True)

  progress = None
  if FLAGS.progress is not False:
    progress = ProgressPrinter(min_seconds=0.0 if FLAGS.progress else 60.0)
  tr.transcribe_many(paths, on_progress=progress, on_done=done)
  if failed:
    raise DecodeError(f"{len(failed)} of {len(paths)} file(s) could not be transcribed: "
                      + ", ".join(failed))


class DecodeError(Exception):
  """A manifest that cannot be scored as asked (empty, rows skipped with
  --fail_on_skip), a strategy the model cannot run, --audio files that failed;
  decode.py prints the message and exits with status 1."""


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
  from mtp_jax.decode.api import make_decode_fn  # pylint: disable=g-import-not-at-top
  try:  # a strategy this model cannot run (e.g. ctc without a CTC head), before decoding
    make_decode_fn(model, strategy=FLAGS.strategy, max_new_tokens=max_new, **options)
  except ValueError as e:
    raise DecodeError(f"--strategy={FLAGS.strategy}: {e}") from e
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
