"""Chaos run (bench/chaos.py): train.py on a tiny model killed 20 times at random
(seeded) moments with SIGKILL and SIGTERM, resumed each time, ends bitwise equal to an
uninterrupted run, every step logged once. Several minutes on 2 CPU cores: slow."""
import importlib.util
import pathlib
import signal

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("chaos", ROOT / "bench" / "chaos.py")
chaos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chaos)


@pytest.mark.slow
def test_chaos_run_is_bitwise_equal_to_an_uninterrupted_one(tmp_path):
  res = chaos.run_chaos(tmp_path, kills=20, seed=1, steps=80, checkpoint_every=3,
                        log=lambda m: None)
  lives = res["lives"]
  assert res["kills"] == 20 and res["sigkill"] > 0 and res["sigterm"] > 0
  assert res["kills_survived"] == 20, [l for l in lives if not l["ok"]]
  assert res["all_exits_as_expected"]
  assert res["final_step"] == 80
  assert res["bitwise_equal_state"] and res["bitwise_equal_train_metrics"]
  assert res["each_step_logged_once"]
  # Every SIGTERM during training wrote exactly the step it had reached.
  for l in lives:
    if l["signal"] == "SIGTERM" and l["rc"] == 75 and l["last_step"] is not None:
      assert l["checkpoint_written"] == l["last_step"]
  # A SIGKILL after the lock was taken leaves it behind; the next start takes it over.
  sigkills_in_training = sum(l["signal"] == signal.SIGKILL.name and l["last_step"] is not None
                             for l in lives)
  assert res["stale_locks_taken_over"] >= sigkills_in_training > 0
