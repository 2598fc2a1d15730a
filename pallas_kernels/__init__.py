"""Pallas kernels: fused draft verification and FastAdaSP token merging.

Callers normally use ``pallas_kernels.dispatch.fused_verify`` and
``pallas_kernels.dispatch.merge_tokens`` (kernel on GPU/TPU, XLA reference
elsewhere, ``use_kernel`` override).
"""
