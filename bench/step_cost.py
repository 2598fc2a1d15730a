"""Decoder-call cost: a K-token verification step against a 1-token greedy step, per model.

  python bench/step_cost.py --configs configs/shift/deep_encoder.py:base=demo_conformer,configs/demo_conformer.py,\
configs/shift/deep_decoder.py:base=demo_conformer,configs/small.py:K=4,configs/paper.py:K=4

Verification decoding wins wall-clock time only if its call reduction exceeds what a
verify call costs relative to a greedy call. This measures that cost ratio on the
machine at hand, inside the same `lax.fori_loop` over the preallocated KV cache the
decoding loops use:

  * greedy: `decode_step` on 1 token per row (head 1), then argmax;
  * verify: `decode_step` on K tokens per row (head 1 at each), argmax, and heads
    2..K at one position (`common.heads_at`), as `mtp_jax.decode.verify` does.

The loops start from one prefilled cache (the prefill is timed apart, as
`prefill_ms`). Per-iteration time = (time of a 2N-step loop - time of an N-step
loop) / N, each the fastest of the repeats (the least disturbed by other work on the
machine), so fixed costs cancel; both loops use the same cache length. Compile time is
reported apart. Weights are random normal-initialized (not zeros); the cost of a call
does not depend on what the weights are. `break_even_reduction` is cost(verify) /
cost(greedy): the decoder-call reduction verify needs before its loop is faster than
greedy's. On a 2-core CPU the ratio moves by up to ~0.5 between runs: run it twice
before reading much into one row. Writes bench/results/step_cost_<backend>.json.
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
flags.DEFINE_list("configs", ["configs/shift/deep_encoder.py:base=demo_conformer", "configs/demo_conformer.py",
                              "configs/shift/deep_decoder.py:base=demo_conformer", "configs/small.py:K=4"],
                  "config files[:arg] with K >= 2 heads")
flags.DEFINE_list("batch_sizes", ["1"], "batch sizes")
flags.DEFINE_integer("steps", 32, "N: the loops run N and 2N decode steps")
flags.DEFINE_integer("context", 64, "audio tokens + text before the loop (prefill length)")
flags.DEFINE_integer("repeats", 15, "timed repeats (the fastest is kept)")
flags.DEFINE_string("out", None, "JSON path (default bench/results/step_cost_<backend>.json)")


def _timed(fn, *args, repeats: int) -> tuple[float, float]:
  """(compile + first run seconds, fastest of `repeats` runs: the least disturbed)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return first, float(np.min(ts))


def measure(config_path: str, batch: int) -> dict:
  """Times prefill-only, greedy-step and verify-step loops for one config."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mtp_jax import flops  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig, load_config_file  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode import common  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA, audio_token_count  # pylint: disable=g-import-not-at-top
  from mtp_jax.train.state import dummy_inputs  # pylint: disable=g-import-not-at-top

  cfg = ModelConfig.from_config(load_config_file(config_path).model)
  k = cfg.mtp.num_heads
  if k < 2:
    raise ValueError(f"{config_path}: model.mtp.num_heads={k}; verification needs K >= 2")
  model = SpeechLLaMA(cfg)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), *dummy_inputs(cfg))
  n = FLAGS.steps
  # Audio long enough for about `context` audio tokens in the decoder.
  per_second = float(audio_token_count(cfg.frontend.sample_rate, cfg))
  samples = int(FLAGS.context / per_second * cfg.frontend.sample_rate)
  audio = jax.random.normal(jax.random.PRNGKey(1), (batch, samples), jnp.float32) * 0.1
  alen = jnp.full((batch,), samples, jnp.int32)
  cache_len = common.max_text_len(2 * n * k, k)

  @jax.jit
  def prefill(params, audio, alen):
    out0, cache = common.model_fns(model, params).prefill(audio, alen, common.bos(batch),
                                                          cache_len)
    return jnp.argmax(out0["logits"][:, 0, 0], -1).astype(jnp.int32), cache

  def loop(width: int, steps: int):
    """A jitted loop of `steps` decode steps of `width` tokens from a prefilled cache.

    The params are an argument, as in the decoding loops (closed over, XLA would fold
    them in as constants)."""
    def body(f, s):
      cache, fed, ti = s
      out, cache = f.step(fed, ti, cache, num_heads=1)
      am = jnp.argmax(out["logits"][:, :, 0], -1).astype(jnp.int32)
      if width > 1:  # drafts for the next call from the last fed position
        drafts = jnp.argmax(common.heads_at(f, out["hidden"], jnp.full((batch,), width - 1))
                            [:, 1:], -1).astype(jnp.int32)
        am = jnp.concatenate([am[:, -1:], drafts], axis=1)
      return cache, am, ti + width

    @jax.jit
    def fn(params, cache, first):
      f = common.model_fns(model, params)
      fed0 = jnp.broadcast_to(first[:, None], (batch, width))
      return jax.lax.fori_loop(0, steps, lambda i, s: body(f, s),
                               (cache, fed0, jnp.ones((batch,), jnp.int32)))[1]
    return fn

  row = {"config": config_path, "batch": batch, "K": k, "steps": n, "context": FLAGS.context,
         "decoder_params": flops.param_counts(cfg)["decoder"],
         "total_params": flops.param_counts(cfg)["total"]}
  compile_s, t = _timed(prefill, params, audio, alen, repeats=FLAGS.repeats)
  ms = {("prefill", 0): t * 1e3}
  first, cache = jax.block_until_ready(prefill(params, audio, alen))
  for name, width in (("greedy", 1), ("verify", k)):
    for steps in (n, 2 * n):
      c, t = _timed(loop(width, steps), params, cache, first, repeats=FLAGS.repeats)
      compile_s += c
      ms[name, steps] = t * 1e3
  greedy_ms = max(ms["greedy", 2 * n] - ms["greedy", n], 1e-9) / n
  verify_ms = max(ms["verify", 2 * n] - ms["verify", n], 1e-9) / n
  row.update(prefill_ms=ms["prefill", 0], greedy_step_ms=greedy_ms, verify_step_ms=verify_ms,
             break_even_reduction=verify_ms / greedy_ms, compile_s=compile_s)
  return row


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  rows = []
  print(f"{'config':<42}{'B':>3}{'dec params':>12}{'prefill ms':>11}{'greedy ms':>10}"
        f"{'verify ms':>10}{'break-even':>11}{'compile s':>10}")
  out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                  f"step_cost_{jax.default_backend()}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  info = machine_info(argv=sys.argv)
  for path in FLAGS.configs:
    for b in map(int, FLAGS.batch_sizes):
      r = measure(path, b)
      rows.append(r)
      with open(out + ".tmp", "w") as f:  # after every row: a long run keeps what it did
        json.dump(dict(machine=info, rows=rows), f, indent=2)
      os.replace(out + ".tmp", out)
      print(f"{path:<42}{b:>3}{r['decoder_params']:>12,}{r['prefill_ms']:>11.2f}"
            f"{r['greedy_step_ms']:>10.3f}{r['verify_step_ms']:>10.3f}"
            f"{r['break_even_reduction']:>10.2f}x{r['compile_s']:>10.1f}", flush=True)
      jax.clear_caches()
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
