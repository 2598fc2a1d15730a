"""MWER N-best generation: K-token prefix blocks vs single tokens; optional MWER fine-tuning.

The MWER train step (`--config.train.objective=mwer`) runs a prefix beam search per
utterance inside the jitted step; this measures what that search costs with blocks of
up to K tokens (the model's heads) against K=1 (ordinary beam search): decoder calls
(loop iterations) and wall time to produce the N-best of the same utterances, compile
time apart, plus the N-best's quality (top-1 / oracle WER, expected word errors under
the rescored posterior, exactly what the MWER loss weighs).

Trained model:   python bench/mwer.py --workdir runs/demo --max_utts 32
Random `small`:  python bench/mwer.py --max_utts 8 --max_new_tokens 24
WER before/after MWER fine-tuning (trains a copy in a temp dir, `train.init_from`):
                 python bench/mwer.py --workdir runs/demo --finetune_steps 50
The real-speech recipe (trains on its feature cache; a heads_only run's trunk is tuned):
                 python bench/mwer.py --workdir runs/wt/k1_heads --max_utts 300 \
                     --batch_size 16 --finetune_steps 100
On held-out speech (espeak-ng speech of sentences the recipe never trained on, cached):
                 python -m mtp_jax.synth.sentence_lists --out runs/wt/sentences_unseen.txt \
                     --exclude_manifests runs/wt/synth/train.jsonl
                 python -m mtp_jax.synth --sentences runs/wt/sentences_unseen.txt \
                     --variants all --snr_db 10,40 --noise_fraction 0.3 --num 1500 \
                     --workers 2 --seed 1 --name train --out runs/wt/synth_unseen
                 python -m mtp_jax.train.pretrained --out runs/wt/features_unseen \
                     --config configs/recipes/whisper_tiny_cpu.py \
                     --manifests runs/wt/synth_unseen/train.jsonl
                 python bench/mwer.py --workdir runs/wt/k1_heads --max_utts 300 \
                     --batch_size 16 --finetune_steps 100 \
                     --finetune_manifests runs/wt/synth_unseen/train.jsonl \
                     --finetune_feature_cache runs/wt/features_unseen

Writes bench/results/mwer.json (or --out).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from mtp_jax.checkpoint import newest_step_dir  # noqa: E402
from mtp_jax.data.manifest import write_subset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "", "trained workdir (default: a random configs/small.py:K=4)")
flags.DEFINE_string("manifest", "", "utterances (default: the run's dev manifest, else "
                    "../shared/data/kathleen/test.jsonl)")
flags.DEFINE_string("train_manifest", "../shared/data/kathleen/train.jsonl",
                    "tokenizer text for the random model")
flags.DEFINE_integer("max_utts", 16, "first N utterances of the manifest")
flags.DEFINE_integer("batch_size", 8, "utterances per search call")
flags.DEFINE_integer("beam", 4, "beam width")
flags.DEFINE_integer("nbest", 4, "N-best size")
flags.DEFINE_list("block_sizes", [], "K values to compare (default: the model's heads and 1)")
flags.DEFINE_integer("max_new_tokens", 0, "hypothesis cap (default config.data.max_text_tokens)")
flags.DEFINE_integer("repeats", 2, "timed passes over the utterances (best pass reported)")
flags.DEFINE_integer("finetune_steps", 0, "> 0: MWER fine-tune a copy and report WER before/after")
flags.DEFINE_float("finetune_lr", 1e-4, "MWER fine-tuning learning rate")
flags.DEFINE_float("lambda_ce", 0.01, "MWER fine-tuning CE weight")
flags.DEFINE_string("finetune_trainable", "",
                    "train.trainable regex for MWER fine-tuning (default: every parameter the "
                    "run did not freeze; a heads_only run's trunk is trained too)")
flags.DEFINE_enum("finetune_objective", "mwer", ["mwer", "ce"],
                  "ce: the control, plain cross-entropy fine-tuning on the same data, steps "
                  "and learning rate (no CTC term, as MWER adds none), so a gain can be told "
                  "apart from what more data alone does")
flags.DEFINE_string("finetune_manifests", "",
                    "comma list: MWER fine-tuning data (default: the run's train manifests), "
                    "e.g. speech of sentences the model never saw")
flags.DEFINE_string("finetune_feature_cache", "",
                    "feature cache covering --finetune_manifests (frozen-encoder runs)")
flags.DEFINE_string("out", "", "JSON path (default bench/results/mwer.json)")


def _model():
  """(name, config, model, params, tokenizer)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig, load_config_file  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  if FLAGS.workdir:
    from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
    config, params, tok = restore_for_inference(FLAGS.workdir)
    return (FLAGS.workdir, config, SpeechLLaMA(ModelConfig.from_config(config.model)),
            params, tok)
  from mtp_jax.data.tokenizer import train_tokenizer  # pylint: disable=g-import-not-at-top
  config = load_config_file(os.path.join(ROOT, "configs/small.py"), "K=4")
  tok = train_tokenizer(FLAGS.train_manifest, tempfile.mkdtemp(),
                        vocab_size=config.data.tokenizer.vocab_size)
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16000)),
                               jnp.full((1,), 16000, jnp.int32), jnp.ones((1, 4), jnp.int32))
  return "random-small-K4", config, model, params, tok


