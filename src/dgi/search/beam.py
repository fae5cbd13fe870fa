"""Constrained beam search over Semantic IDs and the coarse-to-fine item ranking rules.

Each function has a slow, loop-based ``reference_*`` twin with identical semantics; the tests
check that the fast versions match them exactly, ties included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from dgi.search.index import SIDIndex

StepFn = Callable[[Tensor, Tensor | None], Tensor]
"""(prefixes [B, W, j] long, parents [B, W] long or None at j = 0) -> log-probs [B, W, K_{j+1}] over
the full next codebook.

``parents[b, w]`` is the position, among the prefixes of query b at the previous call, of beam w's
parent (its prefix minus the last code): a step function that keeps per-beam state (the decoder's
keys/values) gathers it from there instead of recomputing the prefix. Each output row must depend
only on its query (row b) and its prefix, not on its position w: implementations order beams
differently (the fast search keeps them in SID-key order), and W shrinks to the most beams any query
still has. Rows of missing beams hold arbitrary in-range codes and parents; their outputs are
ignored. Log-probs must not be NaN.
"""

RULES = ("lexicographic", "fused", "rerank")


@dataclass
class Beams:
    """Generated SIDs per query, best first (score desc, then SID key asc)."""

    codes: Tensor  # [B, W, m] long, -1 for missing beams
    scores: Tensor  # [B, W] summed log-probs of the chosen codes (not renormalized), -inf if missing
    # Per level j, the prefixes [B, W_j, j+1] the search kept (-1 rows where missing, any order): which
    # level lost a target (beam recall); empty when the search ended early.
    levels: tuple[Tensor, ...] = ()


@dataclass
class Ranking:
    """Top-k items per query, -1 padded."""

    items: Tensor  # [B, k] long item ids
    beam_scores: Tensor  # [B, k] log-prob of the item's SID beam (-inf for padding)
    cosines: Tensor  # [B, k] query-item cosine (nan for padding)
    scores: Tensor  # [B, k] the rule's final score (-inf for padding)


def beam_search(step_fn: StepFn, batch_size: int, index: SIDIndex, beam_size: int,
                constrained: bool = True) -> Beams:
    """Beam search with one batched ``step_fn`` call per level and no loop over queries or beams.

    Candidates are identified by their slot w * K + c in the dense [W, K] children layout.
    Invariant: the live beams of each query are kept in ascending SID-key order, so ascending
    slots are ascending keys, and a selection that breaks score ties by slot breaks them by key.
    """
    _check_beam_size(beam_size)
    codes = torch.zeros(batch_size, 1, 0, dtype=torch.long)
    scores = torch.zeros(batch_size, 1)
    nodes = torch.zeros(batch_size, 1, dtype=torch.long)  # each beam's node in the SID tree (the root)
    parents = None
    levels = []
    for j, size in enumerate(index.codebook_sizes):
        logp = _checked_step(step_fn, codes, parents, size)
        scores = scores.to(logp.dtype)
        if constrained:
            cand, slots, cand_nodes = _valid_candidates(index, j, nodes, scores, logp)
        else:  # every child is a candidate: the dense layout itself, dead beams already -inf
            cand, slots, cand_nodes = (scores.unsqueeze(-1) + logp).reshape(batch_size, -1), None, None
        # Next width: the most finite candidates any query has, capped at beam_size.
        n_next = min(beam_size, int((cand > float("-inf")).sum(1).max()) if cand.numel() else 0)
        if n_next == 0:
            return _missing(batch_size, beam_size, index.depth, logp.dtype)
        pos = _top_positions(cand, n_next)
        slot = pos if slots is None else slots.gather(1, pos)
        parents, child = slot // size, slot % size
        codes = torch.cat([codes.gather(1, parents.unsqueeze(-1).expand(-1, -1, j)), child.unsqueeze(-1)], -1)
        scores = cand.gather(1, pos)
        dead = scores == float("-inf")
        if cand_nodes is not None:
            nodes = cand_nodes.gather(1, pos).masked_fill(dead, -1)
        levels.append(codes.masked_fill(dead.unsqueeze(-1), -1))
    # Stable sort on the key-ordered beams: score desc, then key asc.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    scores = scores.gather(1, order)
    codes = codes.gather(1, order.unsqueeze(-1).expand_as(codes))
    codes = codes.masked_fill((scores == float("-inf")).unsqueeze(-1), -1)
    return replace(_pad_beams(Beams(codes, scores), beam_size), levels=tuple(levels))


def _valid_candidates(index: SIDIndex, depth: int, nodes: Tensor, scores: Tensor,
                      logp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Scores of the valid children of live beams only, packed per query into [B, C] (-inf padded),
    with their slots w * K + c (ascending within a row) and their tree nodes (-1 padded).

    Work after the model call scales with the number of valid children, not with W * K.
    """
    batch, width, size = logp.shape
    # Dead beams already sit at node -1 (no children): `beam_search` marks them.
    child, child_node, beam = index.children(nodes.reshape(-1), depth)  # beam: flat b * W + w of each candidate
    value = scores.reshape(-1).index_select(0, beam) + logp.reshape(-1).index_select(0, beam * size + child)
    query = beam // width
    column, n_cols = _layout(query, batch)
    shape = (batch, n_cols)
    return (_scatter(query, column, value, shape, float("-inf")),
            _scatter(query, column, (beam % width) * size + child, shape, 0),
            _scatter(query, column, child_node, shape, -1))


