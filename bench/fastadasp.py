"""Benchmark: FastAdaSP audio-token reduction in the decoder prefill, with baselines.

For every method (fastadasp_dense, fastadasp_sparse, random_merge, random_evict,
atome, fastv), schedule (decay / constant; the single-layer methods have none) and
target decoder-prefill FLOPs reduction (10-50%), measures on Kathleen test and FSDD
test (8 kHz, resampled to 16 kHz by the loader):

  * WER of greedy decoding (needs a trained `--workdir`; column is null otherwise),
  * the analytical decoder prefill FLOPs reduction actually planned (mtp_jax/flops.py),
  * decoder prefill latency (steady state, median, over encoded audio tokens) as a
    ratio to the full-token prefill, measured side by side in the same run, both vs
    the model's normal prefill and vs the reduced code path run with zero merges (a
    control for the code path itself); the encoder's latency is measured once and
    added for an end-to-end prefill ratio; compile time reported separately,
  * greedy decode throughput (tokens/s incl. prefill) vs full tokens,
  * the combined speedup of FastAdaSP + verification decoding vs plain greedy.

The layout follows the FastAdaSP paper's Table 9 (method x FLOPs reduction -> WER).

  python bench/fastadasp.py --workdir runs/small          # trained model: every column
  python bench/fastadasp.py --config configs/small.py:K=4  # random init: FLOPs/latency only

With no `--workdir` the model is randomly initialized: WER is not measured, and the
decode-throughput and combined-speedup columns only reflect compute (a random model
never stops early and its drafts are rarely accepted). The JSON says which.
Writes a table to stdout and JSON to --out (default bench/results/fastadasp.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from mtp_jax.machine import machine_info
from mtp_jax import flops  # noqa: E402
from mtp_jax.config import ModelConfig, ReductionConfig, load_config_file  # noqa: E402
from mtp_jax.data.audio import SAMPLE_RATE  # noqa: E402
from mtp_jax.model import reduction_calibrate, reduction_plan  # noqa: E402
from mtp_jax.model.speech_llama import SpeechLLaMA, audio_token_count  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
_DATA = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "shared", "data")
MULTI = ("fastadasp_dense", "random_merge", "random_evict", "atome")
SINGLE = ("fastadasp_sparse", "fastv")
BOS, EOS = 1, 2


def _machine() -> dict:
  return machine_info(devices=[str(d) for d in jax.devices()])


# ---------------------------------------------------------------- data
def load_set(manifest: str, max_utts: int, batch_size: int, pad_multiple: int = 8000):
  """Utterances of a manifest (first `max_utts`), sorted by length into padded batches.

  Returns:
    list of (audio [B, S] f32, audio_len [B] i32, refs list[str]); short batches are
    filled with empty rows (audio_len 0, ref None).
  """
  from mtp_jax.data.audio import load_audio  # pylint: disable=g-import-not-at-top
  from mtp_jax.data.manifest import load_manifest  # pylint: disable=g-import-not-at-top
  entries = load_manifest(manifest)[:max_utts]
  wavs = [(load_audio(e.audio_filepath), e.text) for e in entries]
  wavs.sort(key=lambda w: len(w[0]))
  batches = []
  for i in range(0, len(wavs), batch_size):
    rows = wavs[i:i + batch_size]
    s = -(-max(len(w) for w, _ in rows) // pad_multiple) * pad_multiple
    audio = np.zeros((batch_size, s), np.float32)
    alen = np.zeros((batch_size,), np.int32)
    refs = [None] * batch_size
    for j, (w, t) in enumerate(rows):
      audio[j, :len(w)] = w
      alen[j] = len(w)
      refs[j] = t
    batches.append((audio, alen, refs))
  return batches


def parse_methods(spec: str, schedules: list[str]) -> list[tuple[str, list[str]]]:
  """`--methods` as (method, schedules) pairs: "atome:decay" (or "atome:decay+constant")
  limits a multi-layer method to those schedules; single-layer methods get ["-"]."""
  out = []
  for entry in spec.split(","):
    name, _, only = entry.partition(":")
    chosen = only.split("+") if only else schedules
    if name not in MULTI + SINGLE or (only and name not in MULTI) or any(
        sc not in ("decay", "constant") for sc in chosen):
      raise SystemExit(f"--methods: bad entry {entry!r}; methods are {MULTI + SINGLE}, "
                       "schedules (multi-layer methods only) decay / constant")
    out.append((name, chosen if name in MULTI else ["-"]))
  return out


# ---------------------------------------------------------------- model variants
def with_reduction(cfg: ModelConfig, **kw) -> ModelConfig:
  return dataclasses.replace(cfg, reduction=ReductionConfig(**kw))


def planned_reduction(cfg: ModelConfig, batches, t0: int = 1) -> float:
  """Analytical decoder-prefill FLOPs reduction over the batches (padded shapes)."""
  full = red = 0.0
  for audio, _, _ in batches:
    p = int(audio_token_count(audio.shape[1], cfg))
    plan = reduction_plan.make_plan(cfg, p, t0) or (0,) * cfg.decoder.num_layers
    full += sum(flops.reduced_prefill_flops(cfg, p, t0, [0] * len(plan)))
    red += sum(flops.reduced_prefill_flops(cfg, p, t0, plan))
  return 1.0 - red / full


def prefill_fn(cfg: ModelConfig, max_text: int, force_zero_plan: bool = False):
  """Jitted BOS prefill. `force_zero_plan`: run the reduced code path with zero merges
  (a control isolating the effect of fewer tokens from that of the code path)."""
  model = SpeechLLaMA(cfg)

  def fn(params, emb, valid, alen):  # decoder prefill over encoded audio tokens
    text = jnp.full((emb.shape[0], 1), BOS, jnp.int32)
    return model.apply(params, emb, valid, alen, text, max_text,
                       method=model.prefill_from_embeddings)
  jitted = jax.jit(fn)
  if not force_zero_plan:
    return jitted
  state = {"traced": False}

  def call(*args):
    if state["traced"]:
      return jitted(*args)
    orig = reduction_plan.make_plan
    reduction_plan.make_plan = lambda c, p, t: (0,) * c.decoder.num_layers
    try:
      out = jitted(*args)
    finally:
      reduction_plan.make_plan = orig
    state["traced"] = True
    return out
  return call


def time_side_by_side(fns: dict, params, args, reps: int) -> dict:
  """Compile time and median steady-state latency of each fn(params, *args), interleaved."""
  out = {}
  for name, fn in fns.items():
    t = time.perf_counter()
    jax.block_until_ready(fn(params, *args))
    out[name] = {"first_call_s": time.perf_counter() - t, "times": []}
  for fn in fns.values():  # one untimed steady-state call each
    jax.block_until_ready(fn(params, *args))
  for _ in range(reps):
    for name, fn in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(params, *args))
      out[name]["times"].append(time.perf_counter() - t)
  for v in out.values():
    v["median_s"] = statistics.median(v.pop("times"))
    v["compile_s"] = max(v["first_call_s"] - v["median_s"], 0.0)
  return out


def decode_all(cfg, params, batches, strategy, max_new, tokenizer):
  """Decodes every batch; returns (hyps, refs, generated tokens, seconds after warm-up)."""
  from mtp_jax.decode.api import decode  # pylint: disable=g-import-not-at-top
  model = SpeechLLaMA(cfg)
  hyps, refs, tokens, secs = [], [], 0, 0.0
  seen = set()
  for audio, alen, r in batches:
    a, l = jnp.asarray(audio), jnp.asarray(alen)
    if audio.shape not in seen:  # compile outside the timed region
      jax.block_until_ready(decode(model, params, a, l, strategy=strategy,
                                   max_new_tokens=max_new).tokens)
      seen.add(audio.shape)
    t = time.perf_counter()
    res = decode(model, params, a, l, strategy=strategy, max_new_tokens=max_new)
    jax.block_until_ready(res.tokens)
    secs += time.perf_counter() - t
    toks, lens = np.asarray(res.tokens), np.asarray(res.lengths)
    for j, ref in enumerate(r):
      if ref is None:
        continue
      tokens += int(lens[j])
      refs.append(ref)
      hyps.append(tokenizer.decode(toks[j, :lens[j]].tolist()) if tokenizer else "")
  return hyps, refs, tokens, secs


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", default=None, help="trained run (restore_for_inference)")
  ap.add_argument("--config", default="configs/small.py:K=4",
                  help="config for a random-init model when --workdir is absent")
  ap.add_argument("--sets", default="kathleen_test,fsdd_test",
                  help="comma list of kathleen_test, fsdd_test or name=manifest.jsonl")
  ap.add_argument("--max_utts", type=int, default=64)
  ap.add_argument("--batch_size", type=int, default=8)
  ap.add_argument("--pad_seconds", type=float, default=0.5,
                  help="batches are padded to a multiple of this many seconds: coarser "
                       "means fewer distinct shapes to compile per row")
  ap.add_argument("--targets", default="0.1,0.2,0.3,0.4,0.5")
  ap.add_argument("--methods", default=",".join(MULTI + SINGLE),
                  help="comma list; 'method:decay' (or 'method:decay+constant') limits a "
                       "multi-layer method to those schedules")
  ap.add_argument("--schedules", default="decay,constant")
  ap.add_argument("--max_new_tokens", type=int, default=48)
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--decode_timing", default="fastadasp_dense:decay",
                  help="method:schedule pairs (comma list) timed for decode throughput and "
                       "the verify combination; 'all' for every row")
  ap.add_argument("--decode_targets", default="0.3",
                  help="targets timed for decode throughput / verify ('all' = --targets)")
  ap.add_argument("--sparse_calib_target", type=float, default=0.3,
                  help="FLOPs target at which the sparse layer is chosen (reused for all)")
  ap.add_argument("--sparse_compare", type=int, default=1,
                  help="1: also score the sparse merge in the best- and worst-ranked other "
                       "layers at --sparse_calib_target (trained models only)")
  ap.add_argument("--out", default=os.path.join(_HERE, "results", "fastadasp.json"))
  args = ap.parse_args()

  trained = args.workdir is not None
  if trained:
    from mtp_jax.checkpoint import restore_for_inference  # pylint: disable=g-import-not-at-top
    config, params, tokenizer = restore_for_inference(args.workdir)
  else:
    config, tokenizer = load_config_file(args.config), None
  base = ModelConfig.from_config(config.model)
  if not trained:
    model = SpeechLLaMA(base)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16000)),
                                 jnp.ones((1,), jnp.int32) * 16000, jnp.ones((1, 1), jnp.int32))
  paths = {"kathleen_test": os.path.join(_DATA, "kathleen", "test.jsonl"),
           "fsdd_test": os.path.join(_DATA, "fsdd", "test.jsonl")}
  targets = [float(t) for t in args.targets.split(",")]
  methods = parse_methods(args.methods, args.schedules.split(","))
  timed = None if args.decode_timing == "all" else set(args.decode_timing.split(","))
  dec_targets = (set(targets) if args.decode_targets == "all"
                 else {float(t) for t in args.decode_targets.split(",")})
  max_text = args.max_new_tokens + base.mtp.num_heads + 2
  result = {"machine": _machine(), "args": vars(args), "trained": trained,
            "model": {"decoder_layers": base.decoder.num_layers,
                      "d_model": base.decoder.d_model, "K": base.mtp.num_heads,
                      "params": flops.param_counts(base)},
            "notes": ("WER/decode columns from a trained model" if trained else
                      "RANDOM-INIT model: no WER; latency/FLOPs are real measurements of "
                      "compute, decode throughput runs to max_new_tokens (no EOS), and "
                      "verify acceptance is near zero, so the combined speedup is not "
                      "representative of a trained model"),
            "sets": {}}
  for set_spec in args.sets.split(","):
    set_name, _, path = set_spec.partition("=")  # "name=manifest" for any other test set
    if not path and set_name not in paths:
      raise SystemExit(f"--sets: unknown set {set_name!r}; use one of {sorted(paths)} or "
                       "name=path/to/manifest.jsonl")
    batches = load_set(path or paths[set_name], args.max_utts, args.batch_size,
                       pad_multiple=int(round(args.pad_seconds * SAMPLE_RATE)))
    timing_batch = batches[-1]  # the longest batch
    p_timing = int(audio_token_count(timing_batch[0].shape[1], base))
    rows = []

    def wer_of(cfg, strategy="greedy"):
      hyps, refs, toks, secs = decode_all(cfg, params, batches, strategy, args.max_new_tokens,
                                          tokenizer)
      w = None
      if trained:
        from mtp_jax.text import wer  # pylint: disable=g-import-not-at-top
        w = wer(refs, hyps)["wer"]
      return w, toks, secs

    model = SpeechLLaMA(base)
    encode = jax.jit(lambda pr, a, l: model.apply(pr, a, l, method=model.encode))
    enc_lat = time_side_by_side({"encode": encode}, params,
                                (jnp.asarray(timing_batch[0]), jnp.asarray(timing_batch[1])),
                                args.reps)["encode"]
    timing_args = encode(params, jnp.asarray(timing_batch[0]), jnp.asarray(timing_batch[1]))
    full_fns = {"full": prefill_fn(base, max_text),
                "full_same_path": prefill_fn(with_reduction(base, method="fastadasp_dense"),
                                             max_text, force_zero_plan=True)}
    sparse = None
    if "fastadasp_sparse" in dict(methods):
      layer, losses = reduction_calibrate.calibrate_sparse_layer(
          base, params, batches[0][0], batches[0][1], args.sparse_calib_target)
      sparse = {"layer": layer, "calib_target": args.sparse_calib_target,
                "te_losses": {str(k): v for k, v in losses.items()},
                "ranking": sorted(losses, key=losses.get)}
      print("sparse layer (transfer entropy):", json.dumps(sparse), flush=True)
    full_wer = full_tok = full_secs = None
    print(f"{set_name}: {len(batches)} batches; full tokens: greedy"
          + (" and verify" if base.mtp.num_heads > 1 else "") + ", then one row per "
          "method x schedule x target", flush=True)
    if trained or timed is None or timed:
      full_wer, full_tok, full_secs = wer_of(base)
    ver_wer, ver_tok, ver_secs = (None, None, None)
    if base.mtp.num_heads > 1:
      ver_wer, ver_tok, ver_secs = wer_of(base, "verify")
    entry = {"num_batches": len(batches), "timing_audio_tokens": p_timing,
             "sparse_calibration": sparse,
             "encoder_ms_timing_batch": enc_lat["median_s"] * 1e3,
             "full": {"wer": full_wer, "tokens_per_s": full_tok / full_secs if full_secs else None,
                      "verify_wer": ver_wer,
                      "verify_speedup_vs_greedy": (full_secs / ver_secs) if ver_secs else None}}
    entry["rows"] = rows  # filled in place below
    result["sets"][set_name] = entry
    if sparse is not None and trained and args.sparse_compare:
      # The selected layer against the best- and worst-ranked others, at the calibration
      # target: does the transfer-entropy ranking predict WER on this model?
      others = [l for l in sparse["ranking"] if l != sparse["layer"]]
      compare = [sparse["layer"]] + sorted({others[0], others[-1]}) if others else []
      sparse["layer_wer"] = {}
      for layer in compare:
        cfg = with_reduction(base, method="fastadasp_sparse", sparse_layer=layer,
                             flops_reduction=args.sparse_calib_target)
        sparse["layer_wer"][str(layer)] = wer_of(cfg)[0]
        print(f"sparse layer {layer}: WER {sparse['layer_wer'][str(layer)]:.4f}", flush=True)
        jax.clear_caches()
      _write_json(result, args.out)
    for method, method_schedules in methods:
      for schedule in method_schedules:
        for target in targets:
          kw = dict(method=method, flops_reduction=target,
                    schedule=schedule if schedule != "-" else "decay")
          row = {"method": method, "schedule": schedule, "target": target}
          if method == "fastadasp_sparse":
            kw["sparse_layer"] = row["sparse_layer"] = sparse["layer"]
          cfg = with_reduction(base, **kw)
          row["flops_reduction"] = planned_reduction(cfg, batches)
          row["plan_timing_batch"] = reduction_plan.make_plan(cfg, p_timing, 1)
          lat = time_side_by_side(dict(full_fns, reduced=prefill_fn(cfg, max_text)),
                                  params, timing_args, args.reps)
          row["decoder_prefill_ms"] = lat["reduced"]["median_s"] * 1e3
          row["decoder_prefill_full_ms"] = lat["full"]["median_s"] * 1e3
          enc = enc_lat["median_s"]
          row["end_to_end_prefill_speedup"] = ((enc + lat["full"]["median_s"])
                                               / (enc + lat["reduced"]["median_s"]))
          row["prefill_speedup"] = lat["full"]["median_s"] / lat["reduced"]["median_s"]
          row["prefill_speedup_same_path"] = (lat["full_same_path"]["median_s"]
                                              / lat["reduced"]["median_s"])
          row["compile_s"] = lat["reduced"]["compile_s"]
          do_decode = trained or ((timed is None or f"{method}:{schedule}" in timed)
                                  and target in dec_targets)
          if do_decode:
            w, toks, secs = wer_of(cfg)
            row["wer"] = w
            row["tokens_per_s"] = toks / secs
            row["decode_speedup_vs_full"] = (toks / secs) / (full_tok / full_secs)
            if base.mtp.num_heads > 1 and method == "fastadasp_dense":
              vw, vt, vs = wer_of(cfg, "verify")
              row["verify_wer"] = vw
              row["combined_speedup_vs_greedy"] = full_secs / vs
          rows.append(row)
          print(json.dumps({k: v for k, v in row.items() if k != "te_losses"}), flush=True)
          # Every row so far is on disk, so a crash loses at most the row in progress.
          _write_json(result, args.out)
          # Free this row's compiled executables: ~100 of them in one process ran XLA:CPU
          # out of JIT code memory ("LLVM ERROR: Unable to allocate section memory").
          jax.clear_caches()
  print_table(result, targets)
  _write_json(result, args.out)


def _write_json(result: dict, path: str) -> None:
  """Writes `result` to `path` atomically (a .tmp file, then a rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
  os.replace(path + ".tmp", path)


def print_table(result: dict, targets) -> None:
  fmt = lambda v, s="{:.3f}": "-" if v is None else s.format(v)
  for set_name, entry in result["sets"].items():
    print(f"\n== {set_name}  (trained={result['trained']}; full-token WER "
          f"{fmt(entry['full']['wer'])}; timing batch P={entry['timing_audio_tokens']})")
    head = f"{'method':<18}{'schedule':<10}" + "".join(f"{int(t * 100):>6}%" for t in targets)
    for col, key, spec in (("WER", "wer", "{:.3f}"), ("FLOPs red.", "flops_reduction", "{:.2f}"),
                           ("decoder prefill speedup", "prefill_speedup", "{:.2f}"),
                           ("encoder+decoder prefill speedup", "end_to_end_prefill_speedup",
                            "{:.2f}"),
                           ("prefill speedup vs zero-merge path", "prefill_speedup_same_path",
                            "{:.2f}"),
                           ("decode speedup", "decode_speedup_vs_full", "{:.2f}"),
                           ("FastAdaSP+verify vs greedy", "combined_speedup_vs_greedy",
                            "{:.2f}")):
      cells = {}
      for r in entry["rows"]:
        cells.setdefault((r["method"], r["schedule"]), {})[r["target"]] = r.get(key)
      if all(v is None for d in cells.values() for v in d.values()):
        continue
      print(f"-- {col}\n{head}")
      for (m, s), d in cells.items():
        if all(v is None for v in d.values()):
          continue
        print(f"{m:<18}{s:<10}" + "".join(f"{fmt(d.get(t), spec):>7}" for t in targets))


if __name__ == "__main__":
  main()
