"""Train state, its shardings, and sharded initialization."""
from __future__ import annotations

import re
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtp_jax import sharding as sharding_lib
from mtp_jax.train import lora as lora_lib


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes (all device arrays).

  Attributes:
    step: int32 [] batches consumed (skipped non-finite steps included).
    params: unboxed parameter tree.
    opt_state: optax state.
    rng: uint32 [2] base key; step s uses fold_in(rng, s).
    nonfinite_total: int32 [] skipped (non-finite) steps so far.
    nonfinite_run: int32 [] consecutive skipped steps up to now.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  nonfinite_total: jax.Array
  nonfinite_run: jax.Array


def dummy_inputs(cfg, batch: int = 1, seconds: float = 1.0, text_len: int = 8):
  """Small zero inputs for init/eval_shape (shapes only matter for the text length)."""
  s = int(cfg.frontend.sample_rate * seconds)
  return (jnp.zeros((batch, s), jnp.float32), jnp.full((batch,), s, jnp.int32),
          jnp.zeros((batch, text_len), jnp.int32))


def _adapters(model: nn.Module, lora):
  """The LoRA targets of `model` ({} when `lora` is None or off)."""
  if lora is None or not lora.enabled:
    return {}
  return lora_lib.targets(model, dummy_inputs(model.cfg), lora)


def _init_params(model: nn.Module, key, lora=None, found=None, boxed: bool = True):
  p = model.init(jax.random.fold_in(key, 0), *dummy_inputs(model.cfg))
  if not boxed:
    p = nn.unbox(p)
  if found:
    p = lora_lib.add_adapters(p, found, lora, jax.random.fold_in(key, 2), boxed=boxed)
  return p


def abstract_params(model: nn.Module, mesh=None, rules=None, lora=None):
  """Boxed abstract params (for shardings) from `jax.eval_shape(model.init)`, with
  LoRA adapters (replicated) when `lora` (a `train.lora.LoRAConfig`) is on.

  Init is traced OUTSIDE `sharding.activate`: flax's DenseGeneral reshapes a boxed
  multi-dim kernel and re-applies its logical constraint to the flat kernel, which
  fails under active rules. The parameters still land sharded: `create_train_state`
  jits the init with `out_shardings`. (mesh, rules unused; kept for symmetry.)
  """
  del mesh, rules
  found = _adapters(model, lora)
  return jax.eval_shape(lambda k: _init_params(model, k, lora, found), jax.random.PRNGKey(0))


def state_shardings(abstract_state: TrainState, boxed_params, tx, mesh, rules) -> TrainState:
  """NamedShardings of a TrainState: params by the rules, optimizer state like its
  params, everything else replicated.

  An optimizer-state leaf is sharded like the parameter whose key path is a suffix
  of its own (optax keeps param-structured subtrees such as `mu`/`nu`; frozen leaves
  of `multi_transform` are `MaskedNode`s and have no leaves) and whose shape it has.
  """
  del tx
  rep = sharding_lib.replicated(mesh)
  param_sh = sharding_lib.param_shardings(boxed_params, mesh, rules)
  by_path = {tuple(map(str, p)): (sh, tuple(x.shape)) for (p, sh), x in zip(
      jax.tree_util.tree_flatten_with_path(param_sh)[0],
      jax.tree.leaves(abstract_state.params))}

  def like_param(path, leaf):
    keys = tuple(map(str, path))
    for i in range(len(keys)):
      hit = by_path.get(keys[i:])
      if hit is not None and hit[1] == tuple(leaf.shape):
        return hit[0]
    return rep

  opt_sh = jax.tree_util.tree_map_with_path(like_param, abstract_state.opt_state)
  return TrainState(step=rep, params=param_sh, opt_state=opt_sh, rng=rep,
                    nonfinite_total=rep, nonfinite_run=rep)


