"""Test setup: CPU only, 8 simulated devices (sharding tests use them), fast compiles."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests compile far more than they run (tiny models, a few steps each), and most of an
# XLA:CPU compile is LLVM optimizing machine code. Code generation at LLVM level 0 cuts the
# suite's time by about a third; XLA's own HLO passes (fusion, buffer assignment, in-place
# updates) still run in full, so the programs tested are the ones production compiles.
for _flag in ("--xla_force_host_platform_device_count=8",
              "--xla_backend_optimization_level=0",
              "--xla_llvm_disable_expensive_passes=true"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(
    os.environ.get("MTP_JAX_SHARED_DATA",
                   pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
  """Path to ../shared/data; skips the test when it is absent."""
  if not (SHARED_DATA / "README.md").exists():
    pytest.skip(f"real speech data not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_config():
  """The tests' tiny ModelConfig builder, `tiny_models.tiny_model_config(head_type="independent",
  k=3, **overrides)` (tests/tiny_models.py)."""
  from tiny_models import tiny_model_config  # pylint: disable=import-outside-toplevel
  return tiny_model_config
