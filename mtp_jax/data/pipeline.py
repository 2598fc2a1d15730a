"""The grain input pipeline: manifests -> fixed-shape padded batches of waveforms.

Training (`make_train_iterator`):

  manifests -> validate cheap things up front (text, token count, duration,
  file header; bad ones follow `bad_input_policy`) -> bucket (see
  `mtp_jax.data.bucketing`; global, identical on every process) ->
  grain.MapDataset over batch numbers, infinite over epochs -> per-epoch
  seeded plan (shuffle inside buckets and of batch order; epoch in the seed) ->
  this process's slice of each global batch -> map: read + resample audio,
  pad into the bucket's fixed shape (in worker processes when num_workers > 0)
  -> prefetch.

Transcripts are tokenized once up front (bucketing needs their lengths), so
the map only reads audio. Batches are planned globally and every process takes
its own rows of each global batch, so at every step all processes hold the same (B/P, S, L) shape,
as multi-host `jax.make_array_from_process_local_data` needs.

BATCH FORMAT (dict of numpy arrays; B = rows on this process):
  "audio":     float32 [B, S] 16 kHz waveform in [-1, 1], zero-padded; S fixed
               per bucket (a multiple of `audio_pad_multiple`).
  "audio_len": int32 [B] valid samples (0 for padding rows).
  "text":      int32 [B, L] token ids WITHOUT bos/eos, padded with PAD_ID = 0;
               L fixed per bucket, a multiple of 8 and >= text_len +
               `text_pad_extra` (room for an eos).
  "text_len":  int32 [B].
  "utt_id":    str [B] ("" for padding rows)   } host-side only: training
  "ref_text":  str [B] (raw manifest text)     } drops non-numeric keys.

Bad inputs (`data_cfg.bad_input_policy`): "error" raises the first
`BadInputError` (message "<manifest>:<line>: <reason>"); "skip" drops the
utterance, logs it and records it in `bad_input_report()`. Decoding failures
inside the map never kill a worker: the row is left empty (audio_len 0,
utt_id "") and reported with the epoch it happened in.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
from typing import Iterator, Sequence

from absl import flags
import grain
import numpy as np

from mtp_jax.data import audio as audio_lib
from mtp_jax.data import bucketing
from mtp_jax.data import manifest as manifest_lib
from mtp_jax.data.config import BATCHING, POLICIES
from mtp_jax.data.errors import BadInputError, NoDataError
from mtp_jax.data.tokenizer import PAD_ID, Tokenizer

_LOG = logging.getLogger(__name__)
_EPOCH_KEY = "_epoch"      # Internal batch keys, removed by the iterators.
_SKIPPED_KEY = "_skipped"


@dataclasses.dataclass(frozen=True)
class Utterance:
  """A validated utterance, ready to batch.

  Attributes:
    entry: the manifest record.
    num_samples: samples at the pipeline rate (from the header when checked,
      an upper bound of the decoded length).
    tokens: int32 [n] token ids of the normalized transcript.
  """
  entry: manifest_lib.ManifestEntry
  num_samples: int
  tokens: np.ndarray


class BadInputReport:
  """Skipped bad inputs, each utterance once: found while preparing, or when its
  audio was read.

  Each record is {"manifest", "line", "reason", "stage"} with stage "prepare"
  (before training, the utterance is never used) or "decode" (found when the
  audio was decoded during `epoch`, the row was left empty). A row that fails at
  read time stays empty in every later epoch, but it is recorded and logged once,
  under the epoch it was first found in.
  """

  def __init__(self):
    self.prepared: list[dict] = []
    self.by_epoch: dict[int, list[dict]] = {}
    self.rows: list[dict] = []   # every record once, in the order found
    self._seen: set[tuple[str, int]] = set()

  def add(self, error: BadInputError, epoch: int | None = None) -> bool:
    """Records (and logs) `error` unless its utterance is already recorded."""
    key = (error.manifest, error.line)
    if key in self._seen:
      return False
    self._seen.add(key)
    rec = {"manifest": error.manifest, "line": error.line,
           "reason": error.reason}
    if epoch is None:
      rec["stage"] = "prepare"
      self.prepared.append(rec)
    else:
      rec["stage"] = "decode"
      self.by_epoch.setdefault(int(epoch), []).append(rec)
    self.rows.append(rec)
    _LOG.warning("skipping bad input %s", error)
    return True

  def __len__(self) -> int:
    return len(self.rows)

  def as_dict(self) -> dict:
    """JSON-ready summary: counts, the prepared skips, the per-epoch skips, and
    `rows`, every skipped row once (prepare and read time) in the order found."""
    return {"num_skipped": len(self), "num_prepared_skips": len(self.prepared),
            "prepared": list(self.prepared),
            "epochs": {str(e): list(v) for e, v in sorted(self.by_epoch.items())},
            "rows": list(self.rows)}


def handle_bad(error: BadInputError, policy: str, report: BadInputReport,
                epoch: int | None = None) -> None:
  if policy == "error":
    raise error
  report.add(error, epoch)


def _check_policy(data_cfg) -> str:
  policy = data_cfg.bad_input_policy
  if policy not in POLICIES:
    raise ValueError(f"data.bad_input_policy must be one of {POLICIES}, got {policy!r}")
  return policy


def load_entries(manifests, data_cfg, report: BadInputReport
                 ) -> list[manifest_lib.ManifestEntry]:
  """Reads manifests; malformed lines follow the bad-input policy."""
  policy = _check_policy(data_cfg)
  if not manifest_lib.split_manifest_paths(manifests):
    raise NoDataError("no manifest given")
  errors = [] if policy == "skip" else None
  entries = manifest_lib.load_manifests(manifests, errors=errors)
  for e in errors or ():
    report.add(e)
  return entries


def check_transcript(text: str, manifest: str, line: int, tokenizer: Tokenizer,
                     data_cfg) -> np.ndarray:
  """Token ids of a transcript; BadInputError ("<manifest>:<line>: ...") when it is
  empty after normalization or longer than `data_cfg.max_text_tokens`."""
  if not tokenizer.normalize(text):
    raise BadInputError(manifest, line, f"empty transcript after normalization: {text!r}")
  tokens = np.asarray(tokenizer.encode(text), np.int32)
  if len(tokens) > data_cfg.max_text_tokens:
    raise BadInputError(manifest, line,
                        f"transcript has {len(tokens)} tokens, more than "
                        f"max_text_tokens={data_cfg.max_text_tokens}")
  return tokens


def _validate_audio(entry, data_cfg) -> int:
  where = dict(manifest=entry.manifest, line=entry.line)
  if entry.duration <= 0:
    raise BadInputError(entry.manifest, entry.line,
                        f"manifest duration {entry.duration} is not positive")
  if entry.duration > data_cfg.max_duration + data_cfg.duration_tolerance_s:
    raise BadInputError(entry.manifest, entry.line,
                        f"manifest duration {entry.duration:.2f} s is longer than"
                        f" the largest bucket (max_duration="
                        f"{data_cfg.max_duration} s)")
  if not data_cfg.validate_headers:
    if not os.path.isfile(entry.audio_filepath):
      raise BadInputError(entry.manifest, entry.line,
                          f"audio file not found: {entry.audio_filepath}")
    return math.ceil(entry.duration * data_cfg.sample_rate)
  info = audio_lib.check_header(
      entry.audio_filepath, entry.duration, **where,
      max_duration=data_cfg.max_duration, min_duration=data_cfg.min_duration,
      tolerance_s=data_cfg.duration_tolerance_s,
      tolerance_frac=data_cfg.duration_tolerance_frac)
  return info.num_samples(data_cfg.sample_rate)


def prepare_utterances(entries: Sequence[manifest_lib.ManifestEntry],
                       tokenizer: Tokenizer, data_cfg,
                       report: BadInputReport) -> list[Utterance]:
  """Validates entries cheaply (no decoding) and tokenizes their transcripts.

  Checks: empty transcript after normalization, too many tokens, non-positive
  or too long duration, and (with `validate_headers`) missing file, corrupt
  header, zero length, manifest duration far from the real one, too short.
  Headers are read by a small thread pool.

  Returns:
    The good utterances in input order.

  Raises:
    BadInputError: the first bad entry (in input order), under policy "error".
  """
  policy = _check_policy(data_cfg)

  def check(entry):
    try:
      tokens = check_transcript(entry.text, entry.manifest, entry.line, tokenizer, data_cfg)
      return Utterance(entry, _validate_audio(entry, data_cfg), tokens)
    except BadInputError as e:
      return e

  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(check, entries))
  utterances = []
  for r in results:
    if isinstance(r, BadInputError):
      handle_bad(r, policy, report)
    else:
      utterances.append(r)
  return utterances


class _BatchLoader:
  """grain map: a planned batch -> padded numpy batch (runs in workers)."""

  def __init__(self, utterances: Sequence[Utterance], sample_rate: int,
               policy: str, feature_cache=None, frames_for=None):
    self._utts = list(utterances)
    self._rate = sample_rate
    self._policy = policy
    self._cache = feature_cache  # FeatureCache: deliver cached encoder frames
    self._frames_for = frames_for  # samples -> encoder frames (the bucket's T)
    self._failed: dict[int, BadInputError] = {}  # utterance -> its read error (not re-read)

  def _read_frames(self, utt: Utterance, max_frames: int) -> np.ndarray:
    e = utt.entry
    x = self._cache.frames(e.audio_filepath, manifest=e.manifest, line=e.line)
    if len(x) > max_frames:
      raise BadInputError(e.manifest, e.line, f"cached features have {len(x)} frames, "
                          f"more than its bucket's {max_frames}: {e.audio_filepath}")
    return x

  def _read(self, utt: Utterance, max_samples: int) -> np.ndarray:
    e = utt.entry
    try:
      wav = audio_lib.load_audio(e.audio_filepath, manifest=e.manifest,
                                 line=e.line, target_rate=self._rate)
    except BadInputError:
      raise
    except Exception as err:  # Never let a worker die on one file.
      raise BadInputError(e.manifest, e.line, f"cannot read audio "
                          f"{e.audio_filepath}: {err!r}") from err
    if len(wav) > max_samples:
      raise BadInputError(e.manifest, e.line, f"decoded audio has {len(wav)} "
                          f"samples, more than its bucket's {max_samples}: "
                          f"{e.audio_filepath}")
    return wav

  def __call__(self, item) -> dict:
    epoch, max_samples, max_tokens, rows = item
    b = len(rows)
    batch = {
        "audio_len": np.zeros((b,), np.int32),
        "text": np.full((b, max_tokens), PAD_ID, np.int32),
        "text_len": np.zeros((b,), np.int32),
    }
    if self._cache is None:
      batch["audio"] = np.zeros((b, max_samples), np.float32)
    else:
      max_frames = int(self._frames_for(max_samples))
      batch["frames"] = np.zeros((b, max_frames, self._cache.dim), np.float16)
      batch["frames_len"] = np.zeros((b,), np.int32)
    utt_ids, refs, skipped = [""] * b, [""] * b, []
    for r, index in enumerate(rows):
      if index == bucketing.EMPTY_ROW:
        continue
      utt = self._utts[index]
      try:
        if index in self._failed:  # failed in an earlier epoch: the same file fails again
          raise self._failed[index]
        if self._cache is None:
          wav = self._read(utt, max_samples)
        else:
          x = self._read_frames(utt, batch["frames"].shape[1])
      except BadInputError as err:
        if self._policy == "error":
          raise
        self._failed[index] = err
        skipped.append([err.manifest, err.line, err.reason])
        continue
      if self._cache is None:
        batch["audio"][r, :len(wav)] = wav
        batch["audio_len"][r] = len(wav)
      else:
        batch["frames"][r, :len(x)] = x
        batch["frames_len"][r] = len(x)
        batch["audio_len"][r] = utt.num_samples
      batch["text"][r, :len(utt.tokens)] = utt.tokens
      batch["text_len"][r] = len(utt.tokens)
      utt_ids[r], refs[r] = utt.entry.utt_id, utt.entry.text
    batch["utt_id"] = np.array(utt_ids, dtype=str)
    batch["ref_text"] = np.array(refs, dtype=str)
    batch[_EPOCH_KEY] = np.int64(epoch)
    batch[_SKIPPED_KEY] = json.dumps(skipped)
    return batch


class _Planner:
  """grain map_with_index: global batch number -> (epoch, S, L, local rows)."""

  def __init__(self, buckets, *, seed, shuffle, remainder, process_index,
               process_count):
    self._buckets = list(buckets)
    self._seed, self._shuffle, self._remainder = seed, shuffle, remainder
    self._pi, self._pc = process_index, process_count
    self.batches_per_epoch = sum(b.num_batches(remainder) for b in self._buckets)
    self._cache = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_cache"], state["_lock"] = {}, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def plan(self, epoch: int):
    with self._lock:
      if epoch not in self._cache:
        if len(self._cache) >= 2:
          self._cache.pop(min(self._cache))
        self._cache[epoch] = bucketing.plan_epoch(
            self._buckets, seed=self._seed, epoch=epoch,
            shuffle=self._shuffle, remainder=self._remainder)
      return self._cache[epoch]

  def __call__(self, index: int, _):
    epoch, j = divmod(int(index), self.batches_per_epoch)
    bucket_index, rows = self.plan(epoch)[j]
    bucket = self._buckets[bucket_index]
    local = len(rows) // self._pc
    rows = rows[self._pi * local:(self._pi + 1) * local]
    return epoch, bucket.max_samples, bucket.max_tokens, rows


def _read_options(data_cfg) -> grain.ReadOptions:
  threads = max(1, int(data_cfg.num_threads))
  return grain.ReadOptions(num_threads=threads,
                           prefetch_buffer_size=max(threads, int(data_cfg.prefetch)))


def _finish(ds: grain.MapDataset, data_cfg) -> grain.IterDataset:
  it = ds.to_iter_dataset(_read_options(data_cfg))
  if data_cfg.num_workers > 0:
    # grain's worker processes read absl flags; outside absl.app.run (tests,
    # notebooks, plain scripts) they are unparsed, so use their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data_cfg.num_workers),
        per_worker_buffer_size=max(1, int(data_cfg.prefetch))))
  return it


def process_layout(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # Imported late: only needed when the caller does not say.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return int(process_index), int(process_count)


def batch_multiple(data_cfg, process_count: int) -> int:
  m = int(data_cfg.batch_size_multiple)
  if m <= 0:
    import jax
    m = jax.device_count()
  return math.lcm(m, process_count)


def make_buckets_for(utterances: Sequence[Utterance], data_cfg, *,
                     batch_multiple: int = 1) -> list[bucketing.Bucket]:
  """Buckets of `data_cfg.batching` ("random", "1d" or "2d") for utterances."""
  samples = [u.num_samples for u in utterances]
  tokens = [len(u.tokens) for u in utterances]
  pads = dict(audio_pad_multiple=data_cfg.audio_pad_multiple,
              token_pad_multiple=data_cfg.token_pad_multiple,
              text_pad_extra=data_cfg.text_pad_extra)
  if data_cfg.batching not in BATCHING:
    raise ValueError(f"data.batching must be one of {BATCHING}, got {data_cfg.batching!r}")
  if data_cfg.batching == "random":
    b = max(batch_multiple, data_cfg.batch_size // batch_multiple * batch_multiple)
    return bucketing.make_random_bucket(samples, tokens, batch_size=b, **pads)
  overrides = (bucketing.load_batch_size_overrides(data_cfg.bucket_batch_sizes)
               if data_cfg.bucket_batch_sizes else None)
  return bucketing.make_buckets(
      samples, tokens, num_duration_bins=data_cfg.num_duration_bins,
      num_token_bins=1 if data_cfg.batching == "1d" else data_cfg.num_token_bins,
      sample_rate=data_cfg.sample_rate,
      audio_seconds_per_batch=data_cfg.audio_seconds_per_batch,
      tokens_per_batch=data_cfg.tokens_per_batch, batch_size_multiple=batch_multiple,
      batch_size_overrides=overrides, binning=data_cfg.binning, **pads)


class DataStateMismatchError(ValueError):
  """A saved iterator state that does not belong to this dataset (fingerprint)."""


class DataIterator:
  """Infinite training iterator over fixed-shape batches, checkpointable.

  `get_state()` returns a JSON-serializable dict; `set_state` of it continues
  with exactly the batches that followed. The state is tied to the data, the
  bucketing, the seed and the process layout (checked by a fingerprint).
  """

  def __init__(self, dataset: grain.IterDataset, *, buckets, report,
               batches_per_epoch: int, process_count: int, fingerprint: str):
    self._dataset = dataset
    self._it = iter(dataset)
    self.buckets = buckets
    self.batches_per_epoch = batches_per_epoch
    self._process_count = process_count
    self._fingerprint = fingerprint
    self._report = report
    self.epoch = 0

  def __iter__(self) -> "DataIterator":
    return self

  def __next__(self) -> dict:
    batch = next(self._it)
    self.epoch = int(batch.pop(_EPOCH_KEY))
    for manifest, line, reason in json.loads(batch.pop(_SKIPPED_KEY)):
      self._report.add(BadInputError(manifest, line, reason), self.epoch)
    return batch

  @property
  def batch_shapes(self) -> list[tuple[int, int, int]]:
    """Distinct local (B, S, L) shapes this iterator yields (one per bucket)."""
    return sorted({(b.batch_size // self._process_count, b.max_samples,
                    b.max_tokens) for b in self.buckets})

  def get_state(self) -> dict:
    return {"grain": self._it.get_state(), "fingerprint": self._fingerprint}

  def set_state(self, state: dict) -> None:
    if state.get("fingerprint") != self._fingerprint:
      raise DataStateMismatchError(
          "data iterator state is from a different dataset/bucketing/seed/process"
          f" layout (fingerprint {state.get('fingerprint')!r}, expected "
          f"{self._fingerprint!r})")
    self._it.set_state(state["grain"])

  def bad_input_report(self) -> dict:
    """Skipped utterances so far (see `BadInputReport.as_dict`)."""
    return self._report.as_dict()

  def describe(self) -> list[dict]:
    """Per-bucket shape, batch size and utterance count, for logs."""
    return [b.describe() for b in self.buckets]

  def close(self) -> None:
    close = getattr(self._it, "close", None)
    if close is not None:
      close()


def _fingerprint(utterances, buckets, **extra) -> str:
  h = hashlib.sha256()
  h.update(json.dumps(extra, sort_keys=True).encode())
  for u in utterances:
    h.update(f"{u.entry.audio_filepath}|{u.num_samples}|{len(u.tokens)}\n".encode())
  for b in buckets:
    h.update(json.dumps(b.describe(), sort_keys=True).encode())
  return h.hexdigest()[:16]


def make_train_iterator(data_cfg, tokenizer: Tokenizer, *, seed: int,
                        process_index: int | None = None,
                        process_count: int | None = None,
                        manifests: str | Sequence[str] | None = None,
                        feature_cache=None, frames_for=None) -> DataIterator:
  """The training iterator: infinite, shuffled per epoch, bucketed, resumable.

  Args:
    data_cfg: the `config.data` section (see `mtp_jax.data.config`).
    tokenizer: transcript tokenizer.
    seed: shuffle seed (each epoch uses (seed, epoch)); `data_cfg.seed` is
      not read here, the caller passes it (or a run seed).
    process_index: this process (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).
    manifests: overrides `data_cfg.train_manifests`.
    feature_cache: a `feature_cache.FeatureCache`: batches then carry "frames"
      [B, T, d] float16 and "frames_len" [B] instead of "audio", with
      T = frames_for(S) for the bucket's S samples ("audio_len" stays: samples).
    frames_for: samples -> encoder frames (with feature_cache; picklable).

  Returns:
    A `DataIterator` of batches in the module's BATCH FORMAT; each global batch
    of a bucket has B rows (a multiple of process_count and of
    batch_size_multiple), of which this process gets B / process_count.

  Raises:
    BadInputError: under policy "error", at the first bad utterance.
    NoDataError: no usable utterance.
    ValueError: bad configuration.
  """
  pi, pc = process_layout(process_index, process_count)
  report = BadInputReport()
  manifests = data_cfg.train_manifests if manifests is None else manifests
  entries = load_entries(manifests, data_cfg, report)
  utterances = prepare_utterances(entries, tokenizer, data_cfg, report)
  if not utterances:
    more = " ..." if len(report) > 3 else ""
    why = (f"{len(report)} bad inputs skipped: {report.rows[:3]}{more}" if len(report)
           else "the manifests hold no utterance")
    raise NoDataError(f"no usable utterance in {manifests} ({why})")
  multiple = batch_multiple(data_cfg, pc)
  buckets = make_buckets_for(utterances, data_cfg, batch_multiple=multiple)
  remainder = data_cfg.remainder
  planner = _Planner(buckets, seed=int(seed), shuffle=bool(data_cfg.shuffle),
                     remainder=remainder, process_index=pi, process_count=pc)
  if planner.batches_per_epoch == 0:
    raise ValueError("no full batch per epoch: use remainder='fill' or smaller "
                     "batches")
  ds = (grain.MapDataset.range(planner.batches_per_epoch)
        .repeat(None)
        .map_with_index(planner)
        .map(_BatchLoader(utterances, data_cfg.sample_rate,
                          data_cfg.bad_input_policy, feature_cache, frames_for)))
  fingerprint = _fingerprint(utterances, buckets, seed=int(seed), pi=pi, pc=pc,
                             shuffle=bool(data_cfg.shuffle), remainder=remainder)
  _LOG.info("training data: %d utterances (%d skipped), %d buckets, "
            "%d batches/epoch", len(utterances), len(report), len(buckets),
            planner.batches_per_epoch)
  return DataIterator(_finish(ds, data_cfg), buckets=buckets, report=report,
                      batches_per_epoch=planner.batches_per_epoch,
                      process_count=pc, fingerprint=fingerprint)


def make_random_iterator(data_cfg, tokenizer: Tokenizer, *, seed: int,
                         **kwargs) -> DataIterator:
  """`make_train_iterator` with random batching (one shape, fixed batch size)."""
  cfg = data_cfg.copy_and_resolve_references()
  cfg.batching = "random"
  return make_train_iterator(cfg, tokenizer, seed=seed, **kwargs)


class EvalBatches:
  """Every good utterance of a manifest exactly once, in manifest order.

  Re-iterable. Each batch has `batch_size / process_count` rows on this
  process; the last one is completed with empty rows (audio_len 0, utt_id "").
  S is the batch's longest utterance rounded up to `eval_audio_multiple_s`
  seconds (and to `audio_pad_multiple`) and L its longest transcript
  (+ text_pad_extra) rounded up to `eval_token_multiple`, but never above
  round_up(max_text_tokens + text_pad_extra, 8); this bounds the number of
  distinct shapes.
  """

  def __init__(self, dataset: grain.MapDataset, data_cfg, report, num_batches,
               num_utterances):
    self._dataset = dataset
    self._cfg = data_cfg
    self._report = report
    self._len = num_batches
    self.num_utterances = num_utterances

  def __len__(self) -> int:
    return self._len

  def __iter__(self) -> Iterator[dict]:
    for batch in _finish(self._dataset, self._cfg):
      batch.pop(_EPOCH_KEY)
      for manifest, line, reason in json.loads(batch.pop(_SKIPPED_KEY)):
        self._report.add(BadInputError(manifest, line, reason), 0)
      yield batch

  def bad_input_report(self) -> dict:
    return self._report.as_dict()


def scoring_data_config(data_cfg, max_seconds: float = math.inf):
  """A copy of `data_cfg` for scoring a test set with `make_eval_batches`.

  No utterance is dropped for a training-time limit: max_duration becomes
  `max_seconds` (the model's own limit, `encoders.max_audio_seconds`), min_duration
  0 and max_text_tokens unbounded. Bad rows (missing, corrupt, NaN, empty text, longer
  than the model takes) are skipped and reported (`bad_input_policy="skip"`).
  """
  cfg = data_cfg.copy_and_resolve_references()
  cfg.max_duration = float(max_seconds)
  cfg.min_duration = 0.0
  cfg.max_text_tokens = 1 << 20
  cfg.bad_input_policy = "skip"
  return cfg


def make_eval_batches(manifest: str, tokenizer: Tokenizer, data_cfg, *,
                      batch_size: int, process_index: int | None = None,
                      process_count: int | None = None) -> EvalBatches:
  """Deterministic, unshuffled batches over a manifest (see `EvalBatches`).

  Args:
    manifest: a JSONL manifest (or comma-separated list).
    tokenizer: transcript tokenizer (for the "text" targets).
    data_cfg: the `config.data` section.
    batch_size: rows per global batch; a multiple of process_count.
    process_index: default `jax.process_index()`.
    process_count: default `jax.process_count()`.

  Raises:
    BadInputError: under policy "error", at the first bad utterance.
  """
  pi, pc = process_layout(process_index, process_count)
  if batch_size <= 0 or batch_size % pc:
    raise ValueError(f"eval batch_size {batch_size} must be a positive multiple "
                     f"of process_count {pc}")
  report = BadInputReport()
  utterances = prepare_utterances(load_entries(manifest, data_cfg, report),
                                  tokenizer, data_cfg, report)
  audio_multiple = math.lcm(max(1, int(round(data_cfg.eval_audio_multiple_s *
                                             data_cfg.sample_rate))),
                            data_cfg.audio_pad_multiple)
  token_multiple = math.lcm(data_cfg.eval_token_multiple,
                            data_cfg.token_pad_multiple)
  # Never longer than the longest transcript the config allows needs.
  token_cap = bucketing.round_up(data_cfg.max_text_tokens + data_cfg.text_pad_extra,
                                 data_cfg.token_pad_multiple)
  items = []
  local = batch_size // pc
  for start in range(0, len(utterances), batch_size):
    rows = np.arange(start, min(start + batch_size, len(utterances)))
    s = bucketing.round_up(max(utterances[i].num_samples for i in rows),
                           audio_multiple)
    l = min(token_cap, bucketing.round_up(
        max(len(utterances[i].tokens) for i in rows) + data_cfg.text_pad_extra,
        token_multiple))
    rows = np.concatenate([rows, np.full(batch_size - len(rows),
                                         bucketing.EMPTY_ROW, np.int64)])
    items.append((0, int(s), int(l), rows[pi * local:(pi + 1) * local]))
  ds = grain.MapDataset.source(items).map(
      _BatchLoader(utterances, data_cfg.sample_rate, data_cfg.bad_input_policy))
  return EvalBatches(ds, data_cfg, report, len(items), len(utterances))
