"""mtp_jax: fast LLM-based speech recognition in JAX/Flax.

Importing the package loads the model family registries (encoders, decoders), which
register their config checks with `mtp_jax.config` (the bottom of the import graph:
it imports nothing of the project).
"""
from mtp_jax.model import decoders as _decoders  # noqa: F401  (registers its checks)
from mtp_jax.model import encoders as _encoders  # noqa: F401  (registers its checks)
