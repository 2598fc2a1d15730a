"""The KV cache's layout is what the decoding loop reads in place: no decoding step of any
block strategy, on either decoder family, copies a whole layer of the cache.

Each layer's keys/values are one loop-carried buffer [B * Hkv, S, D]; attention reads
it as it lies and one dynamic-update-slice per row writes it. A transpose of the keys
for the scores, a slice of the audio or text slots, a vmapped (scatter) write or a
restacked [L, ...] cache each made XLA copy whole layers every step: over half of a
long-form decoding step on 2 CPU cores. The test compiles the real decode and reads the
while loop's body in the optimized HLO.
"""
from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax.decode import api
from mtp_jax.model.kv_cache import KVCache, write_slots
from mtp_jax.model.speech_llama import SpeechLLaMA
import tiny_models

WHISPER = tiny_models.merged(tiny_models.WHISPER_DECODER,
                             dict(decoder=dict(max_positions=64, max_text_len=40)))


def _model(family: str):
  over = WHISPER if family == "whisper" else tiny_models.STUB_AUDIO
  model = SpeechLLaMA(tiny_models.tiny_model_config("latent", 3, **over))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4000)),
                      jnp.full((1,), 4000, jnp.int32), jnp.ones((1, 4), jnp.int32))
  return model, nn.unbox(params)


def _loop_bodies(hlo: str) -> list[str]:
  """The computations the optimized module's while loops run as their bodies."""
  comps = re.split(r"\n(?=\S)", hlo)
  names = set(re.findall(r"while\(.*?body=(%[\w.\-]+)", hlo))
  return [c for c in comps if c.split(" ", 1)[0] in names]


@pytest.mark.parametrize("family", ["llama", "whisper"])
@pytest.mark.parametrize("strategy", ["greedy", "verify", "tree"])
@pytest.mark.parametrize("batch", [1, 3])
def test_decoding_steps_copy_no_cache_layer(family, strategy, batch):
  model, params = _model(family)
  audio = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 4000)) * 0.1, jnp.float32)
  alen = jnp.full((batch,), 4000, jnp.int32)
  fn = jax.jit(api.make_decode_fn(model, strategy=strategy, max_new_tokens=24))
  hlo = fn.lower(params, audio, alen).compile().as_text()
  prefill = jax.eval_shape(lambda p: model.apply(
      p, audio, alen, jnp.ones((batch, 1), jnp.int32), 8, method=model.prefill), params)
  c = model.cfg.decoder
  # The cache buffer's [B * Hkv, S, D] shape, whatever S this strategy allocates.
  layer = rf"f32\[{batch * c.num_kv_heads},\d+,{c.head_dim}\]"
  assert prefill[1].k[0].shape[0] == batch * c.num_kv_heads
  bodies = _loop_bodies(hlo)
  assert bodies, "no while loop in the compiled decode"
  for body in bodies:
    copies = re.findall(rf"= {layer}\{{[\d,]+\}} (?:copy|transpose)\(", body)
    assert not copies, f"{strategy} on {family}: the loop copies cache layers: {copies}"


def test_write_slots_writes_each_rows_heads_at_its_own_slot():
  rng = np.random.default_rng(1)
  b, h, s, d, t = 3, 2, 9, 4, 2
  buf = jnp.asarray(rng.normal(size=(b * h, s, d)), jnp.float32)
  new = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32)
  start = jnp.asarray([0, 4, 7])
  got = np.asarray(write_slots(buf, new, start))
  want = np.asarray(buf).copy()
  for r in range(b):
    for j in range(h):
      want[r * h + j, int(start[r]):int(start[r]) + t] = np.asarray(new)[r, :, j]
  np.testing.assert_array_equal(got, want)


def test_row_moves_keep_each_rows_heads_together():
  """gather_rows / repeat_rows move a row's Hkv buffer rows as one."""
  b, h, s, d = 3, 2, 5, 1
  k = tuple(jnp.arange(b * h * s * d, dtype=jnp.float32).reshape(b * h, s, d) + 100 * i
            for i in range(2))
  cache = KVCache(k=k, v=k, prefix_valid=jnp.ones((b, 2), bool),
                  prefix_len=jnp.asarray([2, 1, 0]))
  per_row = lambda a: np.asarray(a).reshape(-1, h, s, d)  # noqa: E731
  g = cache.gather_rows(jnp.asarray([2, 0, 2]))
  np.testing.assert_array_equal(per_row(g.k[1]), per_row(k[1])[[2, 0, 2]])
  np.testing.assert_array_equal(g.prefix_len, [0, 2, 0])
  r = cache.repeat_rows(2)
  np.testing.assert_array_equal(per_row(r.v[0]), np.repeat(per_row(k[0]), 2, axis=0))