def _manifest(config, tmp):
  """The first --max_utts entries of the manifest, audio paths made absolute."""
  src = FLAGS.manifest or config.data.get("dev_manifest", "") or \
      "../shared/data/kathleen/test.jsonl"
  return write_subset(src, os.path.join(tmp, "subset.jsonl"), FLAGS.max_utts)


def _chunks(config, tok, manifest):
  """All utterances padded to one shape, split into --batch_size rows (one compile)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.pipeline import make_eval_batches  # pylint: disable=g-import-not-at-top
  (batch,) = list(make_eval_batches(manifest, tok, config.data, batch_size=FLAGS.max_utts))
  n = int(np.sum(batch["audio_len"] > 0))
  bs = FLAGS.batch_size
  rows = -(-n // bs) * bs
  pad = lambda x: np.concatenate([x[:n], np.zeros((rows - n,) + x.shape[1:], x.dtype)])  # noqa: E731
  keys = ("audio", "audio_len", "text", "text_len")
  full = {k: pad(np.asarray(batch[k])) for k in keys}
  refs = list(batch["ref_text"][:n])
  return [{k: v[i:i + bs] for k, v in full.items()} for i in range(0, rows, bs)], refs, n


def _search_rows(model, params, chunks, refs, n, tok, k, max_new, tables):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtp_jax import text as text_lib  # pylint: disable=g-import-not-at-top
  from mtp_jax.mwer import loss as mwer_lib  # pylint: disable=g-import-not-at-top
  from mtp_jax.mwer import search as search_lib  # pylint: disable=g-import-not-at-top
  from mtp_jax.mwer import word_errors as we  # pylint: disable=g-import-not-at-top

  search = jax.jit(search_lib.make_nbest_search(model, beam=FLAGS.beam, nbest=FLAGS.nbest,
                                                max_new_tokens=max_new, block_size=k))

  @jax.jit
  def rescore(params, audio, audio_len, text, text_len, nb):
    """Expected word errors of the N-best under the rescored posterior (eval mode)."""
    emb, valid, alen = model.apply(params, audio, audio_len, method=model.encode)
    lp = mwer_lib.sequence_logprobs(model, params, emb, valid, alen, nb["tokens"],
                                    nb["lengths"])
    b, m, t = nb["tokens"].shape
    err = we.word_errors(nb["tokens"].reshape(b * m, t), nb["lengths"].reshape(-1),
                         jax.numpy.repeat(text, m, 0), jax.numpy.repeat(text_len, m, 0),
                         tables).reshape(b, m)
    ok = mwer_lib.distinct_mask(nb["tokens"], nb["lengths"], nb["valid"])
    _, aux = mwer_lib.mwer_objective(lp, err, ok)
    return aux["expected_errors"], err

  c0 = chunks[0]
  t0 = time.perf_counter()
  compiled = search.lower(params, c0["audio"], c0["audio_len"]).compile()
  compile_s = time.perf_counter() - t0
  best = None
  for _ in range(max(FLAGS.repeats, 1)):
    outs, t0 = [], time.perf_counter()
    for c in chunks:
      outs.append(compiled(params, c["audio"], c["audio_len"]))
    jax.block_until_ready(outs)
    wall = time.perf_counter() - t0
    best = wall if best is None else min(best, wall)
  outs = jax.device_get(outs)
  calls = np.concatenate([o["calls"] for o in outs])[:n]
  total_calls = int(sum(int(o["total_calls"]) for o in outs))
  exp_err, oracle_hyps, top_hyps = [], [], []
  for c, o in zip(chunks, outs):
    e, err = jax.device_get(rescore(params, c["audio"], c["audio_len"], c["text"],
                                    c["text_len"], o))
    exp_err.extend(e.tolist())
    for r in range(len(e)):
      valid = o["valid"][r]
      j = int(np.argmin(np.where(valid, err[r], 1 << 30)))
      top_hyps.append(tok.decode(o["tokens"][r, 0, :o["lengths"][r, 0]].tolist()))
      oracle_hyps.append(tok.decode(o["tokens"][r, j, :o["lengths"][r, j]].tolist()))
  return dict(block_size=k, beam=FLAGS.beam, nbest=FLAGS.nbest, utterances=n,
              batch_size=FLAGS.batch_size, max_new_tokens=max_new,
              compile_s=compile_s, nbest_s=best, utt_per_s=n / best,
              calls_per_utt=float(np.mean(calls)), total_calls=total_calls,
              top1_wer=text_lib.wer(refs, top_hyps[:n])["wer"],
              oracle_wer=text_lib.wer(refs, oracle_hyps[:n])["wer"],
              expected_errors_per_utt=float(np.mean(exp_err[:n])))


def _finetune(config, tok, manifest, workdir_in, tmp):
  """MWER fine-tuning of a copy; greedy WER on `manifest` before and after."""
  from mtp_jax.train.config import upgrade_train_section  # pylint: disable=g-import-not-at-top
  from mtp_jax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  c = config.copy_and_resolve_references()
  c.train = upgrade_train_section(c.train)  # runs saved before (or after) a field change
  if os.path.exists(os.path.join(workdir_in, "tokenizer.model")):  # else e.g. whisper:tiny.en
    c.data.tokenizer.path = os.path.join(workdir_in, "tokenizer.model")
  c.data.dev_manifest = manifest
  c.data.num_duration_bins = 1  # one padded batch shape: one (slow) MWER step compile
  if FLAGS.finetune_manifests:
    c.data.train_manifests = FLAGS.finetune_manifests
  if FLAGS.finetune_feature_cache:
    c.data.feature_cache = FLAGS.finetune_feature_cache
  # Fine-tune what the run trained plus its trunk: a heads_only run (K heads on a frozen
  # trunk) would otherwise only move its heads, which MWER's sequence scores do not use.
  c.train.update(mode="joint", trainable=FLAGS.finetune_trainable, init_exclude="",
                 objective=FLAGS.finetune_objective, init_from=workdir_in, init_step=-1,
                 steps=FLAGS.finetune_steps,
                 learning_rate=FLAGS.finetune_lr, warmup_steps=min(10, FLAGS.finetune_steps),
                 max_minutes=0.0, checkpoint_every=10**9, eval_every=0,
                 eval_max_utterances=FLAGS.max_utts, log_every=max(1, FLAGS.finetune_steps // 5))
  c.train.mwer.update(beam=FLAGS.beam, nbest=FLAGS.nbest, lambda_ce=FLAGS.lambda_ce)
  if FLAGS.finetune_objective == "ce":
    c.train.ctc_weight = 0.0
  before = _greedy_wer(config, tok, manifest, workdir_in)
  t0 = time.perf_counter()
  after = train_and_evaluate(c, os.path.join(tmp, "after"))
  return dict(wer_before=before, wer_after=after.get("eval/wer"),
              objective=FLAGS.finetune_objective, finetune_steps=FLAGS.finetune_steps,
              finetune_lr=FLAGS.finetune_lr,
              lambda_ce=FLAGS.lambda_ce, finetune_s=time.perf_counter() - t0,
              last_train_metrics={k: v for k, v in after.items() if k.startswith("train/")})


def _greedy_wer(config, tok, manifest, workdir):
  """Greedy WER of the workdir's params on `manifest` (as the training loop's eval computes it)."""
  import jax  # pylint: disable=g-import-not-at-top
  from mtp_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.pipeline import make_eval_batches  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA  # pylint: disable=g-import-not-at-top
  from mtp_jax.train import eval as eval_lib  # pylint: disable=g-import-not-at-top
  mesh = sharding_lib.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  _, params, _ = restore_for_inference(workdir, mesh=mesh, rules=rules)
  batches = make_eval_batches(manifest, tok, config.data,
                              batch_size=int(config.train.eval_batch_size))
  res, _ = eval_lib.evaluate(SpeechLLaMA(ModelConfig.from_config(config.model)), params,
                             batches, tok, mesh, rules,
                             max_new_tokens=int(config.train.eval_max_new_tokens)
                             or config.model.decoder.max_text_len - 2,
                             max_utterances=FLAGS.max_utts,
                             numbers_to_words=bool(config.data.numbers_to_words))
  return float(res["wer"])


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from mtp_jax.mwer import word_errors as we  # pylint: disable=g-import-not-at-top
  name, config, model, params, tok = _model()
  heads = model.cfg.mtp.num_heads
  ks = [int(k) for k in FLAGS.block_sizes] or sorted({heads, 1}, reverse=True)
  max_new = FLAGS.max_new_tokens or int(config.data.max_text_tokens)
  tables = we.tables_from_tokenizer(tok)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    manifest = _manifest(config, tmp)
    chunks, refs, n = _chunks(config, tok, manifest)
    for k in ks:
      r = dict(_search_rows(model, params, chunks, refs, n, tok, k, max_new, tables), model=name)
      rows.append(r)
      print(json.dumps(r), flush=True)
    base = next((r for r in rows if r["block_size"] == 1), None)
    if base is not None:
      for r in rows:
        r["calls_reduction_vs_k1"] = base["calls_per_utt"] / max(r["calls_per_utt"], 1e-9)
        r["total_calls_reduction_vs_k1"] = base["total_calls"] / max(r["total_calls"], 1)
        r["speedup_vs_k1"] = base["nbest_s"] / max(r["nbest_s"], 1e-9)
    finetune = None
    if FLAGS.finetune_steps > 0:
      if not FLAGS.workdir:
        raise app.UsageError("--finetune_steps needs --workdir (a trained CE model)")
      finetune = _finetune(config, tok, manifest, os.path.abspath(FLAGS.workdir), tmp)
  info = dict(platform=platform.platform(), processor=platform.processor(),
              cpu_count=os.cpu_count(), jax_version=jax.__version__,
              devices=[str(d) for d in jax.devices()],
              date=datetime.datetime.now(datetime.timezone.utc).isoformat(), argv=sys.argv,
              checkpoint_step=newest_step_dir(FLAGS.workdir))
  out = FLAGS.out or os.path.join(ROOT, "bench", "results", "mwer.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(dict(machine=info, search=rows, finetune=finetune), f, indent=2)
  cols = ["block_size", "calls_per_utt", "total_calls", "nbest_s", "compile_s",
          "calls_reduction_vs_k1", "speedup_vs_k1", "top1_wer", "oracle_wer",
          "expected_errors_per_utt"]
  print("\n" + " | ".join(cols))
  for r in rows:
    print(" | ".join(f"{r.get(c, float('nan')):.3f}" if isinstance(r.get(c), float)
                     else str(r.get(c, "")) for c in cols))
  if finetune:
    print(f"{finetune['objective'].upper()} fine-tuning {finetune['finetune_steps']} steps: WER "
          f"{finetune['wer_before']} -> {finetune['wer_after']}")
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
