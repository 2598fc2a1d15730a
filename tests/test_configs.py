"""Every config file loads, validates, documents its command, and overrides work."""
import pathlib

import pytest

from mtp_jax import flops
from mtp_jax.config import ConfigError, ModelConfig, load_config_file, parse_arg

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").rglob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_loads_validates_and_documents_command(path):
  cfg = load_config_file(path)
  ModelConfig.from_config(cfg.model)
  text = path.read_text()
  assert '"""' in text and ("python train.py" in text or "python -m" in text or "decode.py" in text)
  assert "Expected" in text


def test_config_arg_sets_heads_and_rejects_unknown_keys():
  path = CONFIGS[0].parent / "tiny.py"
  cfg = ModelConfig.from_config(load_config_file(f"{path}:K=4,head=latent").model)
  assert (cfg.mtp.num_heads, cfg.mtp.head_type) == (4, "latent")
  with pytest.raises(ConfigError, match="unknown"):
    parse_arg("heads=4", K=1)


@pytest.mark.parametrize("arg", [None, "base=demo_conformer,K=4"])
def test_shift_pair_equal_size_cheaper_decoder(arg):
  root = CONFIGS[0].parent
  dec = ModelConfig.from_config(load_config_file(root / "shift" / "deep_decoder.py", arg).model)
  enc = ModelConfig.from_config(load_config_file(root / "shift" / "deep_encoder.py", arg).model)
  a, b = flops.param_counts(dec)["total"], flops.param_counts(enc)["total"]
  assert abs(a - b) / a < 0.02
  assert dec.mtp.num_heads == enc.mtp.num_heads == 4
  ratio = flops.decoder_token_flops(dec, 100, 1) / flops.decoder_token_flops(enc, 100, 1)
  assert ratio > 3.0


def test_shift_pair_rejects_unknown_base_and_passes_other_keys_on():
  path = CONFIGS[0].parent / "shift" / "deep_encoder.py"
  with pytest.raises(ConfigError, match="base='huge'"):
    load_config_file(path, "base=huge")
  c = load_config_file(path, "base=demo_conformer,K=1,minutes=7")
  assert (c.model.mtp.num_heads, c.train.max_minutes) == (1, 7.0)
  assert (c.model.encoder.num_layers, c.model.decoder.num_layers) == (7, 1)
