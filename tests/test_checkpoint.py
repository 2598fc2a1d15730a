"""mtp_jax.checkpoint on a small hand-made state (no model): round trip, keep-N,
partial writes, params-only loads."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax import sharding as sharding_lib
from mtp_jax.train.state import TrainState


def _state(step, scale=1.0):
  params = {"params": {"w": jnp.full((8, 4), scale), "b": jnp.arange(4.0) * scale}}
  tx = optax.adam(1e-3)
  return TrainState(step=jnp.int32(step), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(step), nonfinite_total=jnp.int32(1),
                    nonfinite_run=jnp.int32(0))


def _shardings(state):
  mesh = sharding_lib.make_mesh({"data": -1}, jax.devices())
  rep = sharding_lib.replicated(mesh)
  return jax.tree.map(lambda _: rep, state)


def test_round_trip_keep_n_and_partial_write(tmp_path):
  ck = ckpt_lib.Checkpointer(tmp_path, keep=2, async_save=True)
  for s in (1, 2, 3):
    ck.save(_state(s, scale=float(s)), {"grain": {"next_index": s}, "fingerprint": "x"})
  ck.wait()
  assert ck.all_steps() == [2, 3]
  # A killed write: orbax's temporary directory is never taken for a step.
  (tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-99" / "params").mkdir(parents=True)
  ck.close()
  ck = ckpt_lib.Checkpointer(tmp_path, keep=2)
  assert ck.latest_step() == 3
  abstract = jax.eval_shape(lambda: _state(0))
  state, data = ck.restore(abstract, _shardings(abstract))
  ck.close()
  assert int(state.step) == 3 and int(state.nonfinite_total) == 1
  assert data == {"grain": {"next_index": 3}, "fingerprint": "x"}
  np.testing.assert_array_equal(state.params["params"]["w"], np.full((8, 4), 3.0))
  np.testing.assert_array_equal(state.rng, jax.random.PRNGKey(3))
  p2 = ckpt_lib.load_params(tmp_path, step=2)  # params only, stored structure
  np.testing.assert_array_equal(p2["params"]["b"], np.arange(4.0) * 2)
