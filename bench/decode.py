"""Decoding strategies side by side: WER, calls/utt, call reduction and speedup vs greedy.

Trained models (one workdir per head type, K=4):
  python bench/decode.py --workdirs runs/ind,runs/lat,runs/seq --max_utts 100
Randomly initialized `small` models (plumbing/speed only; WER and acceptance are
meaningless, a random model's drafts are rarely accepted):
  python bench/decode.py --random_init --max_utts 8 --max_new_tokens 32

Every ratio compares strategies of one model measured in this run at the same
batch size; compile time is reported apart. `speedup` is end to end (encoder, prefill
and decoding loop); `loop_speedup` leaves out the encoder + prefill time, measured
apart as a greedy decode of one token, since multi-token decoding only shortens the
loop. Writes bench/results/decode_<date>.json.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from mtp_jax.data.manifest import write_subset  # noqa: E402
from mtp_jax.machine import machine_info  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", [], "trained workdirs (one per head type)")
flags.DEFINE_bool("random_init", False, "use randomly initialized configs/small.py models")
flags.DEFINE_list("head_types", ["independent", "latent", "sequential"], "for --random_init")
flags.DEFINE_integer("K", 4, "heads for --random_init")
flags.DEFINE_string("manifest", "../shared/data/kathleen/test.jsonl", "test manifest")
flags.DEFINE_string("train_manifest", "../shared/data/kathleen/train.jsonl",
                    "tokenizer training text for --random_init")
flags.DEFINE_integer("max_utts", 32, "first N utterances of the manifest")
flags.DEFINE_list("batch_sizes", ["1", "16"], "batch sizes")
flags.DEFINE_list("strategies", ["greedy", "verify", "threshold", "beam"],
                  "strategies, each optionally with options, e.g. threshold:threshold=0.9 (greedy first: "
                  "the reference; add ctc for models trained with a CTC head)")
flags.DEFINE_float("threshold", 0.8, "tau")
flags.DEFINE_integer("beam", 4, "beam width")
flags.DEFINE_integer("max_new_tokens", None, "token cap (default config.data.max_text_tokens)")
flags.DEFINE_string("out", None, "JSON path (default bench/results/decode_<date>.json)")
flags.DEFINE_bool("phase_split", True,
                  "also time encoder+prefill alone (greedy, max_new_tokens=1) so each row "
                  "gets loop_s = decode_s - prefix_s and loop_speedup vs greedy: the part "
                  "of the time that multi-token decoding can shorten")


def _models(tmp):
  """Yields (name, model, params, tokenizer, config)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig, load_config_file  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  if FLAGS.random_init:
    from mtp_jax.data.tokenizer import train_tokenizer  # pylint: disable=g-import-not-at-top
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for ht in FLAGS.head_types:
      config = load_config_file(os.path.join(root, "configs/small.py"), f"K={FLAGS.K},head={ht}")
      tok = train_tokenizer(FLAGS.train_manifest, tmp,
                            vocab_size=config.data.tokenizer.vocab_size)
      model = SpeechLLaMA(ModelConfig.from_config(config.model))
      params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16000)),
                                   jnp.full((1,), 16000, jnp.int32), jnp.ones((1, 4), jnp.int32))
      yield f"random-{ht}-K{FLAGS.K}", model, params, tok, config
  from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
  for wd in FLAGS.workdirs:
    config, params, tok = restore_for_inference(wd)
    yield wd, SpeechLLaMA(ModelConfig.from_config(config.model)), params, tok, config


def _first_utts(tmp):
  return write_subset(FLAGS.manifest, os.path.join(tmp, "test_subset.jsonl"), FLAGS.max_utts)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.pipeline import make_eval_batches, scoring_data_config  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode import registry  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode.summary import decode_batches, format_table, vs_greedy  # pylint: disable=g-import-not-at-top
  from mtp_jax.model import encoders  # pylint: disable=g-import-not-at-top
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    manifest = _first_utts(tmp)
    for name, model, params, tok, config in _models(tmp):
      max_new = FLAGS.max_new_tokens or int(config.data.max_text_tokens)
      for bs in map(int, FLAGS.batch_sizes):
        batches = list(make_eval_batches(manifest, tok, scoring_data_config(
            config.data, encoders.max_audio_seconds(model.cfg)), batch_size=bs))
        base = None
        sr = int(config.data.sample_rate)
        prefix_s = (decode_batches(model, params, tok, batches, strategy="greedy",
                                   max_new_tokens=1, sample_rate=sr)["summary"]["decode_s"]
                    if FLAGS.phase_split else None)
        for spec in FLAGS.strategies:
          strategy, options = registry.split_spec(spec)
          options = dict(dict(threshold=FLAGS.threshold, beam=FLAGS.beam), **options)
          s = decode_batches(model, params, tok, batches, strategy=strategy,
                             max_new_tokens=max_new, sample_rate=sr,
                             numbers_to_words=bool(config.data.numbers_to_words),
                             **options)["summary"]
          s = dict(s, strategy=spec, model=name, batch_size=bs, random_init=FLAGS.random_init)
          if prefix_s is not None and strategy != "ctc":
            s.update(prefix_s=prefix_s, loop_s=max(s["decode_s"] - prefix_s, 1e-9))
          if strategy == "greedy":
            base = s
          if base is not None:
            s.update(vs_greedy(base, s))  # ctc makes no decoder call: None
            if "loop_s" in s and "loop_s" in base:
              s["loop_speedup"] = base["loop_s"] / s["loop_s"]
          rows.append(s)
          print(format_table([s], ["model", "batch_size", "strategy", "wer", "calls_per_utt",
                                   "calls_reduction", "speedup", "loop_speedup", "rtfx",
                                   "compile_s"]),
                flush=True)
  info = machine_info(devices=[str(d) for d in jax.devices()], argv=sys.argv,
                      random_init=FLAGS.random_init)
  out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                  f"decode_{datetime.date.today().isoformat()}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(dict(machine=info, rows=rows), f, indent=2)
  print()
  print(format_table(rows, ["model", "batch_size", "strategy", "wer", "calls_per_utt",
                            "calls_reduction", "tokens_per_call", "speedup", "loop_speedup",
                            "rtfx", "compile_s", "latency_p50_s", "latency_p90_s"]))
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
