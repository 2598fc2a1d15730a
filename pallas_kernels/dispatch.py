"""Backend dispatch between the Pallas kernels and their XLA references.

The model passes its ``kernels.enabled`` (``config.kernels``, see
``mtp_jax.config.KernelsConfig``) as ``use_kernel``, with
``interpret=needs_interpreter()``:

* ``None``: the kernel on TPU and GPU (or anywhere with
  ``interpret=True``), the pure-JAX reference elsewhere.
* ``True``: always the kernel.  On a backend without Pallas lowering (CPU)
  this needs ``interpret=True`` and raises otherwise.
* ``False``: always the reference.
"""
from __future__ import annotations

import jax

from pallas_kernels import token_merge
from pallas_kernels import verify

_KERNEL_BACKENDS = ("gpu", "tpu")

VerifyOutput = verify.VerifyOutput
MergeOutput = token_merge.MergeOutput


def needs_interpreter() -> bool:
  """True where the kernels have no lowering (CPU): there they run interpreted."""
  return jax.default_backend() not in _KERNEL_BACKENDS


def kernel_selected(use_kernel: bool | None, interpret: bool = False) -> bool:
  """Whether the Pallas kernel runs for this call.

  Args:
    use_kernel: explicit override; None = auto by ``jax.default_backend()``.
    interpret: the caller asked for the Pallas interpreter.

  Returns:
    True for the kernel, False for the reference.

  Raises:
    ValueError: ``use_kernel=True`` on a backend without Pallas lowering and
      ``interpret=False``.
  """
  backend = jax.default_backend()
  if use_kernel is None:
    return backend in _KERNEL_BACKENDS or interpret
  if use_kernel and backend not in _KERNEL_BACKENDS and not interpret:
    raise ValueError(
        f"use_kernel=True but backend {backend!r} has no Pallas lowering; "
        "pass interpret=True (slow, for tests) or use_kernel=None/False")
  return bool(use_kernel)


def fused_verify(h: jax.Array, w: jax.Array, drafts: jax.Array, *,
                 return_max_prob: bool = False,
                 use_kernel: bool | None = None,
                 interpret: bool = False,
                 precision=None) -> VerifyOutput:
  """Greedy verification of K drafts against the verifier's argmax.

  Args:
    h: [B, K+1, d] final-normed verifier hidden states.
    w: [d, V] unembedding (same dtype as ``h``).
    drafts: [B, K] integer draft tokens.
    return_max_prob: also return the argmax's softmax probability [B, K+1].
    use_kernel: True / False / None (auto: kernel on GPU and TPU).
    interpret: run the kernel in the Pallas interpreter (tests on CPU).
    precision: ``lax.Precision`` of the logits matmul.

  Returns:
    VerifyOutput(argmax [B, K+1], accepted [B], correction [B], max_prob).
  """
  if kernel_selected(use_kernel, interpret):
    return verify.verify_kernel(h, w, drafts, return_max_prob=return_max_prob,
                                interpret=interpret, precision=precision)
  return verify.verify_reference(h, w, drafts, return_max_prob=return_max_prob,
                                 precision=precision)


def merge_tokens(x: jax.Array, keys: jax.Array, weights: jax.Array,
                 valid: jax.Array, n: int, *,
                 positions: jax.Array | None = None,
                 quota: jax.Array | None = None,
                 use_kernel: bool | None = None,
                 interpret: bool = False) -> MergeOutput:
  """FastAdaSP merging of n adjacent token pairs per row.

  Args:
    x: [B, N, d] hidden states of the audio tokens.
    keys: [B, N, dk] attention keys averaged over heads.
    weights: [B, N] non-negative attention received by each token.
    valid: [B, N] bool; padding (False) at the end of each row.
    n: static number of merges, 0 <= n <= N-1.
    positions: optional [B, N] positions to merge alongside.
    quota: optional [B] int valid-valid merges per row (FastAdaSP's tiered
      selection, see ``token_merge``); None: the plain top-n selection.
    use_kernel: True / False / None (auto: kernel on GPU and TPU).
    interpret: run the kernel in the Pallas interpreter (tests on CPU).

  Returns:
    MergeOutput(merged [B, N-n, d], merged_valid, merged_weights,
    group_index [B, N], merged_positions or None).
  """
  if kernel_selected(use_kernel, interpret):
    return token_merge.merge_kernel(x, keys, weights, valid, n, positions,
                                    quota, interpret=interpret)
  return token_merge.merge_reference(x, keys, weights, valid, n, positions,
                                     quota)
