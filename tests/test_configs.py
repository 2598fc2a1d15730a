"""Every config file loads, validates, documents its command, and overrides work;
train/data fields are typed and validated; misspelt fields fail with file and field."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from mtp_jax import checkpoint, flops
from mtp_jax.config import ConfigError, KernelsConfig, ModelConfig, load_config_file, parse_arg
from mtp_jax.train.config import RunConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_loads_validates_and_documents_command(path):
  cfg = load_config_file(path)
  assert cfg.is_locked and cfg.train.is_locked
  run = RunConfig.from_config(cfg)  # every section, and the cross-section rules
  assert run.model == ModelConfig.from_config(cfg.model)
  text = path.read_text()
  assert '"""' in text and ("python train.py" in text or "python -m" in text or "decode.py" in text)
  assert "Expected" in text


def test_config_arg_sets_heads_and_rejects_unknown_keys():
  path = CONFIGS[0].parent / "tiny.py"
  cfg = ModelConfig.from_config(load_config_file(f"{path}:K=4,head=latent").model)
  assert (cfg.mtp.num_heads, cfg.mtp.head_type) == (4, "latent")
  with pytest.raises(ConfigError, match="unknown"):
    parse_arg("heads=4", K=1)


def test_smollm2_recipe_refuses_hard_tokens_with_a_mixture():
  path = ROOT / "configs" / "recipes" / "smollm2_whisper_tiny_cpu.py"
  proj = lambda arg: load_config_file(f"{path}:{arg}").model.projector  # noqa: E731
  assert (proj("K=4").ctc_hard, proj("K=4").ctc_mix) == (False, 4)
  assert (proj("mix=0,hard=1").ctc_hard, proj("mix=0,hard=1").ctc_mix) == (True, 0)
  assert (proj("mix=0").ctc_hard, proj("mix=0").ctc_mix) == (False, 0)
  with pytest.raises(ConfigError, match="hard=1 and mix=4"):
    load_config_file(f"{path}:hard=1")


def test_smollm2_recipe_merges_reach_the_tokenizer_and_default_to_all():
  path = ROOT / "configs" / "recipes" / "smollm2_whisper_tiny_cpu.py"
  assert load_config_file(f"{path}:K=4").data.tokenizer.merges == 0
  c = load_config_file(f"{path}:align=1,merges=2000")
  assert (c.data.tokenizer.merges, c.data.tokenizer.path) == (2000, "smollm2-135m")
  assert c.train.checkpoint_every == 1000  # ~20 alignment steps a second
  assert load_config_file(f"{path}:merges=2000").train.checkpoint_every == 100
  with pytest.raises(ConfigError, match="tokenizer.merges"):
    RunConfig.from_config(load_config_file(f"{path}:merges=-1"))


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


def _tiny():
  return load_config_file(CONFIGS[0].parent / "tiny.py")


@pytest.mark.parametrize("field,value,message", [
    ("train.steps", 0, "train.steps=0: must be >= 1"),
    ("train.steps", -5, "train.steps=-5: must be >= 1"),
    ("train.checkpoint_every", 0, "train.checkpoint_every=0: must be >= 1"),
    ("train.log_every", 0, "train.log_every=0: must be >= 1"),
    ("train.grad_accum", 0, "train.grad_accum=0: must be >= 1"),
    ("train.max_consecutive_nonfinite", 0, "train.max_consecutive_nonfinite=0: must be >= 1"),
    ("train.learning_rate", -1e-3, "train.learning_rate=-0.001: must be > 0"),
    ("train.frozen", "(", r"train.frozen='\(': invalid regex"),
    ("train.mode", "heads_only", "train.mode=heads_only needs train.init_from"),
    ("train.head_weights", (1.0, 1.0), r"train.head_weights=\(1.0, 1.0\): expected 0 weights"),
    ("train.ctc_weight", 0.3, "train.ctc_weight=0.3: needs model.encoder.ctc_head"),
    ("train.steps", 2.5, "train.steps=2.5: expected int"),
    ("data.audio_pad_multiple", 0, "data.audio_pad_multiple=0: must be >= 1"),
    ("data.sample_rate", 8000, "data.sample_rate=8000: must equal model.frontend.sample_rate=16000"),
    ("data.batching", "3d", "data.batching='3d': expected one of"),
    ("data.bad_input_policy", "ignore", "data.bad_input_policy='ignore': expected one of"),
    ("data.tokenizer.vocab_size", 4096, "data.tokenizer.vocab_size=4096: must be <= "
                                        "model.decoder.vocab_size=128"),
    ("model.encoder.dropout", 1.5, r"model.encoder.dropout=1.5: must be in \[0, 1\)"),
    ("model.decoder.dropout", -0.1, r"model.decoder.dropout=-0.1: must be in \[0, 1\)"),
    ("kernels.enabled", "yes", "kernels.enabled='yes': expected bool"),
    ("model.projector.ctc_mix", 4, "model.projector.ctc_mix=4: needs projector.ctc_compress"),
    ("model.projector.ctc_mix", -1, r"model.projector.ctc_mix=-1: must be in \[0, "
                                    r"model.decoder.vocab_size=128\)"),
    ("model.projector.ctc_mix", 128, r"model.projector.ctc_mix=128: must be in \[0, "),
    ("model.projector.ctc_compress_width", 0.0,
     r"model.projector.ctc_compress_width=0.0: must be in \(0, 1\]"),
    ("model.projector.ctc_compress_width", 0.5,
     "model.projector.ctc_compress_width=0.5: needs projector.ctc_compress=True"),
    ("model.projector.layers", -1, "model.projector.layers=-1: must be >= 0"),
    ("model.projector.heads", -1, "model.projector.heads=-1: must be >= 0"),
    ("model.projector.dropout", 1.0, r"model.projector.dropout=1.0: must be in \[0, 1\)"),
])
def test_invalid_values_name_the_field(field, value, message):
  c = _tiny().to_dict()  # a plain dict takes values of any type (as config.json does)
  *path, name = field.split(".")
  node = c
  for key in path:
    node = node[key]
  node[name] = value
  with pytest.raises(ConfigError, match=message):
    RunConfig.from_config(c)


