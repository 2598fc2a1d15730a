"""mtp_jax decoding vs Hugging Face `transformers` generate on the same decoder, on CPU.

Both sides run the same LLaMA decoder weights (converted with
`mtp_jax.interop.hf_llama`) on the same audio-prefix embeddings: mtp_jax encodes the
audio itself (its timings include the encoder; the encoder's own time is shown
apart), transformers gets the encoder output plus the BOS embedding as
`inputs_embeds`. Every row generates exactly `--new_tokens` tokens: EOS stopping is
off on the HF side (`eos_token_id=None`) and EOS is made unreachable on both (its
unembedding column is zero, so its logit is 0 while the argmax of the other V-1
random logits is positive), checked on the outputs.

Compared, in one run, at batch 1 and 16:
  * hf_greedy: `generate(do_sample=False)` with its KV cache.
  * hf_prompt_lookup: assisted decoding with `prompt_lookup_num_tokens` (HF supports
    it at batch 1 only).
  * mtp_greedy / mtp_verify: `mtp_jax.decode.api` strategies "greedy" and "verify"
    (blockwise verification with K heads), jitted; compile time reported apart.

Scenarios:
  * random: randomly initialized weights. Heads 2..K are untrained, so verify
    accepts almost no drafts: calls/token is reported as measured.
  * predictable: `make_predictable` of tests/tiny_models.py (same shapes and FLOPs;
    decoder block outputs scaled to 0 and head projections set so head k predicts
    the k-th next token of a fixed permutation chain): the upper bound where every
    draft is accepted (K tokens per call), as trained heads approach.

Run (about 5 minutes on a 2-core CPU):
  python bench/peer_decode.py --config configs/small.py:K=4 --new_tokens 64
Writes bench/results/peer_decode.json.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# make_predictable is test scaffolding (tests/tiny_models.py), not library code: the
# predictable scenario borrows it from the repo's tests/ directory.
sys.path.insert(1, str(ROOT / "tests"))

from mtp_jax.config import ModelConfig, load_config_file  # noqa: E402
from mtp_jax.decode import api  # noqa: E402
from mtp_jax.decode.common import BOS, EOS, PAD  # noqa: E402
from mtp_jax.interop import hf_llama  # noqa: E402
from mtp_jax.model.speech_llama import SpeechLLaMA  # noqa: E402
from tiny_models import make_predictable  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/small.py:K=4", "Model config file[:arg].")
flags.DEFINE_integer("new_tokens", 64, "Tokens generated per row (fixed).")
flags.DEFINE_list("batches", ["1", "16"], "Batch sizes.")
flags.DEFINE_float("audio_seconds", 1.0, "Audio length (all rows equal, no padding).")
flags.DEFINE_integer("reps", 5, "Timed repetitions, round-robin over methods (median).")
flags.DEFINE_integer("torch_threads", 1, "torch intra-op threads (2 threads on the shared "
                     "2-core machine made torch several times slower: OpenMP contention).")
flags.DEFINE_integer("prompt_lookup", 3, "HF prompt_lookup_num_tokens.")
flags.DEFINE_list("scenarios", ["random", "predictable"], "random and/or predictable.")
flags.DEFINE_string("out", "bench/results/peer_decode.json", "JSON output.")


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def interleaved_medians(fns: dict, reps: int) -> dict:
  """Median seconds per callable, timed round-robin so machine load hits all alike."""
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      times[name].append(_timed(fn))
  return {name: statistics.median(t) for name, t in times.items()}


def build_params(model: SpeechLLaMA, scenario: str, audio, alen, seed: int = 0):
  """Unboxed params for a scenario, with EOS unreachable for head 1 (and the drafts)."""
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), audio[:1], alen[:1],
                               jnp.ones((1, 4), jnp.int32)))
  cfg = model.cfg
  v = cfg.decoder.vocab_size
  if scenario == "predictable":
    rng = np.random.default_rng(seed)
    others = rng.permutation(np.setdiff1d(np.arange(v), [PAD, EOS]))
    perm = np.arange(v)                       # PAD and EOS map to themselves
    perm[others] = np.roll(others, -1)        # one cycle through all other tokens
    params = make_predictable(model, params, perm)
  p = jax.tree.map(np.array, params)
  pp = p["params"]
  pp["unembed"]["proj"]["kernel"][:, EOS] = 0.0
  for k in range(2, cfg.mtp.num_heads + 1):
    if f"out{k}" in pp.get("mtp", {}):
      pp["mtp"][f"out{k}"]["kernel"][:, EOS] = 0.0
  return jax.tree.map(jnp.asarray, p)


def prepare_mtp(model, params, audio, alen, strategy: str, n: int):
  """Compiles one mtp_jax strategy; returns (timed callable, info)."""
  fn = jax.jit(api.make_decode_fn(model, strategy=strategy, max_new_tokens=n))
  t0 = time.perf_counter()
  compiled = fn.lower(params, audio, alen).compile()
  compile_s = time.perf_counter() - t0
  res = jax.block_until_ready(compiled(params, audio, alen))
  lengths = np.asarray(res["lengths"])
  assert (lengths == n).all(), f"{strategy}: lengths {lengths} != {n} (EOS reached?)"
  info = {"compile_s": compile_s, "calls_per_token": float(res["total_calls"]) / n,
          "tokens": np.asarray(res["tokens"])}
  return (lambda: jax.block_until_ready(compiled(params, audio, alen))), info


def prepare_hf(hf, torch, embeds, n: int, prompt_lookup: int = 0):
  """One HF generate configuration on fixed inputs_embeds; returns (timed callable, info)."""
  import transformers  # pylint: disable=g-import-not-at-top
  b, p1, _ = embeds.shape
  ids = torch.full((b, p1), PAD, dtype=torch.long)  # stand-in ids for the audio prefix
  ids[:, -1] = BOS
  kw = dict(max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=PAD)
  if prompt_lookup:
    kw["prompt_lookup_num_tokens"] = prompt_lookup
  gc = transformers.GenerationConfig(**kw)
  x = torch.from_numpy(np.ascontiguousarray(embeds))
  mask = torch.ones((b, p1), dtype=torch.long)

  def gen():
    with torch.inference_mode():
      return hf.generate(input_ids=ids, inputs_embeds=x, attention_mask=mask,
                         generation_config=gc)
  t0 = time.perf_counter()
  out = gen()
  first_s = time.perf_counter() - t0
  tokens = out[:, p1:].numpy()
  assert tokens.shape == (b, n), f"HF generated {tokens.shape}, expected {(b, n)}"
  return gen, {"first_call_s": first_s, "tokens": tokens}


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(FLAGS.torch_threads)
  config = load_config_file(FLAGS.config)
  cfg = ModelConfig.from_config(config.model)
  # make_predictable needs an untied head-1 projection; use it for both scenarios.
  cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, tie_embeddings=False))
  model = SpeechLLaMA(cfg)
  n, k = FLAGS.new_tokens, cfg.mtp.num_heads
  load_start = os.getloadavg()  # the machine is shared: contention shows here
  samples = int(FLAGS.audio_seconds * cfg.frontend.sample_rate)
  rows, results = [], []
  for scenario in FLAGS.scenarios:
    rng = np.random.default_rng(0)
    bmax = max(int(b) for b in FLAGS.batches)
    audio_all = jnp.asarray(rng.normal(size=(bmax, samples)).astype(np.float32) * 0.1)
    alen_all = jnp.full((bmax,), samples, jnp.int32)
    params = build_params(model, scenario, audio_all, alen_all)
    with tempfile.TemporaryDirectory() as tmp:
      hf_llama.save_hf_checkpoint(params, cfg.decoder, tmp)
      hf = transformers.LlamaForCausalLM.from_pretrained(tmp).eval()
    encode = jax.jit(lambda p, a, l: model.apply(p, a, l, method=model.encode))
    embed_bos = model.apply(params, jnp.full((1, 1), BOS, jnp.int32),
                            method=lambda m, t: m.embed(t))
    for b in (int(x) for x in FLAGS.batches):
      audio, alen = audio_all[:b], alen_all[:b]
      emb, valid, _ = jax.block_until_ready(encode(params, audio, alen))
      assert bool(valid.all()), "equal-length audio has no padded prefix slots"
      embeds = np.concatenate([np.asarray(emb), np.broadcast_to(embed_bos, (b, 1, emb.shape[-1]))],
                              axis=1)
      assert float(np.abs(embeds).mean()) > 1e-3
      fns, r = {}, {}
      fns["hf_greedy"], r["hf_greedy"] = prepare_hf(hf, torch, embeds, n)
      if b == 1:  # HF assisted decoding supports batch 1 only
        fns["hf_prompt_lookup"], r["hf_prompt_lookup"] = prepare_hf(hf, torch, embeds, n,
                                                                    FLAGS.prompt_lookup)
      for strategy in ("greedy", "verify"):
        fns[f"mtp_{strategy}"], r[f"mtp_{strategy}"] = prepare_mtp(model, params, audio, alen,
                                                                   strategy, n)
      fns["encoder"] = lambda: jax.block_until_ready(encode(params, audio, alen))
      secs = interleaved_medians(fns, FLAGS.reps)
      enc_s = secs.pop("encoder")
      for name, t in secs.items():
        r[name].update(seconds=t, tokens_per_s=b * n / t)
        if name.startswith("mtp_"):  # without the encoder, which HF does not run
          r[name]["decoder_only_tokens_per_s"] = b * n / max(t - enc_s, 1e-9)
      ref = r["hf_greedy"]["tokens"]
      for name, x in r.items():
        x["match_hf_greedy"] = float((x.pop("tokens") == ref).mean())
      base = r["hf_greedy"]["tokens_per_s"]
      best_hf = max(base, r.get("hf_prompt_lookup", {}).get("tokens_per_s", 0.0))
      entry = {"scenario": scenario, "batch": b, "prefix_tokens": int(emb.shape[1]),
               "encoder_s": enc_s, "methods": r,
               "mtp_greedy_vs_hf_greedy": r["mtp_greedy"]["tokens_per_s"] / base,
               "mtp_verify_vs_best_hf": r["mtp_verify"]["tokens_per_s"] / best_hf}
      results.append(entry)
      for name, x in r.items():
        rows.append((scenario, b, name, x["tokens_per_s"], x.get("decoder_only_tokens_per_s"),
                     x.get("calls_per_token"),
                     x.get("compile_s", x.get("first_call_s")), x["match_hf_greedy"]))
      print(f"[{scenario} B={b}] done", flush=True)

  print(f"\nnew_tokens={n}, K={k}, decoder d={cfg.decoder.d_model} L={cfg.decoder.num_layers} "
        f"V={cfg.decoder.vocab_size}; torch threads={FLAGS.torch_threads}; mtp_jax times "
        f"include the encoder; load average {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}")
  print(f"{'scenario':12s} {'B':>3s} {'method':18s} {'tok/s':>9s} {'dec-only':>9s} {'calls/tok':>9s} "
        f"{'compile/1st s':>13s} {'=hf_greedy':>10s}")
  for s, b, name, tps, dec, cpt, c, m in rows:
    cpt = "-" if cpt is None else f"{cpt:.3f}"
    dec = "-" if dec is None else f"{dec:.1f}"
    print(f"{s:12s} {b:3d} {name:18s} {tps:9.1f} {dec:>9s} {cpt:>9s} {c:13.2f} {m:10.3f}")
  for e in results:
    print(f"{e['scenario']:12s} B={e['batch']:<3d} mtp_greedy/hf_greedy = "
          f"{e['mtp_greedy_vs_hf_greedy']:.2f}x   mtp_verify/best_hf = "
          f"{e['mtp_verify_vs_best_hf']:.2f}x   (encoder {1e3 * e['encoder_s']:.1f} ms)")
  info = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
          "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
          "jax": jax.__version__, "torch": torch.__version__,
          "transformers": transformers.__version__,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
          "config": FLAGS.config, "new_tokens": n, "num_heads": k,
          "torch_threads": FLAGS.torch_threads, "reps": FLAGS.reps,
          "audio_seconds": FLAGS.audio_seconds, "prompt_lookup_num_tokens": FLAGS.prompt_lookup}
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"machine": info, "results": results}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
