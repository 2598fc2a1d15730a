"""Decoder-call cost: one loop iteration of each decoding strategy, per model and batch size.

  python bench/step_cost.py --configs configs/recipes/whisper_tiny_cpu.py,configs/demo.py,\
configs/paper.py:K=4 --batch_sizes 1,16

Multi-token decoding wins wall-clock time only if its call reduction exceeds what one
of its iterations costs relative to a greedy iteration. This times the real thing:
the `body` of each strategy in `mtp_jax.decode.engine` (the decoder call plus
acceptance, emission, counters, cache bookkeeping), run by `lax.fori_loop` from one
prefilled loop state (the prefill + `init` is timed apart, as `prefill_ms`).

Per-iteration time = time of an N-iteration loop / N, the fastest of the repeats (the
least disturbed by other work on the machine); N is large enough (default 256) that
the call's fixed dispatch cost (~0.05 ms) is below 0.1% of the loop. The loops of one
row run in interleaved rounds (each loop once per round), so a disturbed stretch of
time hits every strategy alike. All loops use the
cache length of a real decode (--max_new_tokens). Compile time is reported apart.
Weights are random normal-initialized (not zeros); an iteration's cost does not depend
on what the weights are (rows that finish keep computing, masked, as in the real loop).
`<strategy>_ratio` = iteration cost / greedy's: the decoder-call reduction the strategy
needs before it is faster than greedy. On a 2-core CPU ratios move by ~0.1-0.3 between
runs. Writes bench/results/step_cost_<backend>.json.
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
flags.DEFINE_list("configs", ["configs/recipes/whisper_tiny_cpu.py", "configs/demo.py",
                              "configs/small.py:K=4"],
                  "config files[:arg] with K >= 2 heads; an arg's own commas are kept "
                  "(configs/a.py:K=4,head=latent,configs/b.py is two configs)")
flags.DEFINE_list("strategies", ["greedy", "verify", "tree", "threshold"],
                  "strategies to time (greedy first: the reference), options after colons: "
                  "verify:draft_vocab=8192")
flags.DEFINE_list("batch_sizes", ["1"], "batch sizes")
flags.DEFINE_integer("steps", 256, "N: iterations per timed loop")
flags.DEFINE_integer("max_new_tokens", 100, "the decode's token cap (sets the cache length)")
flags.DEFINE_list("widths", ["1", "2", "4", "8"], "tokens per bare decoder call to time "
                  "(call_ms_by_width; empty: skip)")
flags.DEFINE_integer("context", 64, "audio tokens + text before the loop (prefill length)")
flags.DEFINE_integer("repeats", 7, "timed repeats (the fastest is kept)")
flags.DEFINE_bool("decode_layout", True, "time with the decoding copy of a tied unembedding "
                  "(mtp_jax.model.heads.decode_layout), as restore_for_inference loads it")
flags.DEFINE_string("out", None, "JSON path (default bench/results/step_cost_<backend>.json)")


def config_args(items: list[str]) -> list[str]:
  """Re-joins the comma-split `--configs` list: a piece that names no `.py` file
  continues the previous config's arg ("a.py:K=4", "head=latent" -> "a.py:K=4,head=latent")."""
  out: list[str] = []
  for item in items:
    if out and ".py" not in item:
      out[-1] += "," + item
    else:
      out.append(item)
  return out


def _compile(fn, *args) -> float:
  """Compile + first run seconds."""
  import jax  # pylint: disable=g-import-not-at-top
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t


def _fastest(runs: dict, repeats: int) -> dict:
  """{name: (fn, args)} -> {name: fastest seconds}, timed in interleaved rounds (every
  fn once per round), so a disturbed stretch of time hits all of them alike."""
  import jax  # pylint: disable=g-import-not-at-top
  best = {name: float("inf") for name in runs}
  for _ in range(repeats):
    for name, (fn, args) in runs.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      best[name] = min(best[name], time.perf_counter() - t)
  return best


