"""Device word errors (MWER) equal jiwer's counts on the same normalized strings."""
import jax
import jax.numpy as jnp
import jiwer
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mtp_jax.data.tokenizer import train_tokenizer_from_texts
from mtp_jax.mwer.word_errors import edit_distance, tables_from_tokenizer, word_errors

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "then",
         "there", "they", "at", "mattress", "rat", "sang", "songs", "over", "moon"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  rng = np.random.default_rng(0)
  texts = [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(400)]
  return train_tokenizer_from_texts(texts, tmp_path_factory.mktemp("tok"), vocab_size=60)


@pytest.fixture(scope="module")
def jitted(tok):
  tables = tables_from_tokenizer(tok)
  return jax.jit(lambda h, hl, r, rl: word_errors(h, hl, r, rl, tables))


def pad(seqs, n):
  out = np.zeros((len(seqs), n), np.int32)
  for i, s in enumerate(seqs):
    out[i, :len(s)] = s
  return jnp.asarray(out), jnp.asarray([len(s) for s in seqs], jnp.int32)


sentence = st.lists(st.sampled_from(WORDS), min_size=0, max_size=9).map(" ".join)


@settings(max_examples=25, deadline=None)
@given(refs=st.lists(sentence.filter(bool), min_size=3, max_size=3),
       hyps=st.lists(sentence, min_size=3, max_size=3))
def test_device_word_errors_equal_jiwer(tok, jitted, refs, hyps):
  r_ids, h_ids = [tok.encode(r) for r in refs], [tok.encode(h) for h in hyps]
  r, rl = pad(r_ids, 48)
  h, hl = pad(h_ids, 48)
  got = np.asarray(jitted(h, hl, r, rl))
  for i, (ref, hyp) in enumerate(zip(refs, hyps)):
    ref_s, hyp_s = tok.decode(r_ids[i]), tok.decode(h_ids[i])
    if hyp_s.strip():
      o = jiwer.process_words(ref_s, hyp_s)
      want = o.substitutions + o.deletions + o.insertions
    else:
      want = len(ref_s.split())
    assert got[i] == want, (ref_s, hyp_s)


def test_noncanonical_tokenization_of_same_word_counts_as_equal(tok):
  """Two tokenizations of one string are zero errors apart (hashes use characters)."""
  canonical = tok.encode("mattress")
  pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
  chars = [pieces.index("\u2581m" if "\u2581m" in pieces else "\u2581")]
  rest = "attress" if pieces[chars[0]] == "\u2581m" else "mattress"
  for ch in rest:
    chars.append(pieces.index(ch))
  assert chars != canonical
  tables = tables_from_tokenizer(tok)
  h, hl = pad([chars], 16)
  r, rl = pad([canonical], 16)
  assert int(word_errors(h, hl, r, rl, tables)[0]) == 0


def test_edit_distance_hand_cases():
  ref = jnp.array([[1, 2, 3, 4, 0], [1, 2, 3, 0, 0], [5, 5, 5, 5, 5]])
  hyp = jnp.array([[1, 3, 4, 9, 9], [0, 0, 0, 0, 0], [5, 6, 5, 0, 0]])
  d = edit_distance(hyp, jnp.array([3, 0, 3]), ref, jnp.array([4, 3, 5]))
  np.testing.assert_array_equal(d, [1, 3, 3])
