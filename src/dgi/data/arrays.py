"""Integer, tensor-ready form of examples, built once so training loops never touch strings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dgi.data.schema import Example

PAD = -1


@dataclass
class ExampleArrays:
    """Examples as aligned arrays; row i of every array describes example i."""

    targets: np.ndarray  # int64 [n]: item index
    history: np.ndarray  # int64 [n, max_history]: most recent item last, left-padded with PAD
    query_ids: np.ndarray  # int64 [n]: index into query_texts, PAD for no query
    query_texts: list[str]  # unique non-empty queries, first-seen order (each encoded once)
    example_ids: list[str]
    # Graded relevance (item index -> relevance) per example, for metrics; None when no example
    # has `relevant`, so single-target datasets keep the cheaper `targets` path.
    qrels: list[dict[int, float]] | None = None


def to_arrays(
    examples: Sequence[Example], item_index: Mapping[str, int], max_history: int
) -> ExampleArrays:
    """Index examples, keeping only the `max_history` most recent history items."""
    if max_history < 0:
        raise ValueError(f"max_history must be >= 0, got {max_history}")
    n = len(examples)
    # history[-0:] would be the whole tuple, hence the explicit zero case.
    kept = [example.history[-max_history:] if max_history else () for example in examples]
    lengths = np.fromiter(map(len, kept), dtype=np.int64, count=n)
    total = int(lengths.sum())
    flat = np.fromiter((item_index[item_id] for history in kept for item_id in history),
                       dtype=np.int64, count=total)
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(np.arange(n), lengths)
    position = np.arange(total) - np.repeat(starts, lengths)
    history = np.full((n, max_history), PAD, dtype=np.int64)
    history[rows, max_history - lengths[rows] + position] = flat

    query_index: dict[str, int] = {}
    query_ids = np.fromiter(
        (query_index.setdefault(example.query, len(query_index)) if example.query else PAD
         for example in examples),
        dtype=np.int64, count=n)
    return ExampleArrays(
        targets=np.fromiter((item_index[example.target] for example in examples),
                            dtype=np.int64, count=n),
        history=history,
        query_ids=query_ids,
        query_texts=list(query_index),
        example_ids=[example.id for example in examples],
        qrels=_qrels(examples, item_index),
    )


def _qrels(examples: Sequence[Example], item_index: Mapping[str, int]) -> list[dict[int, float]] | None:
    """Each example's `relevant` in item indices; {target: 1.0} for examples without one."""
    if all(example.relevant is None for example in examples):
        return None
    return [{item_index[item_id]: grade for item_id, grade in example.relevant.items()}
            if example.relevant is not None else {item_index[example.target]: 1.0}
            for example in examples]
