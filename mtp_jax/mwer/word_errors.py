"""Word errors on device: token ids -> word hashes -> Levenshtein distance, jittable.

Words are recovered from sentencepiece pieces: a piece starting with "▁" starts a
word. Each word is reduced to a 32-bit polynomial hash of its CHARACTERS (not its
token ids), so two tokenizations of the same word hash alike, exactly as the
decoded strings compare alike in jiwer. Per piece we precompute
  H[p]   = hash of the piece's characters (without the leading "▁"),
  POW[p] = BASE ** len(characters)            (mod 2**32),
and fold a word as h <- h * POW[p] + H[p] (uint32 arithmetic wraps), which equals
the hash of the concatenated characters.

The edit distance runs one `lax.scan` step per hypothesis word; each step updates
a whole DP row at once using D[i, j] - j = cummin_k(E[k] - k), which resolves the
in-row insertion recurrence without a second loop.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

BASE = 1_000_003
WORD_START = "\u2581"


@dataclasses.dataclass(frozen=True)
class WordTables:
  """Per-vocabulary lookup tables (device arrays of shape [V])."""
  starts_word: jax.Array  # bool: piece begins a new word
  piece_hash: jax.Array   # uint32
  piece_pow: jax.Array    # uint32
  is_text: jax.Array      # bool: piece contributes to words (not pad/bos/eos/unk...)


def _char_hash(text: str) -> tuple[int, int]:
  h, p = 0, 1
  for ch in text:
    h = (h * BASE + ord(ch)) % (1 << 32)
    p = (p * BASE) % (1 << 32)
  return h, p


def build_tables(pieces: list[str], special_ids=(0, 1, 2, 3)) -> WordTables:
  """Tables from the vocabulary's piece strings (index = token id)."""
  v = len(pieces)
  starts = np.zeros(v, bool)
  hashes = np.zeros(v, np.uint32)
  pows = np.ones(v, np.uint32)
  is_text = np.ones(v, bool)
  for i, piece in enumerate(pieces):
    if i in special_ids:
      is_text[i] = False
      continue
    starts[i] = piece.startswith(WORD_START)
    h, p = _char_hash(piece.lstrip(WORD_START))
    hashes[i], pows[i] = h, p
  return WordTables(jnp.asarray(starts), jnp.asarray(hashes), jnp.asarray(pows),
                    jnp.asarray(is_text))


def tables_from_tokenizer(tokenizer) -> WordTables:
  """Tables for an `mtp_jax.data.tokenizer.Tokenizer`."""
  from mtp_jax.data.tokenizer import SPECIAL_IDS  # pylint: disable=g-import-not-at-top
  return build_tables([tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)],
                      SPECIAL_IDS)


def words_from_tokens(tokens: jax.Array, lengths: jax.Array, tables: WordTables):
  """Token ids -> word hashes.

  Args:
    tokens: [B, N] int32 token ids (no BOS; anything past `lengths` is ignored).
    lengths: [B] int32 valid tokens per row.
    tables: from `build_tables`.
  Returns:
    words: [B, N] uint32 word hashes, left-aligned (a row has at most N words).
    num_words: [B] int32.
  """
  b, n = tokens.shape
  valid = (jnp.arange(n)[None, :] < lengths[:, None]) & tables.is_text[tokens]
  start = valid & (tables.starts_word[tokens] | (jnp.cumsum(valid, axis=1) == 1))
  # A word whose start marker is a bare "▁" piece still counts once it has characters;
  # a start with nothing after it (a lone "▁") forms an empty word, which jiwer drops.
  h_piece = tables.piece_hash[tokens]
  p_piece = tables.piece_pow[tokens]

  def step(h, xs):
    hp, pp, st, ok = xs
    new = jnp.where(st, hp, h * pp + hp)
    return jnp.where(ok, new, h), jnp.where(ok, new, h)

  _, running = jax.lax.scan(step, jnp.zeros((b,), jnp.uint32),
                            (h_piece.T, p_piece.T, start.T, valid.T))
  running = running.T  # [B, N] hash of the current word so far
  nxt_start = jnp.concatenate([start[:, 1:], jnp.ones((b, 1), bool)], axis=1)
  nxt_valid = jnp.concatenate([valid[:, 1:], jnp.zeros((b, 1), bool)], axis=1)
  is_last = valid & (nxt_start | ~nxt_valid)
  # Characters in the word so far: empty words (lone "▁") are dropped like jiwer does.
  has_chars = _word_has_chars(tokens, valid, start, tables)
  keep = is_last & has_chars
  word_idx = jnp.cumsum(keep, axis=1) - 1
  target = jnp.where(keep, word_idx, n)  # out-of-range slot for non-words (dropped)
  words = jnp.zeros((b, n + 1), jnp.uint32)
  words = jax.vmap(lambda w, t, r: w.at[t].set(r, mode="drop"))(words, target, running)
  return words[:, :n], jnp.sum(keep, axis=1).astype(jnp.int32)


def _word_has_chars(tokens, valid, start, tables):
  """[B, N] bool: the word containing this position has >= 1 character so far."""
  nonempty = valid & (tables.piece_pow[tokens] != 1)
  def step(c, xs):
    ne, st, ok = xs
    new = jnp.where(st, ne, c | ne)
    return jnp.where(ok, new, c), jnp.where(ok, new, c)
  _, out = jax.lax.scan(step, jnp.zeros((tokens.shape[0],), bool),
                        (nonempty.T, start.T, valid.T))
  return out.T


def edit_distance(hyp: jax.Array, hyp_len: jax.Array, ref: jax.Array, ref_len: jax.Array) -> jax.Array:
  """Levenshtein distance between word sequences, batched.

  Args:
    hyp: [B, Nh] word ids; hyp_len: [B].
    ref: [B, Nr] word ids; ref_len: [B].
  Returns:
    [B] int32 edit distance (substitutions + deletions + insertions).
  """
  b, nr = ref.shape
  j = jnp.arange(nr + 1)
  row0 = jnp.broadcast_to(j, (b, nr + 1)).astype(jnp.int32)  # D[0, j] = j

  def step(carry, xs):
    prev, final = carry
    i, word = xs  # i: 1-based hypothesis position, word: [B]
    cost = (ref != word[:, None]).astype(jnp.int32)  # [B, Nr]
    diag = prev[:, :-1] + cost
    up = prev[:, 1:] + 1
    e = jnp.concatenate([jnp.full((b, 1), i, jnp.int32), jnp.minimum(diag, up)], axis=1)
    row = jax.lax.cummin(e - j[None], axis=1) + j[None]
    final = jnp.where((hyp_len == i)[:, None], row, final)
    return (row, final), None

  init_final = jnp.where((hyp_len == 0)[:, None], row0, 0)
  steps = jnp.arange(1, hyp.shape[1] + 1, dtype=jnp.int32)
  (_, final), _ = jax.lax.scan(step, (row0, init_final), (steps, hyp.T))
  return jnp.take_along_axis(final, ref_len[:, None], axis=1)[:, 0]


def word_errors(hyp_tokens, hyp_len, ref_tokens, ref_len, tables: WordTables) -> jax.Array:
  """[B] word errors between token sequences (what jiwer counts on the decoded strings)."""
  hw, hn = words_from_tokens(hyp_tokens, hyp_len, tables)
  rw, rn = words_from_tokens(ref_tokens, ref_len, tables)
  return edit_distance(hw, hn, rw, rn)