def _layout(rows: Tensor, n_rows: int, min_cols: int = 0) -> tuple[Tensor, int]:
    """Columns that pack row-sorted entries left-aligned into [n_rows, n_cols], and n_cols."""
    if n_rows == 1:  # one query (interactive search): its entries are the columns
        return torch.arange(rows.numel()), max(rows.numel(), min_cols)
    counts = torch.bincount(rows, minlength=n_rows)
    column = torch.arange(rows.numel()) - (counts.cumsum(0) - counts).index_select(0, rows)
    return column, max(int(counts.max()) if rows.numel() else 0, min_cols)


def _scatter(rows: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int], fill: float) -> Tensor:
    if shape == (1, values.numel()):  # one query, no padding: `_layout` made its entries the columns
        return values.view(shape)
    out = torch.full(shape, fill, dtype=values.dtype)
    out[rows, cols] = values
    return out


def _top_positions(flat: Tensor, k: int) -> Tensor:
    """Ascending positions of the k best entries per row, ties going to the earlier position.

    A topk finds the k-th best value t; everything above t is taken, plus the first entries equal
    to t up to k. Linear time, unlike a full sort of all W * K candidates.
    """
    t = flat.topk(k, dim=1).values[:, -1:]
    above = flat > t
    at = flat == t
    need = k - above.sum(1, keepdim=True)
    chosen = above | (at & (at.cumsum(1) <= need))
    return chosen.nonzero()[:, 1].view(flat.shape[0], k)


