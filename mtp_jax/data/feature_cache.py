"""On-disk cache of a frozen encoder's outputs, so training does not run the encoder.

With a frozen speech encoder (a pretrained Whisper encoder, `train.frozen`), every
training step would recompute the same encoder frames. `build` runs the encoder once
per utterance and writes its frames in half precision to a cache directory:

  meta.json      the encoder + frontend config and a fingerprint of the encoder weights
  index.jsonl    one line per utterance: {"key", "shard", "offset", "frames", "num_samples"}
  shard_00000.npy ...  [N, d] float16 frames of many utterances, back to back

`FeatureCache` memory-maps the shards; the training pipeline (`data.feature_cache`)
then delivers `frames` [B, T, d] instead of `audio` [B, S], with the same bucketing
(T = the encoder's frames for the bucket's S samples) and the same bad-input handling
(an utterance missing from the cache is a named bad input). The cache is keyed by the
audio file's real path; the fingerprint in meta.json is checked against the model
before training, so a cache of other weights or another frontend is refused.

  python -m mtp_jax.data.feature_cache --config configs/recipes/whisper_tiny_cpu.py \
      --out runs/whisper_tiny/features
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


class FeatureCache:
  """Read side: `frames(audio_filepath)` -> [T, d] float16 (memory-mapped)."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = pathlib.Path(directory)
    meta_path = self.directory / META
    if not meta_path.exists():
      raise FileNotFoundError(f"{meta_path}: no feature cache here (build one with "
                              "python -m mtp_jax.data.feature_cache)")
    self.meta = json.loads(meta_path.read_text())
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


def build(encode: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
          entries: Iterable[manifest_lib.ManifestEntry], out_dir: str | os.PathLike, *,
          meta: dict, sample_rate: int = 16000, batch_seconds: float = 64.0,
          pad_seconds: float = 1.0, log: Callable[[str], None] = print) -> dict:
  """Encodes every entry once and writes the cache (resumable: cached keys are skipped).

  Args:
    encode: `(audio [B, S] float32, audio_len [B] int32) -> (frames [B, T, d], len [B])`,
      e.g. a jitted `SpeechLLaMA.encode_frames`.
    entries: manifest entries (unreadable audio is reported and left out).
    out_dir: cache directory.
    meta: written to meta.json (must hold "fingerprint"); "dim" is added.
    batch_seconds: padded audio per encoder call; S is rounded up to `pad_seconds`.
  Returns:
    {"utterances", "frames", "seconds", "skipped": [[manifest, line, reason], ...]}.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  done = set()
  shard = 0
  if (out / INDEX).exists() and (out / META).exists():
    old = json.loads((out / META).read_text())
    if old.get("fingerprint") != meta.get("fingerprint"):
      raise ValueError(f"{out}: holds a cache of another encoder ({old.get('fingerprint')}); "
                       "use a new directory")
    with open(out / INDEX) as f:
      for line in f:
        rec = json.loads(line)
        done.add(rec["key"])
        shard = max(shard, int(rec["shard"]) + 1)
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
  t0, total_frames, dim = time.perf_counter(), 0, None

  def flush():
    nonlocal shard, buf, buf_bytes
    if not buf:
      return
    np.save(out / f"shard_{shard:05d}.npy", np.concatenate([b for _, b in buf]))
    with open(out / INDEX, "a") as f:
      f.writelines(index_lines)
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
    if buf_bytes >= SHARD_BYTES:
      flush()
    if (i // b) % 20 == 0 or i == len(items):
      el = time.perf_counter() - t0
      log(f"feature cache: {i}/{len(items)} utterances, {el:.0f} s, "
          f"ETA {el / i * (len(items) - i):.0f} s")
  flush()
  if dim is not None or not (out / META).exists():
    (out / META).write_text(json.dumps(dict(meta, dim=dim if dim is not None else
                                            meta.get("dim")), indent=2))
  seconds = sum(len(w) for _, w in items) / sample_rate
  return {"utterances": len(items), "frames": total_frames, "seconds": seconds,
          "encode_seconds": time.perf_counter() - t0, "skipped": skipped}
