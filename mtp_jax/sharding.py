"""The one place for sharding: logical-axis rules, the device mesh, and helpers.

Every parameter of the model is annotated with logical axis names
(`nn.with_logical_partitioning`) and activations are constrained with logical
names (`nn.with_logical_constraint`). This module's rules table maps those names
to the mesh axes `data`, `fsdp` and `tensor`; a config can replace the table
(`config.sharding_rules`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axes). First match wins; unlisted names are replicated.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # Activations.
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_vocab", "tensor"),
    ("activation_mtp", None),
    # Parameters.
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("mtp", None),
    ("norm", None),
    ("conv_kernel", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("mel", None),
)


def rules_from_config(rules: Sequence[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
  """Normalizes a rules list from a ConfigDict (lists -> tuples)."""
  if rules is None:
    return DEFAULT_RULES
  out = []
  for i, rule in enumerate(rules):
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"sharding_rules[{i}]={rule!r}: expected [logical_name, mesh_axes]")
    axes = rule[1]
    if isinstance(axes, (list, tuple)):
      axes = tuple(axes)
      bad = [a for a in axes if a not in MESH_AXES]
    else:
      bad = [] if axes is None or axes in MESH_AXES else [axes]
    if bad:
      raise ValueError(f"sharding_rules[{i}]: unknown mesh axis {bad}; mesh axes are {MESH_AXES}")
    out.append((rule[0], axes))
  return tuple(out)


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int | None = None) -> tuple[int, ...]:
  """Resolves `{data, fsdp, tensor}` sizes; one entry may be -1 (fills the rest)."""
  num_devices = jax.device_count() if num_devices is None else num_devices
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  fills = [i for i, s in enumerate(sizes) if s == -1]
  if len(fills) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if fills:
    if num_devices % known:
      raise ValueError(f"mesh: {num_devices} devices not divisible by fixed axes product {known}")
    sizes[fills[0]] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"mesh: {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"have {num_devices}")
  return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A (data, fsdp, tensor) mesh over all (or the given) devices."""
  devices = list(jax.devices()) if devices is None else list(devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, rules) -> Iterator[None]:
  """Sets the mesh and the logical rules for tracing (model constraints use both)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_to_sharding(tree: Any, mesh: jax.sharding.Mesh, rules) -> Any:
  """Maps a pytree of logical PartitionSpecs to NamedShardings."""
  return nn.logical_to_mesh_sharding(tree, mesh, rules)


def param_shardings(abstract_boxed_params: Any, mesh: jax.sharding.Mesh, rules) -> Any:
  """NamedShardings for a (boxed, abstract) param tree from `jax.eval_shape(init)`."""
  specs = nn.get_partition_spec(abstract_boxed_params)
  return logical_to_sharding(specs, mesh, rules)


def batch_sharding(mesh: jax.sharding.Mesh, rules, ndim: int) -> NamedSharding:
  """Sharding of a batch array: first dim over the batch axes, rest replicated."""
  spec = nn.logical_to_mesh_axes(("activation_batch",) + (None,) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