def reference_beam_search(step_fn: StepFn, batch_size: int, index: SIDIndex, beam_size: int,
                          constrained: bool = True) -> Beams:
    """Obviously correct beam search: Python loops, tuples and a set of valid prefixes."""
    _check_beam_size(beam_size)
    sizes = index.codebook_sizes
    sids = [tuple(sid) for sid in index.codes.tolist()]
    valid = {sid[:j] for sid in sids for j in range(len(sizes) + 1)}
    # Per query: (prefix, score, position of the parent among the previous level's beams).
    beams: list[list[tuple[tuple[int, ...], Tensor | float, int]]] = [[((), 0.0, 0)] for _ in range(batch_size)]
    levels: list[Tensor] = []
    dtype = torch.float32
    for j in range(len(sizes)):
        width = max((len(query) for query in beams), default=0)
        if width == 0:
            break
        prefixes = torch.zeros(batch_size, width, j, dtype=torch.long)
        parents = torch.zeros(batch_size, width, dtype=torch.long)
        for b, query in enumerate(beams):
            for w, (prefix, _, parent) in enumerate(query):
                prefixes[b, w] = torch.tensor(prefix, dtype=torch.long)
                parents[b, w] = parent
        logp = _checked_step(step_fn, prefixes, parents if j else None, sizes[j])
        dtype = logp.dtype
        new_beams = []
        for b, query in enumerate(beams):
            candidates = []
            for w, (prefix, score, _) in enumerate(query):
                row = score + logp[b, w]  # same dtype arithmetic as the fast version
                for c, value in enumerate(row.tolist()):
                    child = prefix + (c,)
                    if value == float("-inf") or (constrained and child not in valid):
                        continue
                    candidates.append((-value, _reference_key(child, sizes), child, row[c], w))
            candidates.sort(key=lambda cand: (cand[0], cand[1]))
            new_beams.append([(child, score, w) for _, _, child, score, w in candidates[:beam_size]])
        beams = new_beams
        levels.append(_reference_prefixes(beams, j + 1))
    finished = len(levels) == len(sizes) and any(beams)  # else the fast search returns no levels
    out = _missing(batch_size, beam_size, len(sizes), dtype)
    for b, query in enumerate(beams):
        for w, (prefix, score, _) in enumerate(query):
            out.codes[b, w] = torch.tensor(prefix)
            out.scores[b, w] = score
    return replace(out, levels=tuple(levels) if finished else ())


def _reference_prefixes(beams: list[list[tuple[tuple[int, ...], Tensor | float, int]]], depth: int) -> Tensor:
    out = torch.full((len(beams), max((len(query) for query in beams), default=0), depth), -1, dtype=torch.long)
    for b, query in enumerate(beams):
        for w, (prefix, _, _) in enumerate(query):
            out[b, w] = torch.tensor(prefix)
    return out


def rank_items(beams: Beams, index: SIDIndex, query_vectors: Tensor, item_vectors: Tensor, k: int,
               rule: str = "lexicographic", fusion_weight: float = 1.0) -> Ranking:
    """Rank the items of the generated SID buckets; vectorized over queries and candidates.

    Candidates are laid out query by query, beam by beam, ids ascending inside a bucket (CSR order
    of ``index.items_of``), then padded into a [B, max_candidates] matrix and ordered with stable
    sorts from the least to the most significant key.
    """
    _check_rank_args(beams, query_vectors, k, rule)
    batch, width = beams.scores.shape
    alive = beams.scores.reshape(-1) > float("-inf")
    flat_codes = beams.codes.reshape(-1, index.depth)
    items, offsets = index.items_of(flat_codes.masked_fill(~alive.unsqueeze(-1), -1))
    counts = offsets.diff()
    beam_of = torch.repeat_interleave(torch.arange(batch * width), counts)
    query_of = beam_of // width
    cos = (query_vectors.index_select(0, query_of) * item_vectors.index_select(0, items)).sum(-1)

    column, n_cols = _layout(query_of, batch, k)

    def matrix(values: Tensor, fill: float) -> Tensor:
        return _scatter(query_of, column, values, (batch, n_cols), fill)

    item_m = matrix(items, -1)
    beam_m = matrix(beams.scores.reshape(-1).index_select(0, beam_of), float("-inf"))
    cos_m = matrix(cos, float("nan"))
    if rule == "lexicographic":
        score_m = beam_m
        # Already ids ascending inside each bucket; then cosine desc; then beam order (padding last).
        rank_m = matrix(beam_of % width, width)
        order = _stable_order(cos_m, descending=True)
        order = _stable_order(rank_m, descending=False, order=order)
    else:
        score_m = cos_m if rule == "rerank" else beam_m + fusion_weight * cos_m
        padding = item_m < 0
        score_m = score_m.masked_fill(padding, float("-inf"))
        order = _stable_order(item_m.masked_fill(padding, index.n_items), descending=False)
        order = _stable_order(score_m, descending=True, order=order)
    order = order[:, :k]
    return Ranking(item_m.gather(1, order), beam_m.gather(1, order), cos_m.gather(1, order),
                   score_m.gather(1, order))


