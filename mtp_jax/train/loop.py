"""The training loop: `train_and_evaluate(config, workdir)` runs or resumes a run.

train.py is its command-line entry point; tests and benchmarks call it directly.

The workdir receives config.json, the tokenizer (trained from the train manifests
unless config.data.tokenizer.path is set), checkpoints/ (orbax), tb/ (TensorBoard)
and metrics.jsonl. Calling again on the same workdir resumes from the latest complete
checkpoint, with the data iterator where it was. Nothing but the workdir's lock is
written into the workdir until the config is valid, an existing run's model and
tokenizer are unchanged and its checkpoint (and data iterator position) restored.

What pods and people do to a run:
* one run per workdir: the workdir's lock (`workdir.WorkdirLock`, `train.lock`) refuses
  a second run naming the holder's host and pid; a killed run's lock is taken over;
* SIGTERM / SIGINT (preemption, Ctrl-C): the current step finishes, a checkpoint of
  exactly that step is written, and `Preempted` is raised (train.py exits with
  `PREEMPTED_EXIT_CODE`); every host stops at the same step (`preemption.StopSignals`);
* a checkpoint that cannot be written (disk full, read-only directory):
  `checkpoint.CheckpointSaveError`, the earlier checkpoints intact and resumable.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Callable

from absl import logging as absl_logging
import jax
import numpy as np
from jax.experimental import multihost_utils

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax import sharding as sharding_lib
from mtp_jax.config import ConfigError
from mtp_jax.data import pipeline
from mtp_jax.data import text_corpus
from mtp_jax.data import tokenizer as tok_lib
from mtp_jax.data.errors import BadInputError, NoDataError
from mtp_jax import gguf_file
from mtp_jax.interop import gguf as gguf_io
from mtp_jax.interop import hf_llama
from mtp_jax.interop import whisper_decoder as whisper_decoder_io
from mtp_jax.mwer import word_errors
from mtp_jax.train import config as train_config
from mtp_jax.train import eval as eval_lib
from mtp_jax.train import lora as lora_lib
from mtp_jax.train import metrics as metrics_lib
from mtp_jax.train import preemption
from mtp_jax.train import pretrained as pretrained_lib
from mtp_jax.train import setup as setup_lib
from mtp_jax.train import state as state_lib
from mtp_jax.train import step as step_lib
from mtp_jax.train import workdir as workdir_lib
from mtp_jax.train.config import RunConfig

# `f(step, host_batch) -> host_batch`: see `train_and_evaluate`'s batch_transform.
BatchTransform = Callable[[int, dict], dict]


class NonFiniteError(RuntimeError):
  """Too many consecutive non-finite steps; the last good checkpoint is kept."""


Preempted = preemption.Preempted
PREEMPTED_EXIT_CODE = preemption.PREEMPTED_EXIT_CODE

# Errors of the user's making (config, workdir, data), raised before anything is
# written, and of the machine's (a workdir in use, a checkpoint that cannot be
# written, earlier ones intact); an entry point prints them as one line instead of a
# traceback.
USER_ERRORS = (ConfigError, workdir_lib.ResumeError, ckpt_lib.CheckpointError, NoDataError,
               BadInputError, workdir_lib.WorkdirInUseError, workdir_lib.WorkdirWriteError,
               ckpt_lib.CheckpointSaveError)


def _log(msg: str) -> None:
  """The run's own messages (progress lines, warm starts, buckets): printed once, on
  stdout, by process 0. Not also sent to `logging`: under absl (train.py) that printed
  every line a second time, on stderr."""
  if jax.process_index() == 0:
    print(msg, flush=True)


def _detail(msg: str) -> None:
  """A line of set-up detail (each bucket, each compiled shape's memory): shown like
  `_log`'s, except under absl's `--verbosity` below -1 (the demo's quiet runs), which
  keep the progress lines only."""
  if absl_logging.get_verbosity() >= -1:
    _log(msg)


def _train_tokenizer_whole(config, workdir: str) -> None:
  """Trains the run's tokenizer into a temporary directory of the workdir and moves it
  in, the .model last: a run killed while training it leaves no partial tokenizer
  that the next run would load (and the temporary directories of killed runs go)."""
  model = os.path.join(workdir, tok_lib.MODEL_PREFIX + ".model")
  for name in os.listdir(workdir):
    if name.startswith(".tokenizer-"):
      shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
  if os.path.isfile(model):
    return
  tmp = tempfile.mkdtemp(prefix=".tokenizer-", dir=workdir)
  try:
    tok_lib.get_tokenizer(config.data, tmp)  # trains into tmp
    for name in sorted(os.listdir(tmp), key=lambda n: n.endswith(".model")):
      os.replace(os.path.join(tmp, name), os.path.join(workdir, name))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _tokenizer(config, workdir: str) -> tok_lib.Tokenizer:
  """Loads config.data.tokenizer.path (copied into the workdir) or trains one there."""
  path = config.data.tokenizer.path
  if jax.process_index() == 0:
    if path:
      ckpt_lib.copy_tokenizer(path, workdir, config.data.tokenizer.get("merges", 0))
    else:
      _train_tokenizer_whole(config, workdir)
    tok_lib.get_tokenizer(config.data, workdir)
  multihost_utils.sync_global_devices("tokenizer")
  tok = tok_lib.Tokenizer.load(workdir)
  tok_lib.check_tokenizer_fits(tok, config.model.decoder.vocab_size)
  return tok


def _init_state(config, setup: setup_lib.TrainSetup):
  """A fresh train state: seeded init, then the configured warm starts.

  Pretrained imports (`train.encoder_init`, `train.decoder_init`) come first, as part
  of the initialization; a checkpoint (`train.init_from`) then wins wherever it has the
  parameter, except the paths `train.init_exclude` keeps at that initialization (e.g.
  new heads on a fine-tuned trunk keep their fresh values, and the trunk is the
  checkpoint's, not the imported one)."""
  tcfg, mcfg = config.train, setup.model.cfg
  state = setup.create_state(config.seed)
  params = state.params
  if tcfg.get("encoder_init", ""):
    enc = pretrained_lib.load_encoder_params(tcfg.encoder_init, mcfg)
    params = pretrained_lib.with_encoder(params, enc, mcfg)
    _log(f"encoder_init {tcfg.encoder_init}: {len(jax.tree.leaves(enc))} encoder tensors")
  if tcfg.get("decoder_init", ""):
    layers = tuple(tcfg.get("decoder_init_layers", ()))
    if mcfg.decoder.type == "whisper":
      params = whisper_decoder_io.load_decoder_into(params, tcfg.decoder_init, mcfg,
                                                    copy_unembed_to_heads=True, layers=layers)
      _log(f"decoder_init {tcfg.decoder_init}: Whisper decoder loaded"
           + (f" (blocks {layers})" if layers else ""))
    else:
      if layers:
        raise ValueError("train.decoder_init_layers selects blocks of a Whisper decoder; "
                         f"model.decoder.type={mcfg.decoder.type!r}")
      if gguf_file.is_gguf_source(tcfg.decoder_init):
        params = gguf_io.load_decoder_into(params, tcfg.decoder_init, mcfg,
                                           copy_unembed_to_heads=True)
        _log(f"decoder_init {tcfg.decoder_init}: GGUF LLaMA decoder loaded")
      else:
        params = hf_llama.load_decoder_into(params, tcfg.decoder_init, mcfg,
                                            copy_unembed_to_heads=True)
        _log(f"decoder_init {tcfg.decoder_init}: Hugging Face LLaMA decoder loaded")
  if tcfg.init_from:
    loaded = ckpt_lib.load_params(tcfg.init_from, None if tcfg.init_step < 0 else tcfg.init_step)
    params, copied, new = state_lib.merge_params(params, loaded, tcfg.init_exclude)
    shown = ", ".join(new[:4]) + (f", ... ({len(new) - 4} more)" if len(new) > 4 else "")
    _log(f"init_from {tcfg.init_from}: {len(copied)} tensors loaded, {len(new)} new"
         + (f": {shown}" if new else ""))
  for regex, src in train_config.init_parts(tcfg.get("init_parts", "")):
    loaded = ckpt_lib.load_params(src, None)
    params, copied, _ = state_lib.merge_params(params, loaded, include=regex)
    if not copied:
      raise ValueError(f"train.init_parts: {regex!r} matches no parameter of {src}")
    _log(f"init_parts {regex!r} from {src}: {len(copied)} tensors loaded")
  if setup.ctc_units is not None:
    params = state_lib.mask_ctc_bias(params, setup.ctc_units)
    _log(f"data.tokenizer.merges={config.data.tokenizer.merges}: the CTC head scores the "
         f"{len(setup.ctc_units)} ids the tokenizer can produce")
  return state if params is state.params else setup.create_state(config.seed, params=params)


def _restore_data_state(data, data_state: dict, step: int, reset: bool) -> None:
  """Puts the data iterator where checkpoint `step` left it (or leaves it fresh)."""
  if reset:
    _log(f"train.reset_data_iterator=True: the data iterator starts afresh (its state "
         f"in checkpoint step {step} is not restored)")
    return
  try:
    data.set_state(data_state)
  except pipeline.DataStateMismatchError as e:
    raise workdir_lib.ResumeError(f"{e}.\n{workdir_lib.data_state_hint(step)}") from e


def _open_data(config, workdir: str, params, mcfg):
  """(tokenizer, train iterator, feature cache or None, frames_for or None)."""
  tokenizer = _tokenizer(config, workdir)
  cache, frames_for = None, None
  if config.data.text_corpus:  # text only: decoder LM pretraining
    data = text_corpus.make_text_iterator(config.data, tokenizer, seed=config.data.seed)
    _log(f"text-only training on data.text_corpus={config.data.text_corpus} (no audio, "
         "no dev-set evaluation)")
    return tokenizer, data, cache, frames_for
  if config.data.get("feature_cache", ""):
    cache, frames_for = pretrained_lib.open_cache(config.data.feature_cache, params, mcfg,
                                                  config.train)
    _log(f"feature cache {config.data.feature_cache}: {len(cache)} utterances, d={cache.dim}")
  data = pipeline.make_train_iterator(config.data, tokenizer, seed=config.data.seed,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count(),
                                      feature_cache=cache, frames_for=frames_for)
  return tokenizer, data, cache, frames_for


def _check_grad_accum(config, data) -> None:
  """Refuses a `train.grad_accum` that does not divide every global batch size the
  data iterator yields (before anything is compiled)."""
  accum = int(config.train.grad_accum)
  if accum <= 1:
    return
  pc = jax.process_count()
  sizes = sorted({b * pc for b, _, _ in data.batch_shapes})
  if all(b % accum == 0 for b in sizes):
    return
  d = config.data
  multiple = pipeline.batch_multiple(d, pc)
  if d.text_corpus or d.batching == "random":
    made = (f"data.batch_size={d.batch_size} rounded down to a multiple of {multiple} "
            f"(data.batch_size_multiple={d.batch_size_multiple}"
            + (", 0 = the device count" if not d.batch_size_multiple else "")
            + (f", and the {pc} processes" if pc > 1 else "") + f") gives {sizes[0]} rows")
  else:
    made = (f"data.batching={d.batching!r} gives bucket batch sizes {sizes} (multiples of "
            f"{multiple}: data.batch_size_multiple={d.batch_size_multiple}"
            + (", 0 = the device count" if not d.batch_size_multiple else "") + ")")
  raise ConfigError(
      f"train.grad_accum={accum}: must divide every batch size, but {made}; set "
      f"data.batch_size_multiple={np.lcm(multiple, accum)} (a multiple of both) or another "
      "train.grad_accum")


def _lock_workdir(workdir: str) -> workdir_lib.WorkdirLock:
  """Takes the workdir's lock (process 0 of a multi-host run; all raise if it fails).

  Raises:
    WorkdirInUseError: another run holds it (its host and pid named).
    WorkdirWriteError: the lock cannot be written (read-only or full workdir).
  """
  lock = workdir_lib.WorkdirLock(workdir, log=_log)
  err = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except (workdir_lib.WorkdirInUseError, workdir_lib.WorkdirWriteError) as e:
      err = e
  if jax.process_count() > 1:
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(err is None)))
    if not ok and err is None:
      err = workdir_lib.WorkdirInUseError(
          f"{workdir}: process 0 could not take the workdir lock (its log says why)", {})
  if err is not None:
    lock.release()
    raise err
  return lock


def _eval_batches(config, mesh, tokenizer):
  """The dev manifest's batches (None without one), `train.eval_batch_size` rounded up
  to a multiple of the data-parallel devices and the process count."""
  if not config.data.dev_manifest:
    return None
  pc = jax.process_count()
  per = int(np.prod([mesh.shape[a] for a in ("data", "fsdp")]))
  multiple = np.lcm(per, pc)
  bs = -(-int(config.train.eval_batch_size) // multiple) * multiple
  return pipeline.make_eval_batches(config.data.dev_manifest, tokenizer, config.data,
                                    batch_size=int(bs))


def _make_eval(config, setup: setup_lib.TrainSetup, eval_batches, tokenizer, writer):
  """`run_eval(step, params) -> {"eval/...": value}`: WER on the dev batches (and the
  encoder's CTC WER with a CTC head), written to the metrics and logged."""
  tcfg, mcfg = config.train, setup.model.cfg
  max_new = int(tcfg.eval_max_new_tokens) or mcfg.decoder.max_text_len - 2
  kw = dict(max_new_tokens=max_new, max_utterances=int(tcfg.eval_max_utterances),
            numbers_to_words=bool(config.data.numbers_to_words))

  def evaluate(params, **extra):  # LoRA adapters folded in: decoding runs the plain model
    return eval_lib.evaluate(setup.model, lora_lib.merge(params, setup.lora), eval_batches,
                             tokenizer, setup.mesh, setup.rules, **kw, **extra)

  def run_eval(step: int, params) -> dict:
    t = time.perf_counter()
    res, examples = evaluate(params)
    out = {f"eval/{k}": float(v) for k, v in res.items()}
    out["eval/seconds"] = time.perf_counter() - t
    _log(f"eval step {step}: WER {res['wer']:.4f} ({res['errors']}/{res['num_ref_words']} "
         f"words, {res['num_utterances']} utts, {out['eval/seconds']:.1f} s)")
    if mcfg.ctc_head:  # does the encoder read the audio? (no decoder involved)
      ctc, _ = evaluate(params, strategy="ctc")
      out["eval/ctc_wer"] = float(ctc["wer"])
      _log(f"eval step {step}: CTC head WER {ctc['wer']:.4f}")
    writer.write(step, out)
    if examples:
      writer.write_text(step, "eval/examples", "\n\n".join(
          f"{u}\nREF: {r}\nHYP: {h}" for u, r, h in examples[:5]))
    return out

  return run_eval


def train_and_evaluate(config, workdir: str, *, stop_after: int | None = None,
                       batch_transform: BatchTransform | None = None,
                       devices=None) -> dict:
  """Runs (or resumes) training to `config.train.steps`; returns the last metrics.

  With `config.train.max_minutes` > 0 the run also stops (checkpointed, evaluated) at
  the first logging step after that much wall time since this call started.

  Args:
    config: the full ConfigDict (see configs/).
    workdir: run directory.
    stop_after: stop (after checkpointing) once this step is reached, as if the job
      were preempted there; the schedule still spans `train.steps`.
    batch_transform: optional `f(step, host_batch) -> host_batch` applied to each
      batch before its step (0-based step index; the batch as the pipeline yields it,
      with "audio" [B, S] or "frames" [B, S', d] (neither in a text-only run),
      "text" [B, L], lengths and "utt_id"). Tests use it to record the batches, to
      poison one with NaN, or to raise at a step as if the job were killed there.
    devices: devices for the mesh (default all; tests use a subset).
  Raises:
    ConfigError: an invalid config value (named); nothing is written.
    ResumeError: `workdir` holds a run of another model or tokenizer, or its data
      iterator state does not fit the training data (the message says what to do);
      nothing is written.
    CheckpointError: no checkpoint of `workdir` can be read; nothing is written.
    NoDataError, BadInputError: no usable training utterance; nothing is written.
    NonFiniteError: `train.max_consecutive_nonfinite` skipped steps in a row.
    WorkdirInUseError: another run holds the workdir (its host and pid named).
    WorkdirWriteError: the workdir cannot be written (its lock cannot be created).
    CheckpointSaveError: a checkpoint could not be written (disk full, read-only
      directory); the earlier ones are intact and a re-run resumes from them.
    Preempted: SIGTERM or SIGINT: the step in flight was finished and checkpointed
      (every host at the same step); a re-run resumes as if never stopped.
  """
  t_start = time.time()
  # Nothing but the lock (removed on exit) is written into the workdir until the config
  # is valid, an existing run's model is unchanged and its checkpoint (and data
  # iterator position) restored.
  mcfg = RunConfig.from_config(config).model  # ConfigError naming the field
  workdir = os.path.abspath(workdir)
  lock = _lock_workdir(workdir)
  try:
    with preemption.StopSignals(log=_log) as signals:
      return _train(config, workdir, mcfg, t_start, signals, stop_after=stop_after,
                    batch_transform=batch_transform, devices=devices)
  finally:
    lock.release()


def _train(config, workdir: str, mcfg, t_start: float, signals: preemption.StopSignals, *,
           stop_after: int | None, batch_transform: BatchTransform | None,
           devices) -> dict:
  """`train_and_evaluate` once the workdir is locked and the signals caught."""
  tcfg = config.train
  if ckpt_lib.has_checkpoints(workdir):
    workdir_lib.check_model_unchanged(workdir, mcfg)
    workdir_lib.check_tokenizer_unchanged(workdir, config.data.tokenizer.path,
                                          config.data.tokenizer.get("merges", 0))

  # ---------------------------------------------------------------- mesh, model, optimizer
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  _log(f"mesh {dict(mesh.shape)} over {jax.device_count()} devices "
       f"({jax.process_count()} processes); model K={mcfg.mtp.num_heads} "
       f"{mcfg.mtp.head_type}, dtype {mcfg.dtype}")
  setup = setup_lib.make_train_setup(config, mesh, rules)

  # ---------------------------------------------------------------- state: resume / init
  ckpt = ckpt_lib.Checkpointer(workdir, keep=tcfg.keep_checkpoints,
                               async_save=tcfg.async_checkpointing)
  data = None
  try:
    state, data_state, restored = ckpt.restore_newest(setup.abstract_state, setup.shardings,
                                                      log=_log)
    if restored is not None:
      _log(f"resumed from step {restored} in {ckpt.directory}")
    else:
      state = _init_state(config, setup)

    # -------------------------------------------------------------- data
    tokenizer, data, cache, frames_for = _open_data(config, workdir, state.params, mcfg)
    if data_state is not None:
      _restore_data_state(data, data_state, restored,
                          bool(tcfg.get("reset_data_iterator", False)))
    _check_grad_accum(config, data)
  except BaseException:
    if data is not None:
      data.close()
    ckpt.close()
    raise
  ckpt_lib.save_config(workdir, config)  # now config.json describes the checkpoints
  for b in data.describe():
    _detail(f"bucket {b}")
  report = data.bad_input_report()
  if report["num_skipped"]:
    _log(f"bad inputs skipped while preparing: {report['num_skipped']}: {report['prepared']}")

  # ---------------------------------------------------------------- compile per bucket shape
  pc = jax.process_count()
  shapes = [(b * pc, s if frames_for is None else frames_for(s), l)
            for b, s, l in data.batch_shapes]
  word_tables = (word_errors.tables_from_tokenizer(tokenizer)
                 if tcfg.get("objective", "ce") == "mwer" else None)
  t0 = time.perf_counter()
  kind = "text" if config.data.text_corpus else "frames" if cache is not None else "audio"
  compiled = setup.compile_step(shapes, word_tables=word_tables, log=_detail, kind=kind,
                                frames_dim=cache.dim if cache is not None else 0)
  _log(f"compiled {len(compiled)} step shapes in {time.perf_counter() - t0:.1f} s")
  # A text-only run has no audio to transcribe: no dev-set evaluation.
  eval_batches = None if kind == "text" else _eval_batches(config, mesh, tokenizer)

  # ---------------------------------------------------------------- the loop
  total = int(tcfg.steps)
  start = int(jax.device_get(state.step))
  writer = metrics_lib.MetricWriter(workdir, enabled=jax.process_index() == 0,
                                    start_step=start)
  run_eval = _make_eval(config, setup, eval_batches, tokenizer, writer)
  deadline = t_start + 60.0 * tcfg.max_minutes if tcfg.max_minutes > 0 else float("inf")
  thr = metrics_lib.Throughput(
      total, start, max(deadline - time.time(), 1e-3) if tcfg.max_minutes > 0 else 0.0)
  sr = float(config.data.sample_rate)
  pending = None  # (step, device metrics) of the last dispatched step
  last: dict = {}
  seen_bad = data.bad_input_report()["num_skipped"]

  def check(pending) -> dict:
    """Fetches a step's metrics; stops on too many non-finite steps in a row."""
    s, m = pending
    host = metrics_lib.flatten_step_metrics(jax.device_get(m))
    if host["train/nonfinite_run"] >= tcfg.max_consecutive_nonfinite:
      ckpt.wait()
      raise NonFiniteError(
          f"{int(host['train/nonfinite_run'])} consecutive non-finite steps (loss or "
          f"gradient) ending at step {s} (train.max_consecutive_nonfinite="
          f"{tcfg.max_consecutive_nonfinite}); last good checkpoint: step "
          f"{ckpt.latest_step()} in {ckpt.directory}")
    return host

  end = total if stop_after is None else min(total, int(stop_after))
  try:
    sig = signals.agreed(start)
    if sig is not None:  # before the first step: the checkpoint on disk is the state
      raise preemption.Preempted(
          f"{sig}: stopped before training step {start + 1}; nothing new to save "
          + (f"(checkpoint step {restored} in {ckpt.directory})" if restored is not None
             else "(no checkpoint yet)") + "; re-run the same command to resume",
          signal_name=sig, step=None)
    for step in range(start, end):
      batch = next(data)
      if batch_transform is not None:
        batch = batch_transform(step, batch)
      if "audio_len" in batch:
        thr.add_audio(float(np.sum(batch["audio_len"])) / sr * pc)
      shape = step_lib.batch_shape(batch, pc)
      state, metrics = compiled[shape](state, step_lib.device_batch(batch, mesh, rules))
      if pending is not None:
        last = check(pending)
      pending = (step + 1, metrics)
      done = step + 1
      sig = signals.agreed(done)  # every host, every step: they stop at the same one
      out_of_time = done % tcfg.log_every == 0 and time.time() > deadline
      if out_of_time and jax.process_count() > 1:  # every host must stop at the same step
        out_of_time = bool(multihost_utils.broadcast_one_to_all(np.bool_(out_of_time)))
      if out_of_time:
        _log(f"train.max_minutes={tcfg.max_minutes} reached at step {done}/{total}: "
             "checkpointing and stopping")
      log_now = done % tcfg.log_every == 0 or done == total or out_of_time
      save_now = (done % tcfg.checkpoint_every == 0 or done in (total, end) or out_of_time
                  or sig is not None)
      eval_now = eval_batches is not None and sig is None and (
          (tcfg.eval_every and done % tcfg.eval_every == 0) or done == total or out_of_time)
      if log_now or save_now or eval_now:
        last = check(pending)
        pending = None
      if log_now:
        bad = data.bad_input_report()
        scalars = dict(last, **thr.report(done))
        scalars["data/bad_inputs_skipped"] = float(bad["num_skipped"])
        writer.write(done, scalars)
        _log(metrics_lib.progress_line(done, total, scalars))
        if bad["num_skipped"] != seen_bad:  # each bad row is logged once
          _log(f"bad inputs found while reading ({bad['num_skipped']} skipped in all): "
               f"{bad['rows'][seen_bad:]}")
          seen_bad = bad["num_skipped"]
      if save_now:
        ckpt.save(state, data.get_state())
      if sig is not None:
        ckpt.wait()
        seconds = signals.seconds_since_signal()
        msg = (f"{sig}: checkpoint step {done} written to {ckpt.directory}"
               + (f" {seconds:.1f} s after the signal" if seconds else "")
               + "; stopping (re-run the same command to resume)")
        _log(msg)
        raise preemption.Preempted(msg, signal_name=sig, step=done, seconds=seconds)
      if eval_now:
        last.update(run_eval(done, state.params))
      if out_of_time:
        break
    if pending is not None:
      last = check(pending)
  finally:
    ckpt.close()
    writer.close()
    data.close()
  last["step"] = int(jax.device_get(state.step))
  return last
