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

The custom-mask decoder pass is built here from the model's own submodules
(`embed`, `decoder`, `final_norm`) through `model.apply(..., method=...)`; no model
change is needed.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from mtp_jax.decode import common
from mtp_jax.decode.greedy import make_greedy
from mtp_jax.model.layers import dtype_of


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


def _tree_step(m, tokens, text_index, cache, anc, depth):
  """Decoder pass over tree nodes (a custom-mask `decode_step`), called via apply.

  Args:
    m: the bound SpeechLLaMA.
    tokens: [B, T] node tokens, written at slots P + text_index + node.
    text_index: [B] committed text tokens per row.
    cache: the decoding cache.
    anc: [T, T] bool ancestor-or-self matrix.
    depth: [T] int node depths (rotary offset from text_index).
  Returns:
    ({"logits" [B, T, K, V], "hidden" [B, T, d] final-normed}, new cache).
  """
  b, t = tokens.shape
  p = cache["prefix_valid"].shape[1]
  s = cache["k"].shape[2]
  pos = cache["prefix_len"][:, None] + text_index[:, None] + depth[None]
  j = jnp.arange(s)[None, :]
  prefix_ok = jnp.pad(cache["prefix_valid"], ((0, 0), (0, s - p)))            # [B, S]
  committed = (j >= p) & (j < p + text_index[:, None])                          # [B, S]
  rel = j - (p + text_index[:, None])                                           # [B, S]
  in_tree = (rel >= 0) & (rel < t)
  tree_vis = jnp.take(anc, jnp.clip(rel, 0, t - 1), axis=1)                     # [T, B, S]
  tree_vis = jnp.transpose(tree_vis, (1, 0, 2)) & in_tree[:, None, :]
  mask = (prefix_ok | committed)[:, None, :] | tree_vis                         # [B, T, S]
  x = m.embed(tokens).astype(dtype_of(m.cfg.dtype))
  h, layers = m.decoder(x, pos, mask, {"k": cache["k"], "v": cache["v"]}, p + text_index)
  hn = m.final_norm(h)
  return {"logits": m.heads(hn), "hidden": hn}, dict(cache, k=layers["k"], v=layers["v"])


def _compact(cache, start, path, size: int):
  """Moves slots start + path[b, i] to start + i (per row) in every layer.

  Args:
    cache: decoding cache (k/v [L, B, S, H, D]).
    start: [B] first tree slot (P + text_index).
    path: [B, D] node index of the accepted path at each depth (root first).
    size: tree size T (the window [start, start + T) holds the nodes).
  """
  def row(c, s0, idx):  # c [L, S, H, D]
    win = jax.lax.dynamic_slice_in_dim(c, s0, size, axis=1)
    return jax.lax.dynamic_update_slice_in_dim(c, jnp.take(win, idx, axis=1), s0, axis=1)

  move = jax.vmap(row, in_axes=(1, 0, 0), out_axes=1)
  return dict(cache, k=move(cache["k"], start, path), v=move(cache["v"], start, path))


