"""Does the decoder read the audio? Teacher-forced cross-entropy of the transcripts with
each utterance's own audio, with another utterance's audio, and with silence.

A model that reads speech scores far lower with its own audio than with a neighbour's;
a decoder that has learnt only a language model scores them the same. It needs no
decoding, so it answers in seconds what a WER run answers in minutes, early in a run.

  python bench/audio_reliance.py --workdir runs/sl/k4 \\
      --manifest ../shared/data/kathleen/train.jsonl --num 32

Writes bench/results/audio_reliance.json (or --out): {"machine", "date", "command",
"workdir", "step", "manifest", "rows": [{"audio": "own" | "another utterance's" |
"silence", "ce_nats", "tokens"}], "gap_nats": CE(another's) - CE(own)}.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mtp_jax.machine import machine_info, write_result  # noqa: E402

CONDITIONS = ("own", "another utterance's", "silence")


def _batch_ce(model, params, batch, audio, audio_len):
  """Summed head-1 NLL and token count of `batch`'s transcripts given `audio`."""
  import jax
  import jax.numpy as jnp
  from mtp_jax.train import loss as loss_lib
  text_in, targets, mask, _ = loss_lib.make_targets(
      jnp.asarray(batch["text"]), jnp.asarray(batch["text_len"]),
      jnp.asarray(batch["audio_len"]), 1)
  out = model.apply(params, audio, audio_len, text_in)
  logp = jax.nn.log_softmax(out["logits"][:, :, 0], -1)
  nll = -jnp.take_along_axis(logp, targets[:, :, 0, None], -1)[..., 0]
  m = mask[:, :, 0].astype(jnp.float32)
  return float((nll * m).sum()), float(m.sum())


def measure(workdir: str, manifest: str, num: int, batch_size: int) -> dict:
  """CE per token under each audio condition on the first `num` utterances."""
  import jax.numpy as jnp
  from mtp_jax import checkpoint as ckpt_lib
  from mtp_jax.config import ModelConfig
  from mtp_jax.data.manifest import write_subset
  from mtp_jax.data.pipeline import make_eval_batches
  from mtp_jax.model.speech_llama import SpeechLLaMA
  config, params, tokenizer = ckpt_lib.restore_for_inference(workdir, decode_layout=False)
  model = SpeechLLaMA(ModelConfig.from_config(config.model))
  with tempfile.TemporaryDirectory() as tmp:
    sub = write_subset(manifest, str(pathlib.Path(tmp) / "subset.jsonl"), num)
    batches = list(make_eval_batches(sub, tokenizer, config.data, batch_size=batch_size))
  sums = {c: [0.0, 0.0] for c in CONDITIONS}
  for batch in batches:
    alen = np.asarray(batch["audio_len"])
    rows = np.flatnonzero(alen > 0)
    if len(rows) < 2:
      continue
    audio = np.asarray(batch["audio"])
    # Another utterance's audio: the rows rolled by one among the real rows.
    other = np.arange(len(alen))
    other[rows] = np.roll(rows, 1)
    variants = {"own": (audio, alen),
                "another utterance's": (audio[other], alen[other]),
                "silence": (np.zeros_like(audio), alen)}
    for cond, (a, n) in variants.items():
      s, t = _batch_ce(model, params, batch, jnp.asarray(a), jnp.asarray(n))
      sums[cond][0] += s
      sums[cond][1] += t
  rows_out = [{"audio": c, "ce_nats": sums[c][0] / max(sums[c][1], 1.0),
               "tokens": int(sums[c][1])} for c in CONDITIONS]
  step = ckpt_lib.newest_step_dir(workdir)
  return {"workdir": workdir, "step": step, "manifest": manifest, "num_utterances": num,
          "rows": rows_out, "gap_nats": rows_out[1]["ce_nats"] - rows_out[0]["ce_nats"]}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--manifest", default=str(ROOT.parent / "shared/data/kathleen/train.jsonl"))
  p.add_argument("--num", type=int, default=32, help="first N utterances of the manifest")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--out", default="bench/results/audio_reliance.json")
  a = p.parse_args(argv)
  res = measure(a.workdir, a.manifest, a.num, a.batch_size)
  print(f"{'audio':<22} {'CE (nats/token)':>16} {'tokens':>7}")
  for r in res["rows"]:
    print(f"{r['audio']:<22} {r['ce_nats']:>16.3f} {r['tokens']:>7d}")
  print(f"gap (another's - own): {res['gap_nats']:.3f} nats/token")
  write_result(a.out, dict(machine=machine_info(), command=" ".join(sys.argv), **res))


if __name__ == "__main__":
  main()
