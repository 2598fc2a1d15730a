"""Per-bucket batch-size search: the largest batch of each bucket shape that fits.

  python -m mtp_jax.tools.batch_search --config configs/small.py:K=4 \
      --config.data.train_manifests=../shared/data/kathleen/train.jsonl \
      --out runs/x/batch_sizes.json [--memory_budget_gb 4] [--compile_only]

then train with `--config.data.bucket_batch_sizes=runs/x/batch_sizes.json`.

The buckets come from the data pipeline's own code (`pipeline.prepare_utterances`,
`pipeline.make_buckets_for`), so their (S, L) shapes, hence the override keys,
are the ones training will use. For each bucket, largest shape first, the real
sharded train step (`mtp_jax.train.step`) is AOT-compiled at (B, S, L) and, unless
`--compile_only`, run for a few steps on random non-zero audio and tokens. B
doubles until the step does not fit, then is bisected to within 5%:

  * it does not fit when compiling or running raises XLA RESOURCE_EXHAUSTED, or
  * when the compiled step's per-device memory (arguments + outputs - donated
    aliases + temporaries, from `memory_analysis()`) exceeds the budget.

The budget defaults to the device's memory limit on an accelerator; on CPU
`--memory_budget_gb` (GiB) is required (the host never runs out of memory).
Batch sizes are multiples of the data-parallel multiple (the pipeline's
`batch_size_multiple` and process count, and `train.grad_accum`). A bucket whose
shape is dominated (S and L no larger) by an already searched bucket starts from
that bucket's size, which fits a fortiori. With `--cap_to_bucket` (default) no
size exceeds the bucket's utterance count (a larger batch only repeats
utterances).

The tokenizer is `config.data.tokenizer.path` or the one in `--tokenizer_dir`
(default: the output file's directory, the run's workdir), trained there if absent,
exactly as train.py does, so a following `train.py --workdir` of that directory
sees the same token counts.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time
from typing import Callable, Sequence

import jax
import numpy as np

from mtp_jax import sharding as sharding_lib
from mtp_jax.data import bucketing
from mtp_jax.data import pipeline
from mtp_jax.data import tokenizer as tok_lib
from mtp_jax.train import setup as setup_lib
from mtp_jax.train import step as step_lib

GIB = 2**30
TOLERANCE = 0.05


@dataclasses.dataclass
class Trial:
  """One probed batch size.

  Attributes:
    batch_size: global B.
    fits: whether it fits (compiled within budget and, if run, ran).
    reason: "ok", "budget" (memory analysis over budget) or "oom" (RESOURCE_EXHAUSTED).
    bytes_per_device: compiled step's args + outputs - aliases + temps (None if unknown).
    compile_s: compile wall time.
    run_s: wall time of the trial's steps (0 when not run).
  """
  batch_size: int
  fits: bool
  reason: str
  bytes_per_device: int | None
  compile_s: float
  run_s: float = 0.0


@dataclasses.dataclass
class BucketResult:
  """The search result of one bucket (shape key `bucket_key(S, L)`)."""
  key: str
  max_samples: int
  max_tokens: int
  num_utterances: int
  batch_size: int
  capped: bool
  trials: list[Trial]

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    fit = [t for t in self.trials if t.batch_size == self.batch_size]
    d["bytes_per_device"] = fit[0].bytes_per_device if fit else None
    return d


def step_bytes(compiled) -> int | None:
  """Per-device bytes of a compiled step: arguments + outputs - aliased (donated)
  buffers + temporaries; None when the backend has no memory analysis."""
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes
             - mem.alias_size_in_bytes + mem.temp_size_in_bytes)


def is_oom(error: BaseException) -> bool:
  """Whether an XLA error is an out-of-memory (RESOURCE_EXHAUSTED) one."""
  msg = str(error)
  return "RESOURCE_EXHAUSTED" in msg or "Out of memory" in msg or "out of memory" in msg


def search_batch_size(fits: Callable[[int], bool], *, multiple: int = 1,
                      known_fit: int = 0, max_batch_size: int | None = None,
                      tolerance: float = TOLERANCE,
                      guess: Callable[[int, int], int | None] | None = None
                      ) -> tuple[int, bool]:
  """Largest batch size (a multiple of `multiple`) for which `fits` holds.

  Assumes `fits` is monotone (true up to some size, false above). Doubles from
  max(known_fit, multiple) until `fits` fails, then bisects until the failing
  size is within max(multiple, tolerance * found) of the found one, so
  found * (1 + tolerance) + multiple does not fit.

  Args:
    fits: batch size -> bool (called only on positive multiples of `multiple`).
    multiple: granularity.
    known_fit: a size known to fit (not probed again); 0 if none.
    max_batch_size: upper bound (rounded down to the multiple); None = none.
    tolerance: relative precision.
    guess: optional `(fitting size, failing size) -> size` to probe next instead
      of the midpoint (e.g. a linear interpolation of memory to the budget); it is
      clamped strictly between the two, None falls back to the midpoint.
  Returns:
    (batch size, capped): 0 if not even `multiple` fits; capped is True when the
    search stopped at `max_batch_size` without a failure.
  """
  lo = known_fit // multiple
  top = None if max_batch_size is None else max(1, max_batch_size // multiple)
  if top is not None and lo >= top:
    return top * multiple, True
  hi = None
  u = max(1, lo)
  if lo >= 1:
    u = 2 * lo if top is None else min(2 * lo, top)
  while hi is None:
    if fits(u * multiple):
      lo = u
      if top is not None and u >= top:
        return u * multiple, True
      u = 2 * u if top is None else min(2 * u, top)
    else:
      hi = u
  while hi - lo > max(1, math.floor(tolerance * lo)):
    mid = (lo + hi) // 2
    if guess is not None:
      g = guess(lo * multiple, hi * multiple)
      if g is not None:
        mid = min(hi - 1, max(lo + 1, int(g) // multiple))
    if fits(mid * multiple):
      lo = mid
    else:
      hi = mid
  return lo * multiple, False


def random_batch(b: int, s: int, l: int, vocab_size: int, seed: int = 0) -> dict:
  """A full batch at the bucket's maximum shape: every row S samples of uniform
  noise in [-0.5, 0.5] and L - 1 random non-special tokens (room for EOS).

  Returns:
    {"audio": f32 [B, S], "audio_len": i32 [B], "text": i32 [B, L], "text_len": i32 [B]}.
  """
  rng = np.random.default_rng(seed)
  n = max(1, l - 1)
  text = np.zeros((b, l), np.int32)
  text[:, :n] = rng.integers(len(tok_lib.SPECIAL_IDS), vocab_size, (b, n))
  return {"audio": rng.uniform(-0.5, 0.5, (b, s)).astype(np.float32),
          "audio_len": np.full((b,), s, np.int32), "text": text,
          "text_len": np.full((b,), n, np.int32)}


class StepProber:
  """Compiles (and optionally runs) the real sharded train step at (B, S, L).

  Attributes:
    setup: the config's `mtp_jax.train.setup.TrainSetup` (model, optimizer, layout),
      the one training builds.
    compiled: {(B, S, L): executable} of every shape that fit (reusable by callers).
    budget_bytes: per-device memory budget (None = only OOM errors count).
  """

  def __init__(self, config, mesh=None, rules=None, *, budget_bytes: int | None,
               run_steps: int = 2, log: Callable[[str], None] = print,
               word_tables=None):
    """Args:
      config: the full ConfigDict (model, train, data, mesh, sharding_rules, seed).
      mesh, rules: default from the config.
      budget_bytes: per-device budget; None = OOM errors only.
      run_steps: train steps run per probe (0 = compile-only memory).
      log: progress printer.
      word_tables: `mwer.word_errors.WordTables`, for `train.objective=mwer` only.
    """
    self.config = config
    self.mesh = mesh if mesh is not None else sharding_lib.make_mesh(config.mesh)
    self.rules = rules if rules is not None else sharding_lib.rules_from_config(
        config.sharding_rules)
    self.budget_bytes = budget_bytes
    self.run_steps = int(run_steps)
    self.log = log
    self.setup = setup_lib.make_train_setup(config, self.mesh, self.rules)
    self.vocab_size = self.setup.model.cfg.decoder.vocab_size
    self.jitted = self.setup.jit_step(word_tables)
    self.compiled: dict[tuple[int, int, int], object] = {}
    self.bytes: dict[tuple[int, int, int], int | None] = {}
    self._state = None

  def state(self):
    """A train state (created on first use, re-created if an OOM deleted it)."""
    if self._state is None or any(x.is_deleted() for x in jax.tree.leaves(self._state)):
      self._state = None
      self._state = self.setup.create_state()
    return self._state

  def compile(self, b: int, s: int, l: int):
    """AOT-compiles the step at global batch shape (B, S, L) (cached)."""
    shape = (b, s, l)
    if shape not in self.compiled:
      with step_lib.trace_context(self.mesh, self.rules):
        exe = self.jitted.lower(self.setup.abstract_state,
                                step_lib.abstract_batch(b, s, l, self.mesh, self.rules)
                                ).compile()
      self.compiled[shape] = exe
      self.bytes[shape] = step_bytes(exe)
    return self.compiled[shape]

  def run(self, b: int, s: int, l: int, steps: int | None = None) -> float:
    """Runs `steps` train steps at (B, S, L) on random data; returns seconds."""
    exe = self.compile(b, s, l)
    pc, pi = jax.process_count(), jax.process_index()
    host = random_batch(b, s, l, self.vocab_size, seed=b)
    local = {k: v[pi * (b // pc):(pi + 1) * (b // pc)] for k, v in host.items()}
    batch = step_lib.device_batch(local, self.mesh, self.rules)
    state = self.state()
    t = time.perf_counter()
    for _ in range(self.run_steps if steps is None else steps):
      state, metrics = exe(state, batch)
      self._state = state
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - t

  def probe(self, b: int, s: int, l: int) -> Trial:
    """Whether batch (B, S, L) fits: compile, check the budget, run (see module doc)."""
    t = time.perf_counter()
    try:
      self.compile(b, s, l)
    except jax.errors.JaxRuntimeError as e:
      if not is_oom(e):
        raise
      return Trial(b, False, "oom", None, time.perf_counter() - t)
    compile_s = time.perf_counter() - t
    nbytes = self.bytes[(b, s, l)]
    if self.budget_bytes is not None and nbytes is not None and nbytes > self.budget_bytes:
      self.forget(b, s, l)
      return Trial(b, False, "budget", nbytes, compile_s)
    run_s = 0.0
    if self.run_steps > 0:
      try:
        run_s = self.run(b, s, l)
      except jax.errors.JaxRuntimeError as e:
        if not is_oom(e):
          raise
        self.forget(b, s, l)
        return Trial(b, False, "oom", nbytes, compile_s)
    return Trial(b, True, "ok", nbytes, compile_s, run_s)

  def forget(self, b: int, s: int, l: int) -> None:
    """Drops a compiled executable (frees its memory)."""
    self.compiled.pop((b, s, l), None)


def budget_from_flag(memory_budget_gb: float | None) -> int | None:
  """Per-device budget in bytes: the flag (GiB), else the accelerator's memory
  limit; on CPU the flag is required."""
  if memory_budget_gb:
    return int(memory_budget_gb * GIB)
  if jax.default_backend() == "cpu":
    raise ValueError("batch_search: --memory_budget_gb is required on CPU (the host "
                     "never reports out-of-memory)")
  stats = jax.local_devices()[0].memory_stats() or {}
  return int(stats["bytes_limit"]) if "bytes_limit" in stats else None


def data_parallel_multiple(config) -> int:
  """Batch sizes are multiples of this: the pipeline's batch multiple (its
  `batch_size_multiple`, 0 = device count, and process count) and grad_accum."""
  m = pipeline.batch_multiple(config.data, jax.process_count())
  return math.lcm(m, int(config.train.grad_accum))


def build_buckets(config, tokenizer: tok_lib.Tokenizer, manifests=None
                  ) -> list[bucketing.Bucket]:
  """The training buckets of `config.data` (same code path as `make_train_iterator`)."""
  report = pipeline.BadInputReport()
  manifests = config.data.train_manifests if manifests is None else manifests
  entries = pipeline.load_entries(manifests, config.data, report)
  utts = pipeline.prepare_utterances(entries, tokenizer, config.data, report)
  if not utts:
    raise ValueError(f"batch_search: no usable utterance in {manifests}")
  cfg = config.data.copy_and_resolve_references()
  cfg.bucket_batch_sizes = ""  # shapes do not depend on batch sizes
  return pipeline.make_buckets_for(utts, cfg, batch_multiple=data_parallel_multiple(config))


def largest_first(buckets: Sequence[bucketing.Bucket]) -> list[bucketing.Bucket]:
  """Buckets by decreasing padded row size (S, then L)."""
  return sorted(buckets, key=lambda b: (b.max_samples, b.max_tokens), reverse=True)


def search_shape(prober: StepProber, s: int, l: int, *, multiple: int, known_fit: int = 0,
                 max_batch_size: int | None = None, log: Callable[[str], None] = print,
                 tolerance: float = TOLERANCE) -> tuple[int, bool, list[Trial]]:
  """Searches one (S, L) shape; returns (batch size, capped, trials)."""
  trials = []

  def fits(b: int) -> bool:
    trial = prober.probe(b, s, l)
    trials.append(trial)
    mem = ("?" if trial.bytes_per_device is None
           else f"{trial.bytes_per_device / GIB:.3f} GiB")
    log(f"  B={b:<6d} {'fits' if trial.fits else 'no  '} ({trial.reason}; {mem}/device; "
        f"compile {trial.compile_s:.1f} s, run {trial.run_s:.2f} s)")
    return trial.fits

  def guess(lo: int, hi: int) -> int | None:
    # Memory is close to affine in B: interpolate to the budget.
    m_lo, m_hi = prober.bytes.get((lo, s, l)), prober.bytes.get((hi, s, l))
    if prober.budget_bytes is None or m_lo is None or m_hi is None or m_hi <= m_lo:
      return None
    return int(lo + (prober.budget_bytes - m_lo) * (hi - lo) / (m_hi - m_lo))

  b, capped = search_batch_size(fits, multiple=multiple, known_fit=known_fit,
                                max_batch_size=max_batch_size, tolerance=tolerance,
                                guess=guess)
  return b, capped, trials


def search_buckets(prober: StepProber, buckets: Sequence[bucketing.Bucket], *,
                   multiple: int, cap_to_bucket: bool = True,
                   max_batch_size: int | None = None,
                   log: Callable[[str], None] = print,
                   dominating: Sequence[BucketResult] = ()) -> list[BucketResult]:
  """Searches every bucket, largest first; a dominated shape starts from the size
  found for the bucket dominating it (or for any of `dominating`, earlier results
  of larger shapes, e.g. the envelope shape of all buckets).

  Raises:
    ValueError: not even `multiple` rows of some bucket fit.
  """
  results: list[BucketResult] = []
  for i, bucket in enumerate(largest_first(buckets)):
    s, l, n = bucket.max_samples, bucket.max_tokens, len(bucket.members)
    top = max_batch_size
    if cap_to_bucket:
      cap = int(bucketing.round_up(n, multiple))
      top = cap if top is None else min(top, cap)
    known = max([r.batch_size for r in [*dominating, *results]
                 if r.max_samples >= s and r.max_tokens >= l], default=0)
    if top is not None:
      known = min(known, top // multiple * multiple)
    log(f"bucket {i + 1}/{len(buckets)} S={s} ({s / prober.config.data.sample_rate:.2f} s) "
        f"L={l}, {n} utterances, start from {known or multiple}")
    t = time.perf_counter()
    b, capped, trials = search_shape(prober, s, l, multiple=multiple, known_fit=known,
                                     max_batch_size=top, log=log)
    if b == 0:
      raise ValueError(f"batch_search: bucket {bucketing.bucket_key(s, l)}: even "
                       f"B={multiple} does not fit the memory budget")
    results.append(BucketResult(bucketing.bucket_key(s, l), s, l, n, b, capped, trials))
    log(f"bucket {bucketing.bucket_key(s, l)}: B={b}{' (capped at bucket size)' if capped else ''}"
        f" after {len(trials)} probes, {time.perf_counter() - t:.1f} s")
  return results


def write_batch_sizes(path: str | os.PathLike, results: Sequence[BucketResult],
                      **meta) -> dict:
  """Writes the override file `{"batch_sizes": {"<S>x<L>": B}, "search": {...}}`
  (read by `bucketing.load_batch_size_overrides`); returns what it wrote."""
  out = {"batch_sizes": {r.key: int(r.batch_size) for r in results},
         "search": dict(meta, buckets=[r.as_dict() for r in results])}
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(out, f, indent=2)
  return out


def run_search(config, out: str, *, memory_budget_gb: float | None = None,
               compile_only: bool = False, run_steps: int = 2, cap_to_bucket: bool = True,
               max_batch_size: int | None = None, tokenizer_dir: str | None = None,
               log: Callable[[str], None] = print) -> dict:
  """The whole tool: buckets, search, override file. Returns the written dict."""
  budget = budget_from_flag(memory_budget_gb)
  tok_dir = tokenizer_dir or os.path.dirname(os.path.abspath(out))
  os.makedirs(tok_dir, exist_ok=True)
  tokenizer = tok_lib.get_tokenizer(config.data, tok_dir)
  word_tables = None
  if config.train.get("objective", "ce") == "mwer":
    from mtp_jax.mwer import word_errors  # pylint: disable=g-import-not-at-top
    word_tables = word_errors.tables_from_tokenizer(tokenizer)
  buckets = build_buckets(config, tokenizer)
  multiple = data_parallel_multiple(config)
  log(f"{len(buckets)} buckets, batch multiple {multiple}, budget "
      f"{'none' if budget is None else f'{budget / GIB:.3f} GiB'}/device, "
      f"{'compile-only' if compile_only else f'{run_steps} steps per probe'}, "
      f"{jax.device_count()} {jax.default_backend()} devices")
  prober = StepProber(config, budget_bytes=budget, run_steps=0 if compile_only else run_steps,
                      log=log, word_tables=word_tables)
  t = time.perf_counter()
  results = search_buckets(prober, buckets, multiple=multiple, cap_to_bucket=cap_to_bucket,
                           max_batch_size=max_batch_size, log=log)
  written = write_batch_sizes(
      out, results, budget_bytes=budget, multiple=multiple, compile_only=compile_only,
      cap_to_bucket=cap_to_bucket, seconds=time.perf_counter() - t,
      platform=jax.default_backend(), device_kind=jax.devices()[0].device_kind,
      device_count=jax.device_count(), jax=jax.__version__,
      date=datetime.datetime.now(datetime.timezone.utc).isoformat())
  log(f"{'S x L':>14}{'utts':>6}{'B':>7}{'GiB/dev':>9}")
  for r in results:
    d = r.as_dict()
    mem = "-" if d["bytes_per_device"] is None else f"{d['bytes_per_device'] / GIB:.3f}"
    log(f"{r.key:>14}{r.num_utterances:>6}{r.batch_size:>7}{mem:>9}")
  log(f"wrote {out}; train with --config.data.bucket_batch_sizes={out}")
  return written


def main(argv) -> None:
  del argv
  f = _FLAGS
  if f.multihost:
    jax.distributed.initialize()
  run_search(f.config, f.out, memory_budget_gb=f.memory_budget_gb,
             compile_only=f.compile_only, run_steps=f.run_steps,
             cap_to_bucket=f.cap_to_bucket, max_batch_size=f.max_batch_size or None,
             tokenizer_dir=f.tokenizer_dir or None,
             log=print if jax.process_index() == 0 else (lambda _: None))


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                  lock_config=True)
  absl_flags.DEFINE_string("out", None, "Output override file (JSON).")
  absl_flags.DEFINE_float("memory_budget_gb", None,
                          "Per-device budget in GiB (required on CPU; default: device limit).")
  absl_flags.DEFINE_bool("compile_only", False,
                         "Judge by compiled memory only; do not run steps (fast).")
  absl_flags.DEFINE_integer("run_steps", 2, "Train steps run per probe (without --compile_only).")
  absl_flags.DEFINE_bool("cap_to_bucket", True,
                         "Never exceed a bucket's utterance count (rounded to the multiple).")
  absl_flags.DEFINE_integer("max_batch_size", 0, "Upper bound on any batch size (0 = none).")
  absl_flags.DEFINE_string("tokenizer_dir", "",
                           "Tokenizer directory (default: the --out file's directory).")
  absl_flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.")
  absl_flags.mark_flags_as_required(["config", "out"])
  _FLAGS = absl_flags.FLAGS
  from mtp_jax.config import parse_flags_with_config  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=parse_flags_with_config)
