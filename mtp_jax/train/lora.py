"""LoRA: low-rank adapters on frozen dense kernels (`config.train.lora`).

For every dense layer (`nn.DenseGeneral`) whose kernel path (as `train.frozen` matches
it, e.g. "params/decoder/layer3/attn/q/kernel") matches `train.lora.targets`, two
leaves are added beside the kernel W [in..., out...]:

  lora_a [prod(in), r]   normal(0, 1/sqrt(prod(in)))
  lora_b [r, prod(out)]  zeros (so a fresh adapter changes nothing)

Training computes y = x W + (alpha / r) * dropout(x) A B (an `nn.intercept_methods`
interceptor around the matched layers' calls: the model code knows nothing of LoRA).
The adapters train whatever `train.frozen` says of their kernels (unless
`train.lora.frozen`); W stays as it is, frozen or not. They live in the train state, so the optimizer keeps state for them alone when W
is frozen, and checkpoints save and resume them.

For decoding `merge` folds them into W (W + (alpha / r) A B, reshaped) and drops them,
so a decoder call costs exactly what it cost without adapters.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mtp_jax.config import ConfigError, build, require_at_least, require_fraction

A, B = "lora_a", "lora_b"
# The interceptor's rng stream for adapter dropout (a train step passes "dropout").
RNG = "dropout"


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  """`config.train.lora`: rank 0 = no adapters."""
  rank: int = 0
  alpha: float = 16.0
  dropout: float = 0.0
  # Regex over kernel paths ("params/decoder/layer3/attn/q/kernel").
  targets: str = r"^params/decoder/.*/attn/(q|v)/kernel$"
  # Keep the adapters as they are (e.g. training heads on an adapted trunk); by default
  # they train whatever train.frozen says of their kernels.
  frozen: bool = False

  @property
  def scale(self) -> float:
    return self.alpha / self.rank if self.rank else 0.0

  @property
  def enabled(self) -> bool:
    return self.rank > 0

  @classmethod
  def from_config(cls, cfg, prefix: str = "train.lora") -> "LoRAConfig":
    out = build(cls, cfg if cfg is not None else {}, prefix)
    require_at_least(f"{prefix}.rank", out.rank, 0)
    require_fraction(f"{prefix}.dropout", out.dropout)
    if out.alpha <= 0:
      raise ConfigError(f"{prefix}.alpha={out.alpha}: must be > 0")
    try:
      re.compile(out.targets)
    except re.error as err:
      raise ConfigError(f"{prefix}.targets={out.targets!r}: invalid regex: {err}") from err
    return out


def lora_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dataclasses.asdict(LoRAConfig()))


def of(train_cfg) -> LoRAConfig:
  """The LoRAConfig of a `config.train` (absent in configs saved before LoRA: off)."""
  section = train_cfg.get("lora", None) if train_cfg is not None else None
  return LoRAConfig.from_config(section)


def _kernel_path(module: nn.Module) -> str:
  return "/".join(("params",) + tuple(str(p) for p in module.path) + ("kernel",))


def _in_dims(module: nn.DenseGeneral) -> int:
  axis = module.axis
  return len(axis) if isinstance(axis, (tuple, list)) else 1


def targets(model: nn.Module, init_args: tuple, cfg: LoRAConfig) -> dict[str, tuple]:
  """{kernel path: (in_dims, kernel shape)} of the dense layers `cfg.targets` matches,
  found by tracing `model.init(*init_args)` abstractly (no FLOPs).

  Raises ConfigError when the regex matches no dense kernel.
  """
  pattern = re.compile(cfg.targets)
  found: dict[str, tuple] = {}

  def record(next_fun, args, kwargs, context):
    m = context.module
    if isinstance(m, nn.DenseGeneral) and context.method_name == "__call__":
      name = _kernel_path(m)
      if pattern.search(name):
        x = args[0]
        n_in = _in_dims(m)
        feats = m.features if isinstance(m.features, (tuple, list)) else (m.features,)
        found[name] = (n_in, tuple(x.shape[-n_in:]) + tuple(feats))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda k: model.init(k, *init_args), jax.random.PRNGKey(0))
  if not found:
    raise ConfigError(f"train.lora.targets={cfg.targets!r}: matches no dense kernel of the "
                      "model (paths look like params/decoder/layer0/attn/q/kernel)")
  return found


def _split(path: str) -> list[str]:
  parts = path.split("/")
  return parts[:-1]  # drop "kernel": the dense module's dict


def _get(tree: Mapping, keys: list[str]) -> Mapping:
  for k in keys:
    tree = tree[k]
  return tree


def _set(tree: Mapping, keys: list[str], leaves: Mapping[str, Any]) -> dict:
  """A copy of `tree` whose dict at `keys` also holds `leaves`."""
  if not keys:
    return {**tree, **leaves}
  return {**tree, keys[0]: _set(tree[keys[0]], keys[1:], leaves)}


def add_adapters(params: Mapping, found: Mapping[str, tuple], cfg: LoRAConfig,
                 key: jax.Array, boxed: bool = False) -> dict:
  """`params` (model variables, unboxed or boxed) with lora_a / lora_b beside every
  target kernel. A random, B zeros; `boxed` wraps them in `nn.LogicallyPartitioned`
  (replicated) for the sharding machinery."""
  out = dict(params)
  for i, (path, (n_in, shape)) in enumerate(sorted(found.items())):
    d_in, d_out = math.prod(shape[:n_in]), math.prod(shape[n_in:])
    kernel = _get(out, path.split("/"))
    raw = kernel.unbox() if isinstance(kernel, nn.meta.AxisMetadata) else kernel
    dtype = raw.dtype
    a = (jax.random.normal(jax.random.fold_in(key, i), (d_in, cfg.rank), jnp.float32)
         / math.sqrt(d_in)).astype(dtype)
    b = jnp.zeros((cfg.rank, d_out), dtype)
    if boxed:
      a, b = nn.LogicallyPartitioned(a, (None, None)), nn.LogicallyPartitioned(b, (None, None))
    out = _set(out, _split(path), {A: a, B: b})
  return out


def has_adapters(params: Any) -> bool:
  found = []

  def visit(path, _):
    if path and getattr(path[-1], "key", None) in (A, B):
      found.append(True)
  jax.tree_util.tree_map_with_path(visit, params)
  return bool(found)


def merge(params: Mapping, cfg: LoRAConfig) -> dict:
  """W + scale * A B (reshaped to W) for every adapter, adapters dropped: the variables
  a model without LoRA runs (decoding, evaluation). A tree without adapters is
  returned as it is."""
  def walk(node):
    if not isinstance(node, Mapping):
      return node
    if A in node and B in node and "kernel" in node:
      w = node["kernel"]
      delta = (node[A].astype(jnp.float32) @ node[B].astype(jnp.float32)) * cfg.scale
      merged = (w.astype(jnp.float32) + delta.reshape(w.shape)).astype(w.dtype)
      return {**{k: v for k, v in node.items() if k not in (A, B)}, "kernel": merged}
    return {k: walk(v) for k, v in node.items()}
  return walk(params)


def interceptor(cfg: LoRAConfig, deterministic: bool):
  """An `nn.intercept_methods` interceptor adding the adapters' term to every dense
  layer that has lora_a / lora_b beside its kernel (training's unmerged forward)."""
  def add(next_fun, args, kwargs, context):
    m = context.module
    y = next_fun(*args, **kwargs)
    if not (isinstance(m, nn.DenseGeneral) and context.method_name == "__call__"
            and m.has_variable("params", A)):
      return y
    a, b = m.get_variable("params", A), m.get_variable("params", B)
    x = args[0]
    n_in = _in_dims(m)
    xf = x.reshape(*x.shape[:x.ndim - n_in], -1).astype(y.dtype)
    if cfg.dropout > 0 and not deterministic:
      keep = jax.random.bernoulli(m.make_rng(RNG), 1.0 - cfg.dropout, xf.shape)
      xf = jnp.where(keep, xf / (1.0 - cfg.dropout), 0.0).astype(xf.dtype)
    delta = (xf @ a.astype(y.dtype)) @ b.astype(y.dtype) * cfg.scale
    return y + delta.reshape(y.shape)
  return add


def apply(model: nn.Module, cfg: LoRAConfig, variables, *args, deterministic: bool = True,
          **kwargs):
  """`model.apply(variables, *args, **kwargs)` with the adapters in `variables` active
  (unmerged); without adapters (or rank 0) plain `model.apply`."""
  if not cfg.enabled:
    return model.apply(variables, *args, **kwargs)
  with nn.intercept_methods(interceptor(cfg, deterministic)):
    return model.apply(variables, *args, **kwargs)
