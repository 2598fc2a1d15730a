"""The error raised for bad training/eval inputs, naming manifest and line."""
from __future__ import annotations


class BadInputError(ValueError):
  """A bad utterance: malformed manifest line, bad transcript or bad audio.

  The message always names the manifest and its 1-based line, e.g.
  "data/train.jsonl:17: audio file not found: /data/audio/x.flac".

  Attributes:
    manifest: path of the manifest holding the utterance ("" when unknown).
    line: 1-based line number in that manifest (0 when unknown).
    reason: what is wrong, without the location.
  """

  def __init__(self, manifest: str, line: int, reason: str):
    self.manifest = str(manifest)
    self.line = int(line)
    self.reason = str(reason)
    super().__init__(f"{self.manifest}:{self.line}: {self.reason}")

  def __reduce__(self):
    # Exceptions pickle as cls(*self.args); ours has three arguments, and
    # worker processes send these errors to the main process by pickle.
    return (type(self), (self.manifest, self.line, self.reason))


class ManifestError(BadInputError):
  """A manifest line that is not a valid utterance record (JSON or fields)."""


class NoDataError(ValueError):
  """Nothing to train on: no manifest, or no usable utterance (or transcript) in them."""
