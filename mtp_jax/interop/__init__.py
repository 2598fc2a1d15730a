"""Interoperability with other model ecosystems (Hugging Face LLaMA checkpoints)."""