def _init_fn(model: nn.Module, tx: optax.GradientTransformation, lora=None):
  found = _adapters(model, lora)

  def init(key, given):
    if given is None:
      p = _init_params(model, key, lora, found, boxed=False)
    else:
      p = given
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                      rng=jax.random.fold_in(key, 1),
                      nonfinite_total=jnp.zeros((), jnp.int32),
                      nonfinite_run=jnp.zeros((), jnp.int32))
  return init


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, mesh, rules,
                         lora=None):
  """(abstract TrainState of ShapeDtypeStructs, TrainState of NamedShardings), no FLOPs."""
  boxed = abstract_params(model, mesh, rules, lora)
  abstract = jax.eval_shape(_init_fn(model, tx, lora), jax.random.PRNGKey(0), None)
  return abstract, state_shardings(abstract, boxed, tx, mesh, rules)


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `abstract` carrying the matching `shardings` (for `.lower`)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract, shardings)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, mesh, rules,
                       seed: int, params: Any | None = None, lora=None):
  """Initializes the state directly into its shardings (`jit(init, out_shardings=...)`).

  Args:
    model: the SpeechLLaMA (train or eval mode; only init is used).
    tx: the optimizer.
    mesh, rules: see `mtp_jax.sharding`.
    seed: init key seed (params from fold_in(key, 0), step rng from fold_in(key, 1)).
    params: optional unboxed params to start from (host or device arrays), e.g.
      merged `--init_from` params; then only the optimizer state is initialized.
    lora: `train.lora.LoRAConfig` (adapters are part of the params), or None.
  Returns:
    (state, shardings) with shardings a TrainState of NamedShardings.
  """
  _, shardings = abstract_train_state(model, tx, mesh, rules, lora)
  key = jax.random.PRNGKey(seed)
  if params is not None:
    params = jax.device_put(params, shardings.params)
  state = jax.jit(_init_fn(model, tx, lora), out_shardings=shardings)(key, params)
  return state, shardings


def merge_params(fresh: Any, loaded: Any, exclude: str = "",
                 include: str = "") -> tuple[Any, list[str], list[str]]:
  """Copies every leaf of `loaded` into `fresh` by path (e.g. K=1 base into a K=4 model).

  Args:
    fresh: freshly initialized params of the model being trained.
    loaded: params read from a checkpoint.
    exclude: optional regex; loaded leaves whose path (`jax.tree_util.keystr`, e.g.
      "['params']['mtp']['out2']['kernel']") it matches (`re.search`) are dropped, so
      `fresh` keeps its own init there, e.g. "'mtp'" to put new heads of another type
      on a trained trunk.
    include: optional regex; only the loaded leaves whose path it matches are used (e.g.
      one part of another run: `train.init_parts`).
  Returns:
    (merged, copied paths, fresh-only paths). Leaves only in `loaded` (and not
    excluded) or with a different shape raise ValueError naming the path.
  """
  flat_loaded = {jax.tree_util.keystr(p): v
                 for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
  if exclude:
    pattern = re.compile(exclude)
    flat_loaded = {k: v for k, v in flat_loaded.items() if not pattern.search(k)}
  if include:
    pattern = re.compile(include)
    flat_loaded = {k: v for k, v in flat_loaded.items() if pattern.search(k)}
  copied, new = [], []

  def pick(path, v):
    key = jax.tree_util.keystr(path)
    if key in flat_loaded:
      src = flat_loaded.pop(key)
      if tuple(src.shape) != tuple(v.shape):
        raise ValueError(f"init_from: parameter {key} has shape {tuple(src.shape)} in the "
                         f"checkpoint but {tuple(v.shape)} in this model")
      copied.append(key)
      return np.asarray(src).astype(v.dtype)
    new.append(key)
    return v

  merged = jax.tree_util.tree_map_with_path(pick, fresh)
  if flat_loaded:
    raise ValueError(f"init_from: checkpoint parameters not in this model: "
                     f"{sorted(flat_loaded)[:5]}{' ...' if len(flat_loaded) > 5 else ''}")
  return merged, copied, new


UNREACHABLE_CTC_BIAS = -1e4  # far below any logit a tied CTC head reaches


def mask_ctc_bias(params: Any, units: Any) -> Any:
  """`params` with the tied CTC head's bias (`ctc_bias`, [V]) set to
  `UNREACHABLE_CTC_BIAS` outside `units` ([U] ids): the head never emits an id its
  tokenizer cannot produce, and a loss normalized over `units` alone is the full one."""
  def fix(path, v):
    if jax.tree_util.keystr(path).endswith("['ctc_bias']"):
      keep = np.zeros(v.shape, bool)
      keep[np.asarray(units)] = True
      return jnp.where(keep, v, jnp.asarray(UNREACHABLE_CTC_BIAS, v.dtype))
    return v
  return jax.tree_util.tree_map_with_path(fix, params)