def measure(config_path: str, batch: int, strategies: list[str]) -> dict:
  """Times prefill + init, N iterations of each strategy's loop body and N bare decoder
  calls per width, interleaved."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mtp_jax import flops  # pylint: disable=g-import-not-at-top
  from mtp_jax.config import ModelConfig, load_config_file  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode import common, registry  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.heads import decode_layout  # pylint: disable=g-import-not-at-top
  from mtp_jax.model.speech_llama import SpeechLLaMA, audio_token_count  # pylint: disable=g-import-not-at-top
  from mtp_jax.train.state import dummy_inputs  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  cfg = ModelConfig.from_config(load_config_file(config_path).model)
  k = cfg.mtp.num_heads
  if k < 2:
    raise ValueError(f"{config_path}: model.mtp.num_heads={k}; multi-token decoding needs K >= 2")
  model = SpeechLLaMA(cfg)
  params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), *dummy_inputs(cfg)))
  if FLAGS.decode_layout:
    params = decode_layout(params, cfg.decoder.tie_embeddings)
  n = FLAGS.steps
  # Audio long enough for about `context` audio tokens in the decoder.
  per_second = float(audio_token_count(cfg.frontend.sample_rate, cfg))
  samples = int(FLAGS.context / per_second * cfg.frontend.sample_rate)
  audio = jax.random.normal(jax.random.PRNGKey(1), (batch, samples), jnp.float32) * 0.1
  alen = jnp.full((batch,), samples, jnp.int32)

  row = {"config": config_path, "batch": batch, "K": k, "steps": n, "context": FLAGS.context,
         "decoder_params": flops.param_counts(cfg)["decoder"],
         "total_params": flops.param_counts(cfg)["total"], "compile_s": 0.0,
         "decode_layout": bool(FLAGS.decode_layout and cfg.decoder.tie_embeddings)}
  runs = {}
  for name in strategies:
    # The cache of a real decode (max_new_tokens); rows that finish keep computing,
    # masked, as in the real loop, so every iteration costs the same.
    sname, options = registry.split_spec(name)  # e.g. "verify:draft_vocab=8192"
    strategy = registry.get(sname).build(model, max_new_tokens=FLAGS.max_new_tokens,
                                         **dict(registry.resolve_options(sname, options)))

    @jax.jit
    def start(params, audio, alen, strategy=strategy):
      f = common.model_fns(model, params)
      out0, cache = f.prefill(audio, alen, common.bos(batch),
                              common.max_text_len(strategy.max_new_tokens, strategy.feed_width))
      return strategy.init(f, out0, cache, alen)

    @jax.jit
    def loop(params, state, strategy=strategy):
      f = common.model_fns(model, params)
      s = jax.lax.fori_loop(0, n, lambda i, s: strategy.body(f, s), state)
      return s.n_out, s.text_index

    row["compile_s"] += _compile(start, params, audio, alen)
    if name == strategies[0]:
      runs["prefill"] = (start, (params, audio, alen))
    state = jax.block_until_ready(start(params, audio, alen))
    row["compile_s"] += _compile(loop, params, state)
    runs[name] = (loop, (params, state))
    if name == "greedy":
      for t in map(int, FLAGS.widths):
        fn = _bare_calls(model, t, n)
        args = (params, state.cache, state.text_index)
        row["compile_s"] += _compile(fn, *args)
        runs[f"T={t}"] = (fn, args)
  best = _fastest(runs, FLAGS.repeats)
  row["prefill_ms"] = best.pop("prefill") * 1e3
  for name in strategies:
    row[f"{name}_step_ms"] = best[name] * 1e3 / n
    row[f"{name}_ratio"] = best[name] / best["greedy"]
  row["call_ms_by_width"] = {t: best[f"T={t}"] * 1e3 / n for t in FLAGS.widths}
  row["break_even_reduction"] = row.get("verify_ratio")
  return row


def _bare_calls(model, t: int, n: int):
  """A jitted loop of n bare decoder calls (head 1 at every position) feeding T tokens
  per row: how a call's cost grows with the tokens it verifies."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mtp_jax.decode import common  # pylint: disable=g-import-not-at-top

  @jax.jit
  def fn(params, cache, ti):
    f = common.model_fns(model, params)
    def body(i, c):
      cache, tok = c
      o, cache = f.step(tok, ti, cache, num_heads=1)
      return cache, common.argmax(o["logits"][:, :, 0])
    tok = jnp.zeros((ti.shape[0], t), jnp.int32)
    return jax.lax.fori_loop(0, n, body, (cache, tok))[1]
  return fn


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  strategies = list(FLAGS.strategies)
  if strategies[0] != "greedy":
    strategies = ["greedy"] + [s for s in strategies if s != "greedy"]
  rows = []
  print(f"{'config':<40}{'B':>3}{'dec params':>12}{'prefill ms':>11}"
        + "".join(f"{s + ' ms':>13}" for s in strategies)
        + "".join(f"{s + '/greedy':>16}" for s in strategies[1:]) + f"{'compile s':>10}")
  out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                  f"step_cost_{jax.default_backend()}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  info = machine_info(argv=sys.argv)
  for path in config_args(FLAGS.configs):
    for b in map(int, FLAGS.batch_sizes):
      r = measure(path, b, strategies)
      rows.append(r)
      with open(out + ".tmp", "w") as f:  # after every row: a long run keeps what it did
        json.dump(dict(machine=info, strategies=strategies, rows=rows), f, indent=2)
      os.replace(out + ".tmp", out)
      print(f"{path:<40}{b:>3}{r['decoder_params']:>12,}{r['prefill_ms']:>11.2f}"
            + "".join(f"{r[s + '_step_ms']:>13.3f}" for s in strategies)
            + "".join(f"{r[s + '_ratio']:>15.2f}x" for s in strategies[1:])
            + f"{r['compile_s']:>10.1f}", flush=True)
      if r.get("call_ms_by_width"):
        w = r["call_ms_by_width"]
        print("    bare decoder call ms by tokens fed: " + ", ".join(
            f"T={t}: {v:.3f} ({v / w['1']:.2f}x)" if "1" in w else f"T={t}: {v:.3f}"
            for t, v in w.items()), flush=True)
      jax.clear_caches()
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
