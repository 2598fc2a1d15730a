"""Trains Speech-LLaMA with multi-token prediction heads (entry point of
`mtp_jax.train.loop.train_and_evaluate`).

  python train.py --config configs/small.py:K=4 --workdir runs/small \
      --config.data.train_manifests=../shared/data/kathleen/train.jsonl \
      --config.data.dev_manifest=../shared/data/kathleen/test.jsonl

The workdir receives config.json, the tokenizer (trained from the train manifests
unless config.data.tokenizer.path is set), checkpoints/ (orbax), tb/ (TensorBoard)
and metrics.jsonl. Re-running the same command resumes from the latest complete
checkpoint, with the data iterator where it was. Heads-only training on a frozen
base: `--config.train.mode=heads_only --config.train.init_from=runs/base`.
MWER fine-tuning of a CE model (N-best from the prefix beam search inside the step):
`--config.train.objective=mwer --config.train.init_from=runs/small --config.train.learning_rate=1e-4`.
Multi-host (TPU pod / multi-node GPU): add `--multihost` (or MTP_JAX_MULTIHOST=1).
The run's own lines (progress, warm starts, buckets) are printed once, on stdout; the
libraries' absl log lines (orbax INFO, warnings) go to stderr, and `--verbosity=-1` (warnings)
or `--verbosity=-2` (errors) keeps them out; `--verbosity=-2` also drops the set-up detail
(each bucket, each compiled shape's memory), leaving the progress lines.

An invalid config, a workdir holding another run and unusable data end in one line
("train.py: error: ...") before anything is written; so do a workdir another run is
using (its host and pid named) and a checkpoint that cannot be written (disk full,
read-only directory: the earlier checkpoints are intact).

SIGTERM (preemption) or SIGINT (Ctrl-C): the step in flight finishes, a checkpoint of
it is written, and train.py exits with status 75 (EX_TEMPFAIL, "re-run me"); on
several hosts every process stops at the same step. Sending the signal again stops at
once, without a checkpoint. Re-running the same command resumes as if never stopped.
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from mtp_jax.config import parse_flags_with_config
from mtp_jax.train import loop

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (created; resumed if present).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (pods).")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-GPU).")
flags.DEFINE_integer("num_processes", None, "Processes (with coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process (with coordinator_address).")
FLAGS = flags.FLAGS


def _initialize_multihost() -> None:
  """`jax.distributed.initialize`, explicit when --coordinator_address is given."""
  kwargs = {}
  if FLAGS.coordinator_address:
    kwargs = dict(coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  jax.distributed.initialize(**kwargs)


def main(argv) -> None:
  del argv
  if FLAGS.multihost or os.environ.get("MTP_JAX_MULTIHOST") == "1":
    _initialize_multihost()
  try:
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except loop.Preempted as e:
    print(f"train.py: {e}", file=sys.stderr, flush=True)
    sys.exit(loop.PREEMPTED_EXIT_CODE)
  except loop.USER_ERRORS as e:
    raise SystemExit(f"train.py: error: {e}") from e


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  # A misspelt field in the config file or a --config.* override: one line, no traceback.
  app.run(main, flags_parser=parse_flags_with_config)