def _stable_order(key: Tensor, descending: bool, order: Tensor | None = None) -> Tensor:
    """Stable sort of rows by ``key``, refining a previous ``order`` (least significant key first)."""
    if order is None:
        return torch.sort(key, dim=1, descending=descending, stable=True).indices
    inner = torch.sort(key.gather(1, order), dim=1, descending=descending, stable=True).indices
    return order.gather(1, inner)


def reference_rank_items(beams: Beams, index: SIDIndex, query_vectors: Tensor, item_vectors: Tensor, k: int,
                         rule: str = "lexicographic", fusion_weight: float = 1.0) -> Ranking:
    """Obviously correct ranking: a dict from SID to items and Python sorts per query."""
    _check_rank_args(beams, query_vectors, k, rule)
    bucket: dict[tuple[int, ...], list[int]] = {}
    for item, sid in enumerate(index.codes.tolist()):
        bucket.setdefault(tuple(sid), []).append(item)
    batch = beams.scores.shape[0]
    dtype = torch.promote_types(query_vectors.dtype, item_vectors.dtype)
    score_dtype = {"lexicographic": beams.scores.dtype, "rerank": dtype,
                   "fused": torch.promote_types(beams.scores.dtype, dtype)}[rule]
    out = Ranking(torch.full((batch, k), -1, dtype=torch.long),
                  torch.full((batch, k), float("-inf"), dtype=beams.scores.dtype),
                  torch.full((batch, k), float("nan"), dtype=dtype),
                  torch.full((batch, k), float("-inf"), dtype=score_dtype))
    for b in range(batch):
        candidates = []  # (sort key, item, beam score, cosine, final score)
        for w, (sid, beam_score) in enumerate(zip(beams.codes[b].tolist(), beams.scores[b].tolist())):
            if beam_score == float("-inf"):
                continue
            for item in bucket.get(tuple(sid), []):
                cos = torch.dot(query_vectors[b], item_vectors[item]).item()
                final = {"lexicographic": beam_score, "fused": beam_score + fusion_weight * cos, "rerank": cos}[rule]
                key = (w, -cos, item) if rule == "lexicographic" else (-final, item)
                candidates.append((key, item, beam_score, cos, final))
        candidates.sort(key=lambda cand: cand[0])
        for r, (_, item, beam_score, cos, final) in enumerate(candidates[:k]):
            out.items[b, r], out.beam_scores[b, r], out.cosines[b, r], out.scores[b, r] = item, beam_score, cos, final
    return out


def _checked_step(step_fn: StepFn, prefixes: Tensor, parents: Tensor | None, size: int) -> Tensor:
    logp = step_fn(prefixes, parents)
    expected = (*prefixes.shape[:2], size)
    if tuple(logp.shape) != expected:
        raise ValueError(f"step_fn returned shape {tuple(logp.shape)}, expected {expected}")
    return logp


def _check_beam_size(beam_size: int) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")


def _check_rank_args(beams: Beams, query_vectors: Tensor, k: int, rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if query_vectors.shape[0] != beams.scores.shape[0]:
        raise ValueError(f"{query_vectors.shape[0]} query vectors for {beams.scores.shape[0]} queries")


def _missing(batch_size: int, beam_size: int, depth: int, dtype: torch.dtype) -> Beams:
    return Beams(torch.full((batch_size, beam_size, depth), -1, dtype=torch.long),
                 torch.full((batch_size, beam_size), float("-inf"), dtype=dtype))


def _pad_beams(beams: Beams, beam_size: int) -> Beams:
    """Pad the beam dimension to ``beam_size`` with missing beams."""
    batch, width, depth = beams.codes.shape
    pad = _missing(batch, beam_size - width, depth, beams.scores.dtype)
    return Beams(torch.cat([beams.codes, pad.codes], 1), torch.cat([beams.scores, pad.scores], 1))


def _reference_key(prefix: tuple[int, ...], sizes: tuple[int, ...]) -> int:
    key = 0
    for code, size in zip(prefix, sizes):
        key = key * size + code
    return key
