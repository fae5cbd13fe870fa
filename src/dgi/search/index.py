"""The SID table: which Semantic IDs exist, which items share them, and which prefixes are valid.

Every lookup structure is a sorted int64 tensor of mixed-radix keys; codes and item ids are kept in
the smallest integer type that holds them (memory per item is what a large catalogue pays). The
children of a prefix with key p are exactly the keys in [p * K, (p + 1) * K) one level down, and the
items of a SID with key s sit in [s, s + 1) of the sorted item keys, so every lookup is two
``torch.searchsorted`` calls per query row (never one per candidate code, never a scan over all
items) plus a CSR expansion.

Beam search walks the same tables as a tree instead: node n of depth j is the n-th distinct length-j
prefix in key order, so a node's children are a contiguous run of depth-(j+1) nodes and one gather of
two offsets finds them (``children``), with no key arithmetic and no search per step.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import torch
from dgi.io import CorruptFileError, load_tensors, read_metadata, save_tensors

_INT64_MAX = 2**63 - 1


class SIDIndex:
    """SID -> items table and valid-prefix structure, all as tensors.

    Query methods (``valid_next``, ``is_valid``, ``items_of``) treat a code outside its codebook
    (e.g. the -1 padding of missing beams) as an unknown SID; ``build``, ``add_items`` and
    ``sid_keys`` reject such codes with a ValueError.
    """

    codebook_sizes: tuple[int, ...]
    codes: torch.Tensor

    def __init__(self, codes: torch.Tensor, codebook_sizes: Sequence[int]) -> None:
        """Prefer ``build``, which validates; this trusts ``codes`` and ``codebook_sizes``."""
        self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
        self._sizes = torch.tensor(self.codebook_sizes, dtype=torch.long)
        self.codes = codes
        self._rebuild()

    @classmethod
    def build(cls, codes: torch.Tensor, codebook_sizes: Sequence[int]) -> SIDIndex:
        """Validate sizes and codes, then index them (item i gets row i's SID)."""
        sizes = tuple(int(k) for k in codebook_sizes)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"codebook sizes must be a non-empty list of positive ints, got {sizes}")
        if math.prod(sizes) > _INT64_MAX:
            raise ValueError(f"prod(codebook_sizes) = {math.prod(sizes)} does not fit in int64 keys")
        return cls(_item_codes(codes, torch.tensor(sizes)), sizes)

    @property
    def n_items(self) -> int:
        return self.codes.shape[0]

    @property
    def depth(self) -> int:
        return len(self.codebook_sizes)

    # ---------------------------------------------------------------- keys and lookups

    def sid_keys(self, codes: torch.Tensor) -> torch.Tensor:
        """Mixed-radix key of prefixes ``codes[..., :j]``: ((c1*K2 + c2)*K3 + c3)... (0 for j = 0)."""
        return self._keys(_require_in_range(self._as_codes(codes), self._sizes))

    def valid_next(self, prefix_codes: torch.Tensor) -> torch.Tensor:
        """[..., j] prefixes -> [..., K_{j+1}] mask of codes that extend them to an existing prefix."""
        prefix_codes = self._as_codes(prefix_codes)
        codes, offsets = self.next_codes(prefix_codes)
        size = self.codebook_sizes[prefix_codes.shape[-1]]
        mask = torch.zeros(offsets.numel() - 1, size, dtype=torch.bool)
        mask[torch.repeat_interleave(offsets.diff()), codes] = True
        return mask.view(*prefix_codes.shape[:-1], size)

    def next_codes(self, prefix_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse ``valid_next``: CSR (codes, offsets) of the valid next codes, ascending, per prefix row.

        Rows are the leading dims of ``prefix_codes`` [..., j] flattened; row r's codes are
        ``codes[offsets[r]:offsets[r+1]]``.
        """
        codes, _, offsets = self.next_nodes(prefix_codes)
        return codes, offsets

    def next_nodes(self, prefix_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``next_codes`` plus the tree node (at depth j + 1) each valid next code leads to: CSR
        (codes, nodes, offsets), so per-node tables (``node_mass``) can be read for those children."""
        prefix_codes = self._as_codes(prefix_codes)
        j = prefix_codes.shape[-1]
        if j >= self.depth:
            raise ValueError(f"prefix length {j} leaves no next level (depth {self.depth})")
        size, table = self.codebook_sizes[j], self._prefix_keys[j + 1]
        keys = self._keys(self._clamped(prefix_codes)).reshape(-1)
        starts, counts = _ranges(table, keys * size, (keys + 1) * size)
        counts *= _in_range(prefix_codes, self._sizes).reshape(-1)
        nodes, offsets = _csr(starts, counts)  # a slot of the sorted depth-(j+1) prefix keys is that node's id
        return table.index_select(0, nodes) % size, nodes, offsets

    def is_valid(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., m] SIDs -> bool mask of those that belong to at least one item."""
        codes = self._as_codes(codes, full=True)
        keys = self._keys(self._clamped(codes))
        return (_ranges(self._sorted_keys, keys, keys + 1)[1] > 0) & _in_range(codes, self._sizes)

    def items_of(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR lookup of full SIDs [n, m]: (item ids, offsets [n + 1]); bucket r is ids[off[r]:off[r+1]].

        Items inside a bucket are in ascending id order; unknown SIDs get empty buckets.
        """
        codes = self._as_codes(codes, full=True)
        if codes.dim() != 2:
            raise ValueError(f"items_of expects [n, m] codes, got shape {tuple(codes.shape)}")
        keys = self._keys(self._clamped(codes))
        starts, counts = _ranges(self._sorted_keys, keys, keys + 1)
        slots, offsets = _csr(starts, counts * _in_range(codes, self._sizes))
        return self._bucket_items.index_select(0, slots).long(), offsets

    # ---------------------------------------------------------------- the SID tree

    def children(self, nodes: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Children of depth-``depth`` tree nodes [n] (-1: no node): their last codes, their node ids (at
        depth + 1) and the row of ``nodes`` each belongs to; ascending codes within a row, rows in order.

        The root (depth 0) is node 0 and exists even in an empty index (with no children).
        """
        if not 0 <= depth < self.depth:
            raise ValueError(f"tree depth {depth} has no children (index depth {self.depth})")
        child, row = self._expand(self._child_starts[depth], nodes)
        return self._child_codes[depth].index_select(0, child).long(), child, row

    @staticmethod
    def _expand(starts: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The slots starts[n] .. starts[n + 1] of every node n (none for -1) and the row of each slot."""
        at = nodes.clamp(min=0)
        first = starts.index_select(0, at)
        return _slots(first, (starts.index_select(0, at + 1) - first) * (nodes >= 0))

    def node_mass(self, item_weights: torch.Tensor) -> list[torch.Tensor]:
        """Per depth d = 0..m, the summed ``item_weights`` [n_items] of the items under each depth-d
        node, in node order (depth 0 is the root alone): a node's mass is the sum of its children's."""
        if item_weights.shape != (self.n_items,):
            raise ValueError(f"item_weights must have shape ({self.n_items},), got {tuple(item_weights.shape)}")
        weights = item_weights.double().index_select(0, self._bucket_items.long())  # in sorted SID-key order
        mass, keys = [], self._sorted_keys
        for depth in range(self.depth, -1, -1):
            table = self._prefix_keys[depth]
            n_nodes = max(len(table), 1) if depth == 0 else len(table)  # the root exists even when empty
            mass.insert(0, torch.zeros(n_nodes, dtype=torch.float64).index_add_(0, torch.searchsorted(table, keys), weights))
            if depth:
                keys = keys // self.codebook_sizes[depth - 1]
        return mass

    # ---------------------------------------------------------------- growth and statistics

    def add_items(self, codes: torch.Tensor) -> torch.Tensor:
        """Append items with the given SIDs (no retraining needed) and return their new ids."""
        new = _item_codes(codes, self._sizes)
        start = self.n_items
        self.codes = torch.cat([self.codes, new])
        self._rebuild()
        return torch.arange(start, self.n_items)

    def keep_items(self, keep: torch.Tensor) -> None:
        """Keep the items where the bool mask `keep` [n_items] is true; later items move down to fill the gaps."""
        self.codes = self.codes[keep]
        self._rebuild()

    def collision_stats(self) -> dict:
        """How much SIDs collide: a SID bucket with several items cannot separate them by generation."""
        bucket_sizes = torch.unique_consecutive(self._sorted_keys, return_counts=True)[1]
        n_items, n_sids = self.n_items, bucket_sizes.numel()
        return {
            "n_items": n_items,
            "n_sids": n_sids,
            "unique_share": (bucket_sizes == 1).sum().item() / n_items if n_items else 0.0,
            "collision_rate": 1.0 - n_sids / n_items if n_items else 0.0,
            "largest_bucket": int(bucket_sizes.max()) if n_sids else 0,
            "mean_bucket_size": n_items / n_sids if n_sids else 0.0,
        }

    def code_usage(self) -> list[dict]:
        """Per level: share of the codebook used and perplexity of codes over items (codebook collapse check)."""
        usage = []
        for level, size in enumerate(self.codebook_sizes):
            counts = torch.bincount(self.codes[:, level], minlength=size).double()
            p = counts[counts > 0] / max(self.n_items, 1)
            usage.append({
                "level": level,
                "codebook_size": size,
                "used": (counts > 0).sum().item() / size,
                "perplexity": math.exp(-(p * p.log()).sum().item()),
            })
        return usage

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write safetensors atomically, sizes in the metadata."""
        save_tensors(path, {"codes": self.codes.long()}, metadata={"codebook_sizes": json.dumps(list(self.codebook_sizes))})

    @classmethod
    def load(cls, path: str | os.PathLike) -> SIDIndex:
        """Read a file written by ``save`` (codes are re-validated)."""
        try:
            sizes = json.loads(read_metadata(path)["codebook_sizes"])
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise CorruptFileError(path, f"not a SID index written by dgi (no codebook sizes: {error})",
                                   "rerun training or restore the file") from None
        codes = load_tensors(path).get("codes")
        if codes is None:
            raise CorruptFileError(path, "not a SID index written by dgi (no codes)", "rerun training or restore the file")
        return cls.build(codes, sizes)

    # ---------------------------------------------------------------- internals

    def _rebuild(self) -> None:
        """Derive the sorted key tables from ``self.codes``.

        ``_sorted_keys`` are all items' SID keys in order and ``_bucket_items`` the matching item
        ids (ascending inside a bucket: stable sort); ``_prefix_keys[j]`` holds the sorted distinct
        keys of all length-j prefixes (j = 0..m). The tree: ``_child_starts[j][n]`` is the first child
        (a depth-(j+1) node id) of depth-j node n, with a final entry closing the last run (a node's
        children keys lie in [key * K, (key + 1) * K), so the runs are contiguous);
        ``_child_codes[j]`` the last code of each depth-(j+1) node.
        """
        self._sorted_keys, bucket_items = torch.sort(self._keys(self.codes), stable=True)
        self._bucket_items = bucket_items.to(torch.int32 if self.n_items < 2**31 else torch.int64)
        self._prefix_keys = [torch.unique_consecutive(self._sorted_keys)]
        for size in reversed(self.codebook_sizes):
            # Floor division by the last radix keeps keys sorted, so unique_consecutive suffices.
            self._prefix_keys.insert(0, torch.unique_consecutive(self._prefix_keys[0] // size))
        parents = [torch.zeros(1, dtype=torch.long), *self._prefix_keys[1:-1]]  # one root, even when empty
        self._child_starts = [_run_starts(children, keys * size)
                              for keys, children, size in zip(parents, self._prefix_keys[1:], self.codebook_sizes)]
        self._child_codes = [(children % size).to(self.codes.dtype)
                             for children, size in zip(self._prefix_keys[1:], self.codebook_sizes)]

    def _keys(self, codes: torch.Tensor) -> torch.Tensor:
        """Mixed-radix keys of in-range codes [..., j]."""
        keys = torch.zeros(codes.shape[:-1], dtype=torch.long)
        for level in range(codes.shape[-1]):
            keys = keys * self.codebook_sizes[level] + codes[..., level].long()
        return keys

    def _as_codes(self, codes: torch.Tensor, full: bool = False) -> torch.Tensor:
        """Shape/dtype check: integer [..., j] with j <= m (j == m when ``full``)."""
        codes = torch.as_tensor(codes)
        if codes.is_floating_point() or codes.is_complex() or codes.dim() == 0:
            raise ValueError(f"codes must be an integer tensor [..., j], got {codes.dtype} {tuple(codes.shape)}")
        j = codes.shape[-1]
        if j > self.depth or (full and j != self.depth):
            raise ValueError(f"got {j} code levels, index depth is {self.depth}")
        return codes.long()

    def _clamped(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes forced into range so keys stay well defined; callers mask the out-of-range rows."""
        return torch.minimum(codes.clamp(min=0), self._sizes[: codes.shape[-1]] - 1)


def _in_range(codes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Rows of ``codes`` [..., j] whose every code lies inside its codebook."""
    return ((codes >= 0) & (codes < sizes[: codes.shape[-1]])).all(-1)


def _require_in_range(codes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    ok = _in_range(codes, sizes)
    if not ok.all():
        bad = codes[~ok][0].tolist()
        raise ValueError(f"codes out of range for codebook sizes {tuple(sizes.tolist())}: e.g. {bad}")
    return codes


def _item_codes(codes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Validate a [n_items, m] integer code table."""
    codes = torch.as_tensor(codes)
    if codes.is_floating_point() or codes.is_complex() or codes.dim() != 2 or codes.shape[1] != len(sizes):
        raise ValueError(f"item codes must be an integer [n_items, {len(sizes)}] tensor, "
                         f"got {codes.dtype} {tuple(codes.shape)}")
    return _require_in_range(codes.long(), sizes).to(code_dtype(sizes.tolist()))


def code_dtype(codebook_sizes: Sequence[int]) -> torch.dtype:
    """The smallest signed integer type that holds every code: 6 bytes an item for 3 levels of 256, not 24."""
    largest = max(codebook_sizes, default=1) - 1
    return torch.int16 if largest <= 32767 else torch.int32 if largest <= 2**31 - 1 else torch.int64


def _ranges(table: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, count) of the entries of a sorted 1-D table that lie in [lo, hi), elementwise."""
    starts = torch.searchsorted(table, lo)
    return starts, torch.searchsorted(table, hi) - starts


def _run_starts(table: torch.Tensor, firsts: torch.Tensor) -> torch.Tensor:
    """Where each run of a sorted table begins, given each run's smallest possible value, plus len(table);
    no runs read as one empty run, so that looking up a missing node (-1, clamped to 0) stays in range."""
    end = torch.tensor([table.numel()])
    return torch.cat([torch.searchsorted(table, firsts) if firsts.numel() else end, end])


def _csr(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand row ranges [start, start + count) into flat table slots plus CSR offsets."""
    return _slots(starts, counts)[0], torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _slots(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand row ranges [start, start + count) into flat table slots and the row of each slot."""
    row = torch.repeat_interleave(counts)
    # Slot = the row's start + rank within the row, the rank being (output position - row offset).
    return torch.arange(row.numel()) + (starts - (counts.cumsum(0) - counts)).index_select(0, row), row
