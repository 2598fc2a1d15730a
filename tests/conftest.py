"""Test setup: CPU only, 8 simulated devices (sharding tests use them)."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
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
