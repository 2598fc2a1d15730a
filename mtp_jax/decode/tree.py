"""Tree verification: several candidate continuations checked in one decoder call.

Extends blockwise-parallel decoding (verify.py) from one draft chain to a small
static tree of drafts built from the heads' top-k tokens. A node at depth d is a
tuple of ranks (r_1, ..., r_d): its token is rank r_d of head d+1's top-k at the
last accepted position, its parent is (r_1, ..., r_{d-1}); the root (depth 0) is
the last accepted token c. The default tree is the greedy chain plus, at every
depth, one rank-1 alternative continued greedily (all rank tuples over {0, 1} with
at most one 1): 1 + 2 + ... + K nodes, e.g. 10 for K=4.

One call feeds all nodes at consecutive cache slots with rotary positions by depth
and a tree attention mask (a node sees the committed text and its ancestors). Head
1 at each node verifies its children; the deepest node whose whole path matches
head 1's argmax is accepted, followed by head 1's correction there. The accepted
path's keys/values are then moved to consecutive slots (compaction), so the cache
layout stays that of `decode_step`. Output equals greedy token for token.

The tree call is `decode_step(..., tree=(depth, ancestors))`: the cache's mask helper
(`KVCache.decode_mask`) builds the tree mask, per layer after FastAdaSP-style prefill
reduction like every other call.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.decode import common, engine, registry
from mtp_jax.decode.greedy import make_greedy
from mtp_jax.decode.verify import verified_block


def default_tree(k: int, top: int = 2) -> list[tuple[int, ...]]:
  """Rank tuples of the default tree (root excluded): at most one non-zero rank."""
  paths = []
  for d in range(1, k):
    for r in itertools.product(range(top), repeat=d):
      if sum(x > 0 for x in r) <= 1:
        paths.append(r)
  return paths


def tree_arrays(paths: list[tuple[int, ...]]):
  """Static tree structure.

  Returns:
    depth [T] int, parent [T] int (-1 for the root), rank [T] int (rank of the node's
    token in its head's top-k; 0 for the root), anc [T, T] bool (anc[q, n]: n is an
    ancestor of q or q itself). Node 0 is the root.
  """
  nodes = [()] + sorted(set(paths), key=lambda r: (len(r), r))
  index = {r: i for i, r in enumerate(nodes)}
  for r in nodes[1:]:
    if r[:-1] not in index:
      raise ValueError(f"mtp_jax/decode/tree.py: tree path {r} lacks its parent {r[:-1]}")
  t = len(nodes)
  depth = np.array([len(r) for r in nodes])
  parent = np.array([index[r[:-1]] if r else -1 for r in nodes])
  rank = np.array([r[-1] if r else 0 for r in nodes])
  anc = np.zeros((t, t), bool)
  for q, r in enumerate(nodes):
    for d in range(len(r) + 1):
      anc[q, index[r[:d]]] = True
  return depth, parent, rank, anc


class Tree(engine.BlockStrategy):
  """Carry: (correction [B], candidates [B, K-1, top]): heads 2..K's top tokens at the
  correction's prediction position, from which the next call's tree is filled."""

  def __init__(self, model, *, max_new_tokens: int, paths=None, top: int = 2,
               draft_vocab: int = 0):
    super().__init__(model, max_new_tokens=max_new_tokens)
    self.draft_vocab = common.draft_vocab_of(model, draft_vocab)
    k = self.num_heads
    paths = paths or default_tree(k, top)
    depth, parent, rank, anc = tree_arrays(paths)
    if depth.max() > k - 1:
      raise ValueError(f"mtp_jax/decode/tree.py: tree depth {depth.max()} > K-1={k - 1}")
    self.kmax = int(rank.max()) + 1
    self.size = len(depth)
    self.depth, self.parent, self.anc = map(jnp.asarray, (depth, parent, anc))
    self.node_head = jnp.asarray(np.maximum(depth - 1, 0))   # index into heads 2..K
    self.node_rank = jnp.asarray(rank)
    self.feed_width, self.emit_width = self.size, k

  def _candidates(self, logits):
    """Heads 2..K's logits [B, K-1, V'] at the last accepted position (V' = V, or the
    shortlist's N) -> their top-k tokens [B, K-1, kmax]."""
    return jax.lax.top_k(logits, self.kmax)[1].astype(jnp.int32)

  def first(self, f, out0):
    corr = common.argmax(out0["logits"][:, 0, 0])
    return engine.Block.single(corr), (corr, self._candidates(out0["logits"][:, 0, 1:]))

  def propose(self, f, cache, text_index, carry, live):
    corr, cand = carry
    k, depth, parent, anc = self.num_heads, self.depth, self.parent, self.anc
    tokens = cand[:, self.node_head, self.node_rank].at[:, 0].set(corr)   # [B, T]
    one = (not self.draft_vocab
           and common.one_pass(tokens.shape[0], self.size, k, self.one_pass_max_rows))
    out, cache = f.step(tokens, text_index, cache, num_heads=k if one else 1,
                        tree=(depth, anc))
    g = common.argmax(out["logits"][:, :, 0])                            # [B, T]
    # ok[q]: node q's token equals head 1's argmax at its parent; accepted: all ancestors ok.
    ok = (tokens == jnp.take(g, jnp.maximum(parent, 0), axis=1)) | (parent < 0)[None]
    acc = jnp.all(ok[:, None, :] | ~anc[None], axis=2)                  # [B, T]
    a = jnp.max(jnp.where(acc, depth[None], -1), axis=1)                 # accepted drafts
    q = jnp.argmax(acc & (depth[None] == a[:, None]), axis=1)            # deepest accepted node
    # Path node at each depth 0..K-1 (root at 0); beyond a: the root (unused).
    on_depth = anc[q][:, None, :] & (depth[None, None, :] == jnp.arange(k)[None, :, None])
    path = jnp.argmax(on_depth, axis=2)                                  # [B, K]
    corr = jnp.take_along_axis(g, q[:, None], axis=1)[:, 0]
    path_tok = jnp.take_along_axis(tokens, path, axis=1)                 # [B, K]
    block = verified_block(path_tok[:, 1:], a, corr)
    cache = cache.compact(text_index, path, self.size)
    if self.draft_vocab:  # heads 2..K over the shortlist at the deepest accepted node
      heads = f.draft_logits(common.take_position(out["hidden"], q)[:, None],
                             self.draft_vocab)[:, 0]                     # [B, K-1, N]
    else:
      heads = (common.take_position(out["logits"], q) if one
               else common.heads_at(f, out["hidden"], q))[:, 1:]         # [B, K-1, V]
    carry = (corr, self._candidates(heads))
    return block, a + 1, cache, carry


def make_tree(model, *, max_new_tokens: int, paths: list[tuple[int, ...]] | None = None,
              top: int = 2, draft_vocab: int = 0):
  """`fn(params, audio, audio_len) -> dict` (see `engine`).

  Args:
    model: a `SpeechLLaMA` with K heads (K=1: plain greedy).
    max_new_tokens: static cap on emitted tokens (EOS excluded).
    paths: tree as rank tuples (default `default_tree(K, top)`); depth <= K-1.
    top: top-k per head used by the default tree.
    draft_vocab: N > 0: heads 2..K's candidates among the token ids < N only (latent
      heads; output unchanged, as in `verify`).
  """
  if model.cfg.mtp.num_heads == 1:
    return make_greedy(model, max_new_tokens=max_new_tokens)
  return Tree(model, max_new_tokens=max_new_tokens, paths=paths, top=top,
              draft_vocab=draft_vocab)


registry.register(registry.StrategySpec(
    name="tree", build=make_tree, exact=True,
    options=(registry.Option("top", 2, "top-k tokens per head in the default draft tree "
                             "(--strategy=tree)", kind="int",
                             parse=registry.positive_int("top")),
             registry.DRAFT_VOCAB),
    help="verification of a tree of drafts from the heads' top-k (output = greedy)"))
