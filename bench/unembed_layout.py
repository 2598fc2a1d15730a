"""The vocabulary projection of a decoder call, alone: layout of the unembedding and argmax.

  python bench/unembed_layout.py --vocab 51864 --d_model 384 --rows 1,4,16,64

A decoder call of Whisper tiny's decoder spends most of its time multiplying a few
rows by the [51864, 384] tied embedding. This times that matmul as the training
forward runs it (x @ E^T, E stored [V, d], `flax.linen.Embed.attend`) and as decoding
runs it (x @ W, W = E^T stored [d, V]: `mtp_jax.model.heads.decode_layout`), with and
without the argmax over the vocabulary (`jnp.argmax` vs two plain reductions,
`mtp_jax.decode.common.first_max_index`),
for M rows (M = batch x fed positions x heads). It also prints what the choice between
one and two vocabulary passes per multi-token call rests on
(`mtp_jax.decode.common.ONE_PASS_MAX_ROWS`): the time of M rows against M/4 rows twice.

Each variant is jitted and run once before timing (compile apart); the variants run in
interleaved rounds and the median and fastest of the rounds are kept. Random normal
weights and inputs. Writes bench/results/unembed_layout_<backend>.json.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from mtp_jax.machine import machine_info  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("vocab", 51864, "V (Whisper's 51,864 by default)")
flags.DEFINE_integer("d_model", 384, "d")
flags.DEFINE_list("rows", ["1", "4", "16", "64"], "M: rows per matmul")
flags.DEFINE_integer("rounds", 40, "timed rounds (each variant once per round)")
flags.DEFINE_string("out", None, "JSON path (default bench/results/unembed_layout_<backend>.json)")


def main(_):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from mtp_jax.decode.common import first_max_index  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  table = rng.normal(size=(FLAGS.vocab, FLAGS.d_model)).astype(np.float32) * 0.05
  e = jnp.asarray(table)                 # [V, d], as the embedding is stored
  w = jnp.asarray(table.T.copy())         # [d, V], the decoding layout
  variants = {
      "xEt": (jax.jit(lambda x, e: x @ e.T), e),
      "xW": (jax.jit(lambda x, w: x @ w), w),
      "xEt_argmax": (jax.jit(lambda x, e: jnp.argmax(x @ e.T, -1)), e),
      "xW_argmax": (jax.jit(lambda x, w: jnp.argmax(x @ w, -1)), w),
      "xW_two_reductions_argmax": (jax.jit(lambda x, w: first_max_index(x @ w)), w),
  }
  rows_out = []
  print(f"{'M':>4}" + "".join(f"{k + ' ms':>28}" for k in variants)
        + f"{'xEt/xW':>9}{'argmax saved ms':>17}")
  for m in map(int, FLAGS.rows):
    x = jnp.asarray(rng.normal(size=(m, FLAGS.d_model)).astype(np.float32))
    for fn, arg in variants.values():
      jax.block_until_ready(fn(x, arg))
    times = {k: [] for k in variants}
    for _ in range(FLAGS.rounds):
      for k, (fn, arg) in variants.items():
        t = time.perf_counter()
        jax.block_until_ready(fn(x, arg))
        times[k].append(time.perf_counter() - t)
    r = {"rows": m}
    for k, v in times.items():
      r[k + "_ms"] = float(np.median(v) * 1e3)
      r[k + "_min_ms"] = float(np.min(v) * 1e3)
    r["layout_speedup"] = r["xEt_ms"] / r["xW_ms"]
    r["argmax_saved_ms"] = r["xW_argmax_ms"] - r["xW_two_reductions_argmax_ms"]
    rows_out.append(r)
    print(f"{m:>4}" + "".join(f"{r[k + '_ms']:>28.3f}" for k in variants)
          + f"{r['layout_speedup']:>8.2f}x{r['argmax_saved_ms']:>17.3f}", flush=True)
  by_m = {r["rows"]: r["xW_ms"] for r in rows_out}
  passes = []
  for m in sorted(by_m):
    if m // 4 in by_m and m >= 4:
      passes.append({"rows": m, "one_pass_ms": by_m[m], "two_passes_ms": 2 * by_m[m // 4]})
      print(f"one pass of {m} rows {by_m[m]:.3f} ms vs two passes of {m // 4} rows "
            f"{2 * by_m[m // 4]:.3f} ms")
  out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                  f"unembed_layout_{jax.default_backend()}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(dict(machine=machine_info(argv=sys.argv), vocab=FLAGS.vocab,
                   d_model=FLAGS.d_model, rows=rows_out, passes=passes), f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
