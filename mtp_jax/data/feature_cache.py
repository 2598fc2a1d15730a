"""On-disk cache of a frozen encoder's outputs, so training does not run the encoder.

With a frozen speech encoder (a pretrained Whisper encoder, `train.frozen`), every
training step would recompute the same encoder frames. `build` runs the encoder once
per utterance and writes its frames in half precision to a cache directory:

  meta.json      the encoder + frontend config, a fingerprint of the encoder weights and
                 "complete" (false while a build has not finished)
  index.jsonl    one line per utterance: {"key", "shard", "offset", "frames", "num_samples"}
  shard_00000.npy ...  [N, d] float16 frames of many utterances, back to back

`FeatureCache` memory-maps the shards; the training pipeline (`data.feature_cache`)
then delivers `frames` [B, T, d] instead of `audio` [B, S], with the same bucketing
(T = the encoder's frames for the bucket's S samples) and the same bad-input handling
(an utterance missing from the cache is a named bad input). The cache is keyed by the
audio file's real path; the fingerprint in meta.json is checked against the model
before training, so a cache of other weights or another frontend is refused.

  python -m mtp_jax.train.pretrained --config configs/recipes/whisper_tiny_cpu.py \
      --out runs/whisper_tiny/features

A build resumes where it stopped: a shard is written to a temporary file and renamed,
then its index lines appended, so a killed build leaves whole shards, whole index
lines (a line cut short by the kill is dropped on resume) and frames it never
indexed (written again); the utterances already indexed are not encoded again. On a
stop request (`should_stop`, e.g. SIGTERM through `mtp_jax.train.preemption`) it
writes what it has encoded and returns; `FeatureCache` refuses a cache whose build
has not finished.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from typing import Any, Callable, Iterable

import numpy as np

from mtp_jax.data import audio as audio_lib
from mtp_jax.data import manifest as manifest_lib
from mtp_jax.data.errors import BadInputError

META, INDEX = "meta.json", "index.jsonl"
SHARD_BYTES = 256 << 20


def cache_key(audio_filepath: str) -> str:
  return os.path.realpath(audio_filepath)


def fingerprint(model_cfg, encoder_params: Any) -> str:
  """sha256 over the encoder + frontend config and the encoder weights (float32 bytes)."""
  import jax  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  h.update(json.dumps({"encoder": dataclasses.asdict(model_cfg.encoder),
                       "frontend": dataclasses.asdict(model_cfg.frontend)},
                      sort_keys=True).encode())
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(encoder_params)[0],
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.asarray(leaf, np.float32).tobytes())
  return h.hexdigest()[:24]


def is_complete(directory: str | os.PathLike) -> bool:
  """Whether `directory` holds a feature cache whose build has finished (one that
  `FeatureCache` opens); reads meta.json only."""
  try:
    meta = json.loads((pathlib.Path(directory) / META).read_text())
  except (OSError, ValueError):
    return False
  return meta.get("complete") is not False


class IncompleteCacheError(ValueError):
  """A feature cache whose build stopped before it finished (re-run it to finish)."""


class FeatureCache:
  """Read side: `frames(audio_filepath)` -> [T, d] float16 (memory-mapped).

  Raises (constructor):
    FileNotFoundError: no cache in `directory`.
    IncompleteCacheError: its build has not finished.
  """

  def __init__(self, directory: str | os.PathLike):
    self.directory = pathlib.Path(directory)
    meta_path = self.directory / META
    if not meta_path.exists():
      raise FileNotFoundError(f"{meta_path}: no feature cache here (build one with "
                              "python -m mtp_jax.train.pretrained)")
    self.meta = json.loads(meta_path.read_text())
    if self.meta.get("complete") is False:
      raise IncompleteCacheError(
          f"{self.directory}: the feature cache build stopped before it finished "
          f"({self.meta.get('utterances', '?')} utterances so far): re-run "
          "python -m mtp_jax.train.pretrained with the same --out to finish it")
    self._index = {}
    with open(self.directory / INDEX) as f:
      for n, line in enumerate(f, 1):
        try:
          rec = json.loads(line)
          self._index[rec["key"]] = (int(rec["shard"]), int(rec["offset"]), int(rec["frames"]))
        except (ValueError, KeyError) as err:
          raise ValueError(f"{self.directory / INDEX}:{n}: damaged index line: {err}") from err
    self._shards: dict[int, np.ndarray] = {}

  @property
  def dim(self) -> int:
    return int(self.meta["dim"])

  def __len__(self) -> int:
    return len(self._index)

  def __contains__(self, audio_filepath: str) -> bool:
    return cache_key(audio_filepath) in self._index

  def check(self, expected_fingerprint: str) -> None:
    got = self.meta.get("fingerprint")
    if got != expected_fingerprint:
      raise ValueError(f"{self.directory}: feature cache built for encoder fingerprint {got}, "
                       f"but this model's encoder is {expected_fingerprint} (other weights, "
                       "encoder or frontend config): rebuild it or drop data.feature_cache")

  def frames(self, audio_filepath: str, *, manifest: str = "", line: int = 0) -> np.ndarray:
    rec = self._index.get(cache_key(audio_filepath))
    if rec is None:
      raise BadInputError(manifest, line, f"not in the feature cache {self.directory}: "
                          f"{audio_filepath}")
    shard, offset, n = rec
    if shard not in self._shards:
      self._shards[shard] = np.load(self.directory / f"shard_{shard:05d}.npy", mmap_mode="r")
    return np.asarray(self._shards[shard][offset:offset + n])

  def __getstate__(self):  # grain workers re-open the memory maps
    return dict(self.__dict__, _shards={})


def _write_json(path: pathlib.Path, obj: dict) -> None:
  """Writes `path` whole or not at all (temporary file + rename)."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2))
  os.replace(tmp, path)


