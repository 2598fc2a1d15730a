"""Benchmark: Pallas kernels vs their XLA references.

Fused verification: V in {8k, 32k, 128k}, B in {1, 16, 64}, K=4, d=768.
Token merging: N in {250, 750}, B in {1, 16}, d=768, dk=64, n = 30% of N.

Compile time (lower + compile) is reported separately from the steady state
(median of timed calls after warm-up, each ended by block_until_ready).  Each
row also checks the kernel against the reference on the same inputs.  On a
CPU the kernels only run in interpret mode and only at the smallest sizes
(other rows are recorded as skipped) unless --all is given.

Usage:
  python bench/kernels.py [--out bench/results/kernels.json] [--dtype bfloat16]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from pallas_kernels import token_merge  # noqa: E402
from pallas_kernels import verify  # noqa: E402

# Targets for compiled kernels on GPU: verify at V=32k, B=16; every merge row.
VERIFY_GOAL = 1.5
MERGE_GOAL = 2.0


def _time_fn(fn, args, warmup, reps):
  """Returns (compile_s, steady-state times in ms) of jax.jit(fn)(*args)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  out = None
  for _ in range(warmup):
    out = jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append((time.perf_counter() - t0) * 1e3)
  return compile_s, times, out


def _stats(compile_s, times):
  return {"compile_s": round(compile_s, 4),
          "median_ms": round(statistics.median(times), 4),
          "min_ms": round(min(times), 4),
          "p90_ms": round(float(np.percentile(times, 90)), 4)}


def bench_verify(v, b, dtype, interpret, warmup, reps, k=4, d=768):
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(b, k + 1, d)), dtype)
  w = jnp.asarray(rng.normal(size=(d, v)) / np.sqrt(d), dtype)
  drafts = jnp.asarray(rng.integers(0, v, (b, k)), jnp.int32)
  args = (h, w, drafts)
  ref_c, ref_t, ref = _time_fn(verify.verify_reference, args, warmup, reps)
  ker_c, ker_t, out = _time_fn(
      functools.partial(verify.verify_kernel, interpret=interpret), args,
      warmup, reps)
  return {
      "reference": _stats(ref_c, ref_t), "kernel": _stats(ker_c, ker_t),
      # Float near-ties may legitimately differ; expect ~1.0.
      "argmax_match": float(jnp.mean(out.argmax == ref.argmax)),
  }


def bench_merge(n_tok, b, dtype, interpret, warmup, reps, d=768, dk=64):
  rng = np.random.default_rng(0)
  n = int(0.3 * n_tok)
  lengths = np.full(b, n_tok)
  lengths[1::2] = rng.integers(n_tok // 2, n_tok, len(lengths[1::2]))
  args = (jnp.asarray(rng.normal(size=(b, n_tok, d)), dtype),
          jnp.asarray(rng.normal(size=(b, n_tok, dk)), dtype),
          jnp.asarray(rng.uniform(0.1, 1.0, (b, n_tok)), jnp.float32),
          jnp.asarray(np.arange(n_tok)[None] < lengths[:, None]))
  ref_c, ref_t, ref = _time_fn(
      functools.partial(token_merge.merge_reference, n=n), args, warmup, reps)
  ker_c, ker_t, out = _time_fn(
      functools.partial(token_merge.merge_kernel, n=n, interpret=interpret),
      args, warmup, reps)
  err = jnp.abs(out.merged.astype(jnp.float32) - ref.merged.astype(jnp.float32))
  return {
      "n": n, "reference": _stats(ref_c, ref_t), "kernel": _stats(ker_c, ker_t),
      "group_index_match": float(jnp.mean(out.group_index == ref.group_index)),
      "merged_max_abs_err": float(jnp.max(err)),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="bench/results/kernels.json")
  parser.add_argument("--dtype", default="bfloat16",
                      choices=["bfloat16", "float32"])
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--reps", type=int, default=None,
                      help="timed calls (default 30 on GPU/TPU, 3 on CPU)")
  parser.add_argument("--only", choices=["verify", "merge"], default=None)
  parser.add_argument("--all", action="store_true",
                      help="on CPU, also run the large sizes (slow)")
  args = parser.parse_args(argv)

  backend = jax.default_backend()
  accel = backend in ("gpu", "tpu")
  interpret = not accel
  reps = args.reps or (30 if accel else 3)
  warmup = args.warmup if accel else 1
  dtype = jnp.dtype(args.dtype)
  cases = []
  if args.only in (None, "verify"):
    cases += [("verify", dict(v=v, b=b)) for v in (8192, 32768, 131072)
              for b in (1, 16, 64)]
  if args.only in (None, "merge"):
    cases += [("merge", dict(n_tok=n, b=b)) for n in (250, 750) for b in (1, 16)]
  smallest = {"verify": dict(v=8192, b=1), "merge": dict(n_tok=250, b=1)}

  rows = []
  for name, shape in cases:
    row = {"op": name, **shape}
    if not accel and not args.all and shape != smallest[name]:
      row["skipped"] = f"{backend}: interpret mode only at the smallest size"
    else:
      fn = bench_verify if name == "verify" else bench_merge
      row.update(fn(**shape, dtype=dtype, interpret=interpret, warmup=warmup,
                    reps=reps))
      row["speedup"] = round(row["reference"]["median_ms"] /
                             row["kernel"]["median_ms"], 3)
    rows.append(row)
    _print_row(row)

  result = {
      "device_kind": jax.devices()[0].device_kind,
      "backend": backend,
      "jax_version": jax.__version__,
      "dtype": args.dtype,
      "kernel_mode": "interpret" if interpret else "compiled",
      "warmup": warmup, "reps": reps,
      "goals": {"verify_speedup_at_V32k_B16": VERIFY_GOAL,
                "merge_speedup": MERGE_GOAL},
      "rows": rows,
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix(out.suffix + ".tmp")
  tmp.write_text(json.dumps(result, indent=2) + "\n")
  os.replace(tmp, out)
  print(f"\ndevice={result['device_kind']} jax={jax.__version__} "
        f"mode={result['kernel_mode']} -> {out}")
  if interpret:
    print("note: kernels ran in the Pallas interpreter; timings are not "
          "representative of GPU/TPU.")
    return
  for row in rows:
    if row["op"] == "verify" and (row["v"], row["b"]) == (32768, 16):
      print(f"goal verify >= {VERIFY_GOAL}x at V=32k B=16: {row['speedup']}x")
    if row["op"] == "merge":
      print(f"goal merge >= {MERGE_GOAL}x at N={row['n_tok']} B={row['b']}: "
            f"{row['speedup']}x")


def _print_row(row):
  if row["op"] == "verify":
    label = f"verify V={row['v']:>6} B={row['b']:>2}"
  else:
    label = f"merge  N={row['n_tok']:>6} B={row['b']:>2}"
  if "skipped" in row:
    print(f"{label}  skipped ({row['skipped']})")
    return
  r, k = row["reference"], row["kernel"]
  check = (f"argmax_match={row['argmax_match']:.3f}" if row["op"] == "verify"
           else f"gid_match={row['group_index_match']:.3f} "
           f"err={row['merged_max_abs_err']:.2e}")
  print(f"{label}  ref {r['median_ms']:9.3f} ms (compile {r['compile_s']:6.2f}"
        f" s)  kernel {k['median_ms']:9.3f} ms (compile {k['compile_s']:6.2f}"
        f" s)  speedup {row['speedup']:6.2f}x  {check}")


if __name__ == "__main__":
  main()