def test_unknown_fields_are_rejected_in_every_section():
  c = _tiny()
  c.unlock()
  c.train.learning_rte = 1e-3
  with pytest.raises(ConfigError, match=r"train.learning_rte: unknown field"):
    RunConfig.from_config(c)
  c = _tiny()
  c.unlock()
  c.data.tokenizer.vocab = 3
  with pytest.raises(ConfigError, match=r"data.tokenizer.vocab: unknown field"):
    RunConfig.from_config(c)
  c = _tiny()
  c.unlock()
  c.kernels.verify = True
  with pytest.raises(ConfigError, match=r"kernels.verify: unknown field"):
    RunConfig.from_config(c)
  c = _tiny()
  c.unlock()
  c.traim = {}
  with pytest.raises(ConfigError, match=r"traim: unknown config section"):
    RunConfig.from_config(c)


def test_kernel_switch_is_config_kernels_and_old_runs_still_load(tmp_path):
  """One kernel switch (config.kernels.enabled); a stored config from before it, with
  model.reduction.use_kernel, loads with that field folded into the switch."""
  c = _tiny()
  assert RunConfig.from_config(c).kernels == KernelsConfig(enabled=False)
  assert KernelsConfig.from_config(c.kernels, enabled=True).enabled
  assert "use_kernel" not in c.model.reduction
  for legacy in (False, True):
    old = c.to_dict()
    old["model"]["reduction"]["use_kernel"] = legacy
    (tmp_path / checkpoint.CONFIG_FILE).write_text(json.dumps(old))
    stored = checkpoint.load_config(tmp_path)
    assert RunConfig.from_config(stored).kernels.enabled == legacy
    assert ModelConfig.from_config(stored.model) == ModelConfig.from_config(c.model)


_MISSPELT = textwrap.dedent("""\
    from mtp_jax.config import load_config_file


    def get_config(arg=None):
      c = load_config_file("{tiny}")
      c.train.steps = 10
      c.train.learning_rte = 1e-3
      return c
    """)


def test_misspelt_field_in_a_config_file_names_file_line_and_field(tmp_path):
  path = tmp_path / "misspelt.py"
  path.write_text(_MISSPELT.format(tiny=CONFIGS[0].parent / "tiny.py"))
  with pytest.raises(ConfigError, match=rf"{path}:7: `c.train.learning_rte = 1e-3`: "
                                        r"no config field 'learning_rte' \(did you mean "
                                        r"'learning_rate'\?\)"):
    load_config_file(path)


def _train_py(*args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["cli_field", "file_field", "bad_value"])
def test_train_py_refuses_bad_config_without_traceback_or_writes(tmp_path, case):
  workdir = tmp_path / "run"
  config, extra, expected = "configs/tiny.py", [], ""
  if case == "cli_field":
    extra = ["--config.train.learning_rte=1e-3"]
    expected = ("--config.train.learning_rte: no config field 'learning_rte' in train "
                "(did you mean 'learning_rate'?)")
  elif case == "file_field":
    config = tmp_path / "misspelt.py"
    config.write_text(_MISSPELT.format(tiny=ROOT / "configs" / "tiny.py"))
    expected = f"{config}:7: `c.train.learning_rte = 1e-3`: no config field 'learning_rte'"
  else:
    extra = ["--config.train.steps=0"]
    expected = "train.steps=0: must be >= 1"
  out = _train_py(f"--config={config}", f"--workdir={workdir}", *extra)
  assert out.returncode != 0
  assert expected in out.stderr, out.stderr
  assert "Traceback" not in out.stderr, out.stderr
  assert not workdir.exists()
