"""Pallas kernels: fused draft verification and FastAdaSP token merging.

Callers normally use ``pallas_kernels.dispatch.fused_verify`` and
``pallas_kernels.dispatch.merge_tokens`` (kernel on GPU/TPU, XLA reference
elsewhere, ``use_kernel`` override).  Each kernel's module also holds its one
pure-JAX reference (``verify.verify_reference`` / ``verify.acceptance``,
``token_merge.merge_reference`` and its building blocks), which ``mtp_jax``
runs when the kernels are off; this package imports nothing from ``mtp_jax``.
"""
