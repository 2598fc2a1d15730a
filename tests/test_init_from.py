"""Warm starts (`train.init_from`): merging checkpoint params into a fresh model."""
import numpy as np
import pytest

from mtp_jax.train.state import merge_params


def _trees():
  fresh = {"decoder": {"w": np.zeros((2, 3), np.float32)},
           "heads": {"mix2": {"kernel": np.zeros((3, 3), np.float32)}}}
  loaded = {"decoder": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
            "heads": {"out2": {"kernel": np.ones((3, 5), np.float32)}}}
  return fresh, loaded


def test_checkpoint_leaf_missing_from_model_is_an_error_naming_it():
  fresh, loaded = _trees()
  with pytest.raises(ValueError, match="out2"):
    merge_params(fresh, loaded)


def test_exclude_keeps_fresh_init_for_matching_paths():
  fresh, loaded = _trees()
  merged, copied, new = merge_params(fresh, loaded, exclude="heads")
  np.testing.assert_array_equal(merged["decoder"]["w"], loaded["decoder"]["w"])
  np.testing.assert_array_equal(merged["heads"]["mix2"]["kernel"], np.zeros((3, 3)))
  assert copied == ["['decoder']['w']"]
  assert new == ["['heads']['mix2']['kernel']"]


def test_shape_mismatch_names_the_path():
  fresh, loaded = _trees()
  loaded["decoder"]["w"] = np.ones((3, 2), np.float32)
  with pytest.raises(ValueError, match=r"\['decoder'\]\['w'\].*\(3, 2\)"):
    merge_params(fresh, loaded, exclude="heads")


def test_include_takes_only_matching_paths():
  """merge_params(include=...): one part of another run (`train.init_parts`)."""
  fresh, loaded = _trees()
  merged, copied, new = merge_params(fresh, loaded, include="decoder")
  np.testing.assert_array_equal(merged["decoder"]["w"], loaded["decoder"]["w"])
  assert copied == ["['decoder']['w']"] and new == ["['heads']['mix2']['kernel']"]


@pytest.mark.parametrize("value,message", [
    ("projector", "expected REGEX=DIR"),
    ("=runs/a", "expected REGEX=DIR"),
    ("projector=", "expected REGEX=DIR"),
    ("(=runs/a", "invalid regex"),
])
def test_init_parts_errors_name_the_field(value, message):
  from mtp_jax.config import ConfigError
  from mtp_jax.train.config import init_parts
  with pytest.raises(ConfigError, match=f"train.init_parts=.*{message}"):
    init_parts(value)
  assert init_parts("projector|ctc_=runs/a; 'mtp'=runs/b") == [
      ("projector|ctc_", "runs/a"), ("'mtp'", "runs/b")]