def make_tree(model, *, max_new_tokens: int, paths: list[tuple[int, ...]] | None = None,
              top: int = 2):
  """Returns `fn(params, audio, audio_len) -> dict` (see `common.result`).

  Args:
    model: a `SpeechLLaMA` with K heads (K=1: plain greedy).
    max_new_tokens: static cap on emitted tokens (EOS excluded).
    paths: tree as rank tuples (default `default_tree(K, top)`); depth <= K-1.
    top: top-k per head used by the default tree.
  """
  k = model.cfg.mtp.num_heads
  if k == 1:
    return make_greedy(model, max_new_tokens=max_new_tokens)
  n = max_new_tokens
  paths = paths or default_tree(k, top)
  depth_np, parent_np, rank_np, anc_np = tree_arrays(paths)
  if depth_np.max() > k - 1:
    raise ValueError(f"mtp_jax/decode/tree.py: tree depth {depth_np.max()} > K-1={k - 1}")
  kmax = int(rank_np.max()) + 1
  t = len(depth_np)
  depth, parent, anc = jnp.asarray(depth_np), jnp.asarray(parent_np), jnp.asarray(anc_np)
  node_head = jnp.asarray(np.maximum(depth_np - 1, 0))   # index into heads 2..K
  node_rank = jnp.asarray(rank_np)

  def candidates(logits):
    """Heads' logits [B, K, V] at the last accepted position -> heads 2..K's top-k
    tokens [B, K-1, kmax]."""
    return jax.lax.top_k(logits[:, 1:], kmax)[1].astype(jnp.int32)

  def fn(params, audio, audio_len):
    f = common.model_fns(model, params)
    b = audio.shape[0]
    out0, cache = f.prefill(audio, audio_len, common.bos(b), common.max_text_len(n, t))
    corr = jnp.argmax(out0["logits"][:, 0, 0], axis=-1).astype(jnp.int32)
    done0 = audio_len <= 0
    e = common.emit(jnp.zeros((b, n + k + 1), jnp.int32), jnp.zeros((b,), jnp.int32), done0,
                    corr[:, None], jnp.ones((b,), jnp.int32), n)
    state = dict(cache=cache, ti=jnp.ones((b,), jnp.int32), corr=corr,
                 cand=candidates(out0["logits"][:, 0]), out=e.out, n_out=e.n_out, done=e.done,
                 calls=jnp.where(done0, 0, 1).astype(jnp.int32), total=jnp.int32(1),
                 accepted=jnp.zeros((b, k), jnp.int32).at[:, 0].set(e.kept))

    def cond(s):
      return jnp.any(~s["done"]) & (s["total"] <= n)

    def body(s):
      node_tok = s["cand"][:, node_head, node_rank]                     # [B, T]
      tokens = node_tok.at[:, 0].set(s["corr"])
      out, cache = model.apply(params, tokens, s["ti"], s["cache"], anc, depth,
                               method=_tree_step)
      g = jnp.argmax(out["logits"][:, :, 0], axis=-1).astype(jnp.int32)  # [B, T]
      # ok[q]: node q's token equals head 1's argmax at its parent; accepted: all ancestors ok.
      ok = (tokens == jnp.take(g, jnp.maximum(parent, 0), axis=1)) | (parent < 0)[None]
      acc = jnp.all(ok[:, None, :] | ~anc[None], axis=2)               # [B, T]
      a = jnp.max(jnp.where(acc, depth[None], -1), axis=1)              # accepted drafts
      q = jnp.argmax(acc & (depth[None] == a[:, None]), axis=1)         # deepest accepted node
      on_path = anc[q]                                                  # [B, T]
      # Path node at each depth 0..K-1 (root at 0); beyond a: the root (unused).
      path = jnp.argmax(on_path[:, None, :] & (depth[None, None, :] == jnp.arange(k)[None, :, None]),
                        axis=2)                                         # [B, K]
      corr = jnp.take_along_axis(g, q[:, None], axis=1)[:, 0]
      path_tok = jnp.take_along_axis(tokens, path, axis=1)              # [B, K]
      pos = jnp.arange(k)[None]
      block = jnp.where(pos < a[:, None], jnp.roll(path_tok, -1, axis=1), corr[:, None])
      e = common.emit(s["out"], s["n_out"], s["done"], block, a + 1, n)
      live = ~s["done"]
      p = cache["prefix_valid"].shape[1]
      cache = _compact(cache, p + s["ti"], path, t)
      heads_ok = jnp.arange(1, k)[None] <= jnp.minimum(a, e.kept)[:, None]
      got = jnp.concatenate([(e.kept > a)[:, None], heads_ok], axis=1).astype(jnp.int32)
      return dict(cache=cache, ti=s["ti"] + jnp.where(live, a + 1, 0), corr=corr,
                  cand=candidates(common.take_position(out["logits"], q)), out=e.out, n_out=e.n_out, done=e.done,
                  calls=s["calls"] + live.astype(jnp.int32), total=s["total"] + 1,
                  accepted=s["accepted"] + got * live[:, None])

    s = jax.lax.while_loop(cond, body, state)
    return common.result(s["out"], s["n_out"], s["calls"], s["total"], s["accepted"], n)

  return fn
