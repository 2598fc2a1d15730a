"""Decoder language-model pretraining on text alone (`data.text_corpus`): the text
iterator (every sentence once per epoch, exact resume, bad lines named), the model's
text-only forward, config checks, and a text run that warm-starts a speech run."""
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtp_jax import checkpoint as ckpt_lib
from mtp_jax.config import ConfigError
from mtp_jax.data import text_corpus
from mtp_jax.data import tokenizer as tok_lib
from mtp_jax.data.errors import BadInputError
from mtp_jax.model.speech_llama import SpeechLLaMA
from mtp_jax.train import loop
from mtp_jax.train import loss as loss_lib
from mtp_jax.train import state as state_lib
from mtp_jax.train.config import RunConfig
from train_helpers import WORDS, micro_config, write_synthetic_manifest

DEVICES = 2


def _sentences(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, size=rng.integers(2, 7))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """(root, manifest, text_corpus paths, tokenizer, data config): 30 .txt lines (one
  blank), 6 .tsv rows and the manifest's 16 transcripts as .jsonl."""
  root = tmp_path_factory.mktemp("textlm")
  # The text runs share one step HLO: a persistent compilation cache skips XLA after
  # the first (as in test_train_resume.py).
  old = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir",
                                          "jax_persistent_cache_min_compile_time_secs")}
  jax.config.update("jax_compilation_cache_dir", str(root / "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  manifest = write_synthetic_manifest(root / "data")
  txt = root / "lines.txt"
  lines = _sentences(30)
  txt.write_text("\n".join(lines[:10] + [""] + lines[10:]) + "\n")
  tsv = root / "prompts.tsv"
  tsv.write_text("".join(f"p{i}\t{s}\n" for i, s in enumerate(_sentences(6, seed=1))))
  c = micro_config()
  c.data.train_manifests = manifest
  c.data.batch_size = 8
  c.data.batch_size_multiple = 1
  tok_lib.get_tokenizer(c.data, root / "tok")
  tok = tok_lib.Tokenizer.load(root / "tok")
  c.data.text_corpus = f"{txt},{tsv},{manifest}"
  yield root, manifest, c.data.text_corpus, tok, c.data
  for k, v in old.items():
    jax.config.update(k, v)


def test_every_sentence_once_per_epoch_and_the_state_resumes(corpus):
  _, _, _, tok, data_cfg = corpus
  it = text_corpus.make_text_iterator(data_cfg, tok, seed=3, process_index=0,
                                      process_count=1)
  n = 30 + 6 + 16
  assert it.batches_per_epoch == 7  # ceil(52 / 8)
  (b, s, l), = it.batch_shapes
  assert (b, s) == (8, 0) and l % 8 == 0
  epochs = [[next(it) for _ in range(it.batches_per_epoch)] for _ in range(2)]
  for batches in epochs:
    ids = [u for batch in batches for u in batch["utt_id"] if u]
    assert len(ids) == n == len(set(ids))
    for batch in batches:
      assert batch["text"].shape == (8, l) and batch["text"].dtype == np.int32
      for row, k in enumerate(batch["text_len"]):
        assert (batch["text"][row, k:] == tok_lib.PAD_ID).all()
        assert (batch["text"][row, :k] != tok_lib.PAD_ID).all()
  order = lambda batches: [u for batch in batches for u in batch["utt_id"]]
  assert order(epochs[0]) != order(epochs[1])  # reshuffled per epoch
  # utt ids name file:line; the .tsv keeps its last column, the manifest its text field.
  first = {u: batch["text"][r, :batch["text_len"][r]] for batch in epochs[0]
           for r, u in enumerate(batch["utt_id"]) if u}
  tsv_id = f"{data_cfg.text_corpus.split(',')[1]}:1"
  want = tok.encode(_sentences(6, seed=1)[0])
  np.testing.assert_array_equal(first[tsv_id], want)
  # Resume: a fresh iterator set to a saved state yields exactly what followed.
  make = lambda seed: text_corpus.make_text_iterator(data_cfg, tok, seed=seed,
                                                     process_index=0, process_count=1)
  it2 = make(3)
  for _ in range(5):
    next(it2)
  state = json.loads(json.dumps(it2.get_state()))
  later = [next(it2) for _ in range(4)]
  it3 = make(3)
  it3.set_state(state)
  for a, b in zip(later, [next(it3) for _ in range(4)]):
    np.testing.assert_array_equal(a["text"], b["text"])
  other = make(4)
  with pytest.raises(ValueError, match="fingerprint"):
    other.set_state(state)


def test_processes_split_each_global_batch(corpus):
  _, _, _, tok, data_cfg = corpus
  whole = text_corpus.make_text_iterator(data_cfg, tok, seed=3, process_index=0,
                                         process_count=1)
  parts = [text_corpus.make_text_iterator(data_cfg, tok, seed=3, process_index=i,
                                          process_count=2) for i in range(2)]
  assert parts[0].batch_shapes == [(4, 0, whole.batch_shapes[0][2])]
  for _ in range(2 * whole.batches_per_epoch):
    a, (b0, b1) = next(whole), (next(parts[0]), next(parts[1]))
    np.testing.assert_array_equal(a["text"], np.concatenate([b0["text"], b1["text"]]))
    np.testing.assert_array_equal(a["text_len"],
                                  np.concatenate([b0["text_len"], b1["text_len"]]))
  # Every process saves the same state; it restores on any process.
  assert parts[0].get_state() == parts[1].get_state()
  # Batches are rounded down to the device multiple (7 sentences on 2 devices -> 6).
  cfg = data_cfg.copy_and_resolve_references()
  cfg.batch_size, cfg.batch_size_multiple = 7, 2
  assert text_corpus.make_text_iterator(cfg, tok, seed=0, process_index=0,
                                        process_count=1).batch_shapes[0][0] == 6


def test_bad_lines_are_named_by_file_and_line(corpus, tmp_path):
  _, _, _, tok, data_cfg = corpus
  bad = tmp_path / "bad.txt"
  bad.write_text("alpha bravo\n!!! ???\n" + " ".join(["charlie"] * 200) + "\ndelta echo\n")
  man = tmp_path / "bad.jsonl"
  man.write_text('{"text": "alpha"}\n{"text": null}\nnot json\n{"text": "golf hotel"}\n')
  cfg = data_cfg.copy_and_resolve_references()
  cfg.text_corpus = f"{bad},{man}"
  it = text_corpus.make_text_iterator(cfg, tok, seed=0, process_index=0, process_count=1)
  report = it.bad_input_report()
  assert [(r["manifest"], r["line"]) for r in report["rows"]] == [
      (str(bad), 2), (str(bad), 3), (str(man), 2), (str(man), 3)]
  reasons = [r["reason"] for r in report["rows"]]
  assert "empty" in reasons[0] and "tokens" in reasons[1]
  assert "'text' is NoneType" in reasons[2] and "JSON" in reasons[3]
  assert it.describe()[0]["sentences"] == 4
  cfg.text_corpus = str(bad)
  cfg.bad_input_policy = "error"
  with pytest.raises(BadInputError, match=f"{bad}:2: empty"):
    text_corpus.make_text_iterator(cfg, tok, seed=0, process_index=0, process_count=1)
  cfg.text_corpus = str(tmp_path / "missing.txt")
  with pytest.raises(FileNotFoundError, match="missing.txt"):
    text_corpus.make_text_iterator(cfg, tok, seed=0, process_index=0, process_count=1)


def test_forward_lm_is_the_decoder_after_an_empty_audio_prefix(tiny_config):
  cfg = tiny_config(k=3, head_type="sequential")
  model = SpeechLLaMA(cfg)
  params = model.init(jax.random.PRNGKey(0), *state_lib.dummy_inputs(cfg))
  rng = np.random.default_rng(0)
  text_in = jnp.asarray(rng.integers(3, cfg.decoder.vocab_size, (2, 7)), jnp.int32)
  prev = jnp.asarray(rng.integers(3, cfg.decoder.vocab_size, (2, 7, 2)), jnp.int32)
  lm = model.apply(params, text_in, prev, method="forward_lm")
  # The same text after 5 audio tokens that are all masked (alen = 0).
  emb = jnp.asarray(rng.standard_normal((2, 5, cfg.decoder.d_model)), jnp.float32)
  ref = model.apply(params, emb, jnp.zeros((2, 5), bool), jnp.zeros((2,), jnp.int32),
                    text_in, prev, method="forward_text")
  np.testing.assert_allclose(lm["logits"], ref["logits"], atol=1e-5, rtol=1e-5)
  # ... and not what the decoder gives once the audio is visible.
  seen = model.apply(params, emb, jnp.ones((2, 5), bool), jnp.full((2,), 5, jnp.int32),
                     text_in, prev, method="forward_text")
  assert np.abs(np.asarray(seen["logits"] - lm["logits"])).max() > 1e-3


@pytest.mark.slow  # long; `-m slow` runs it
def test_text_step_ignores_padding_rows_and_skips_ctc(corpus):
  """A text-only step of a model with a projector CTC head (ctc_weight > 0): no CTC
  term, and batch-padding rows (text_len 0) change neither loss nor gradient."""
  from mtp_jax import sharding  # pylint: disable=import-outside-toplevel
  from mtp_jax.train.setup import make_train_setup  # pylint: disable=import-outside-toplevel
  _, _, _, tok, data_cfg = corpus
  c = micro_config(k=2)
  c.model.projector.ctc_head = True
  c.train.ctc_weight = 0.3
  c.model.decoder.dropout = 0.0
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  setup = make_train_setup(c, mesh, sharding.rules_from_config(c.sharding_rules))
  it = text_corpus.make_text_iterator(data_cfg, tok, seed=0, process_index=0, process_count=1)
  batch = next(it)
  full = {k: batch[k] for k in ("text", "text_len")}
  padded = {k: np.concatenate([v, np.zeros_like(v)]) for k, v in full.items()}
  padded["text"][8:] = 7  # garbage tokens in rows whose text_len is 0
  out = []
  for b in (full, padded):
    state = setup.create_state(seed=0)
    new, metrics = setup.jit_step(kind="text")(state, {k: jnp.asarray(v) for k, v in b.items()})
    out.append((jax.device_get(metrics), jax.device_get(new.params)))
  (m1, p1), (m2, p2) = out
  assert "ctc_loss" not in m1 and bool(m1["finite"])
  assert m1["tokens"] == m2["tokens"] == int(full["text_len"].sum()) + 8  # + EOS per row
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p1, p2)


def test_config_refuses_text_corpus_with_feature_cache_or_mwer():
  c = micro_config()
  c.data.text_corpus = "a.txt"
  c.data.feature_cache = "features"
  with pytest.raises(ConfigError, match="data.text_corpus=.*data.feature_cache"):
    RunConfig.from_config(c)
  c.data.feature_cache = ""
  c.train.objective = "mwer"
  with pytest.raises(ConfigError, match="data.text_corpus=.*objective"):
    RunConfig.from_config(c)


def _text_config(corpus_paths, manifest, **train):
  c = micro_config(k=2)
  c.data.train_manifests = manifest  # the tokenizer's training text
  c.data.text_corpus = corpus_paths
  c.data.dev_manifest = manifest     # ignored by a text-only run (no audio to score)
  c.data.batch_size = 8
  c.data.batch_size_multiple = DEVICES
  c.train.update(steps=80, warmup_steps=2, checkpoint_every=40, log_every=10,
                 learning_rate=1e-2)
  c.train.update(**train)
  return c


def _lm_loss(params, config, tok, sentences) -> float:
  """Mean head-1 cross-entropy of `forward_lm` over sentences (teacher forced)."""
  model = SpeechLLaMA(RunConfig.from_config(config).model)
  ids = [tok.encode(s) for s in sentences]
  l = max(map(len, ids)) + 1
  text = np.zeros((len(ids), l), np.int32)
  for r, x in enumerate(ids):
    text[r, :len(x)] = x
  text_len = jnp.asarray([len(x) for x in ids], jnp.int32)
  text_in, targets, mask, _ = loss_lib.make_targets(jnp.asarray(text), text_len, text_len, 2)
  out = model.apply(params, text_in, method="forward_lm")
  loss, _ = loss_lib.mtp_loss(out["logits"][:, :, :1], targets[:, :, :1], mask[:, :, :1],
                              (1.0,))
  return float(loss)


@pytest.mark.slow  # long; `-m slow` runs it
def test_text_run_learns_resumes_exactly_and_warm_starts_a_speech_run(corpus):
  root, manifest, paths, tok, _ = corpus
  devices = jax.devices()[:DEVICES]
  straight = loop.train_and_evaluate(_text_config(paths, manifest), str(root / "lm_a"),
                                     devices=devices)
  assert straight["step"] == 80 and "eval/wer" not in straight
  loop.train_and_evaluate(_text_config(paths, manifest), str(root / "lm_b"), devices=devices,
                          stop_after=40)
  resumed = loop.train_and_evaluate(_text_config(paths, manifest), str(root / "lm_b"),
                                    devices=devices)
  pa, pb = ckpt_lib.load_params(root / "lm_a"), ckpt_lib.load_params(root / "lm_b")
  jax.tree.map(np.testing.assert_array_equal, pa, pb)  # resume == never stopping
  assert resumed["train/loss"] == straight["train/loss"]
  lines = [json.loads(l) for l in open(root / "lm_a" / "metrics.jsonl")]
  assert lines[-1]["train/loss"] < 0.75 * lines[0]["train/loss"]
  # The pretrained decoder models unseen sentences of the corpus' words better than
  # its initialization does.
  mcfg = RunConfig.from_config(config := _text_config(paths, manifest)).model
  init = nn.unbox(SpeechLLaMA(mcfg).init(jax.random.PRNGKey(config.seed),
                                         *state_lib.dummy_inputs(mcfg)))
  held_out = _sentences(20, seed=7)
  assert _lm_loss(pa, config, tok, held_out) < 0.7 * _lm_loss(init, config, tok, held_out)
  # A speech run warm-starts from it: its decoder starts as the LM's (frozen here, so
  # it still equals it after a step).
  speech = micro_config(k=2)
  speech.data.train_manifests = manifest
  speech.data.tokenizer.path = str(root / "lm_a" / "tokenizer.model")
  speech.data.batching = "random"
  speech.data.batch_size = 4
  speech.data.batch_size_multiple = DEVICES
  speech.train.update(steps=1, warmup_steps=1, log_every=1, init_from=str(root / "lm_a"),
                      frozen="^params/(embed|decoder)/")
  loop.train_and_evaluate(speech, str(root / "asr"), devices=devices)
  ps = ckpt_lib.load_params(root / "asr")
  np.testing.assert_array_equal(ps["params"]["embed"]["embedding"],
                                pa["params"]["embed"]["embedding"])
  jax.tree.map(np.testing.assert_array_equal, ps["params"]["decoder"], pa["params"]["decoder"])