def _read_index(out: pathlib.Path, log: Callable[[str], None]) -> tuple[set, int]:
  """(keys indexed, next shard number) of a cache being resumed. A last line a killed
  build did not finish is cut off (with a log line); its utterances are encoded again."""
  path = out / INDEX
  done, shard = set(), 0
  if not path.exists():
    return done, shard
  raw = path.read_bytes()
  good = 0
  for line in raw.splitlines(keepends=True):
    try:
      if not line.endswith(b"\n"):
        raise ValueError("no end of line")
      rec = json.loads(line)
      key, rec_shard = rec["key"], int(rec["shard"])
    except (ValueError, KeyError, TypeError) as err:
      if good + len(line) < len(raw):
        lineno = raw[:good].count(b"\n") + 1
        raise ValueError(f"{path}: damaged line {lineno}: {err}; delete the cache "
                         "directory and build it again") from err
      log(f"feature cache {path}: dropped its last line, cut short by a stopped build")
      with open(path, "r+b") as f:
        f.truncate(good)
      break
    done.add(key)
    shard = max(shard, rec_shard + 1)
    good += len(line)
  return done, shard


def build(encode: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
          entries: Iterable[manifest_lib.ManifestEntry], out_dir: str | os.PathLike, *,
          meta: dict, sample_rate: int = 16000, batch_seconds: float = 64.0,
          pad_seconds: float = 1.0, log: Callable[[str], None] = print,
          should_stop: Callable[[], bool] | None = None,
          flush_seconds: float = 300.0) -> dict:
  """Encodes every entry once and writes the cache (resumable: cached keys are skipped).

  Args:
    encode: `(audio [B, S] float32, audio_len [B] int32) -> (frames [B, T, d], len [B])`,
      e.g. a jitted `SpeechLLaMA.encode_frames`.
    entries: manifest entries (unreadable audio is reported and left out).
    out_dir: cache directory.
    meta: written to meta.json (must hold "fingerprint"); "dim", "complete" and
      "utterances" are added.
    batch_seconds: padded audio per encoder call; S is rounded up to `pad_seconds`.
    log: progress lines.
    should_stop: asked after each encoder call; True writes what was encoded and
      returns (the cache then resumes from there).
    flush_seconds: a shard is written at least this often (what a kill can lose).
  Returns:
    {"utterances", "frames", "seconds", "encode_seconds", "skipped": [[manifest, line,
    reason], ...], "stopped": bool, "cached": utterances in the cache}.
  Raises:
    ValueError: `out_dir` holds a cache of another encoder, or a damaged index.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  old = json.loads((out / META).read_text()) if (out / META).exists() else None
  if old is None and (out / INDEX).exists():
    raise ValueError(f"{out}: has {INDEX} but no {META} (a build of older code that did "
                     "not finish?): delete the directory or use a new one")
  if old is not None and old.get("fingerprint") != meta.get("fingerprint"):
    raise ValueError(f"{out}: holds a cache of another encoder ({old.get('fingerprint')}); "
                     "use a new directory")
  done, shard = _read_index(out, log)
  dim = old.get("dim") if old else meta.get("dim")
  # meta.json first, marked incomplete: a resume checks the fingerprint, and a reader
  # refuses the cache until the build has finished.
  _write_json(out / META, dict(meta, dim=dim, complete=False, utterances=len(done)))
  todo = {}
  for e in entries:  # each audio file once (a manifest may be listed twice to upweight it)
    key = cache_key(e.audio_filepath)
    if key not in done:
      todo.setdefault(key, e)
  entries = list(todo.values())
  skipped, items = [], []
  for e in entries:
    try:
      wav = audio_lib.load_audio(e.audio_filepath, manifest=e.manifest, line=e.line,
                                 target_rate=sample_rate)
      items.append((e, wav))
    except BadInputError as err:
      skipped.append([err.manifest, err.line, err.reason])
  items.sort(key=lambda it: len(it[1]))
  pad = int(pad_seconds * sample_rate)
  buf, buf_bytes, index_lines = [], 0, []
  t0, total_frames = time.perf_counter(), 0
  last_flush, stopped = time.monotonic(), False

  def flush():
    nonlocal shard, buf, buf_bytes, last_flush
    last_flush = time.monotonic()
    if not buf:
      return
    path = out / f"shard_{shard:05d}.npy"
    with open(path.with_name(path.name + ".tmp"), "wb") as f:
      np.save(f, np.concatenate([b for _, b in buf]))
    os.replace(path.with_name(path.name + ".tmp"), path)
    with open(out / INDEX, "a") as f:  # after the shard: an indexed key has its frames
      f.writelines(index_lines)
    done.update(json.loads(l)["key"] for l in index_lines)
    index_lines.clear()
    shard, buf, buf_bytes = shard + 1, [], 0

  i = 0
  while i < len(items):
    s = -(-len(items[i][1]) // pad) * pad
    b = max(1, int(batch_seconds * sample_rate // s))
    group = items[i:i + b]
    s = -(-max(len(w) for _, w in group) // pad) * pad
    audio = np.zeros((len(group), s), np.float32)
    lens = np.array([len(w) for _, w in group], np.int32)
    for r, (_, w) in enumerate(group):
      audio[r, :len(w)] = w
    frames, flen = encode(audio, lens)
    frames, flen = np.asarray(frames, np.float16), np.asarray(flen)
    dim = frames.shape[-1]
    offset = sum(len(x) for _, x in buf)
    for r, (e, w) in enumerate(group):
      x = frames[r, :int(flen[r])]
      index_lines.append(json.dumps({"key": cache_key(e.audio_filepath), "shard": shard,
                                     "offset": offset, "frames": len(x),
                                     "num_samples": len(w)}) + "\n")
      buf.append((e, x))
      offset += len(x)
      buf_bytes += x.nbytes
      total_frames += len(x)
    i += len(group)
    if buf_bytes >= SHARD_BYTES or time.monotonic() - last_flush >= flush_seconds:
      flush()
    if (i // b) % 20 == 0 or i == len(items):
      el = time.perf_counter() - t0
      log(f"feature cache: {i}/{len(items)} utterances, {el:.0f} s, "
          f"ETA {el / i * (len(items) - i):.0f} s")
    if should_stop is not None and i < len(items) and should_stop():
      stopped = True
      break
  flush()
  _write_json(out / META, dict(meta, dim=dim, complete=not stopped, utterances=len(done)))
  if stopped:
    log(f"feature cache: stopped after {i}/{len(items)} utterances, written to {out}; "
        "re-run the build to finish it")
  seconds = sum(len(w) for _, w in items[:i]) / sample_rate
  return {"utterances": i, "frames": total_frames, "seconds": seconds,
          "encode_seconds": time.perf_counter() - t0, "skipped": skipped,
          "stopped": stopped, "cached": len(done)}
