"""Synthetic speech corpora with espeak-ng (training data; not used by training itself).

  python -m mtp_jax.synth --out runs/synth --num 2000 --workers 2
  python -m mtp_jax.synth.sentence_lists --data ../shared/data --out runs/wt/sentences.txt

* `corpus`: plans and writes a corpus (FLAC + JSONL manifests); the CLI above.
* `render`: one utterance's drawn parameters and its rendering (espeak-ng, resampling,
  silences, noise).
* `workers`: synthesis shards, each in a fresh process, with progress.
* `espeak`: the espeak-ng library through ctypes.
* `sentences`, `sentence_words`: the built-in sentence generator and a file loader.
* `sentence_lists`: sentences from ../shared/data/text without held-out test texts.
"""
