"""Conversion of examples to padded integer arrays."""

from __future__ import annotations

import numpy as np
import pytest

from dgi.data import Example, to_arrays

INDEX = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
EXAMPLES = [
    Example("a", ("b", "c", "d", "e"), "red shoe", id="x1"),  # longer than max_history
    Example("b", ("c",), None, id="x2"),
    Example("c", (), "mug", id="x3"),
    Example("d", ("a", "b"), "red shoe", id="x4"),
    Example("e", ("e", "a", "d"), "", id="x5"),  # empty query counts as none
]


def test_history_keeps_most_recent_items_last_and_left_pads() -> None:
    arrays = to_arrays(EXAMPLES, INDEX, max_history=3)
    assert arrays.history.dtype == np.int64
    assert arrays.history.tolist() == [
        [2, 3, 4],
        [-1, -1, 2],
        [-1, -1, -1],
        [-1, 0, 1],
        [4, 0, 3],
    ]
    assert arrays.targets.tolist() == [0, 1, 2, 3, 4]
    assert arrays.targets.dtype == np.int64
    assert arrays.example_ids == ["x1", "x2", "x3", "x4", "x5"]


def test_queries_are_deduplicated_in_first_seen_order() -> None:
    arrays = to_arrays(EXAMPLES, INDEX, max_history=3)
    assert arrays.query_texts == ["red shoe", "mug"]
    assert arrays.query_ids.tolist() == [0, -1, 1, 0, -1]
    assert arrays.query_ids.dtype == np.int64


def test_zero_history_and_no_examples() -> None:
    assert to_arrays(EXAMPLES, INDEX, max_history=0).history.shape == (5, 0)
    empty = to_arrays([], INDEX, max_history=4)
    assert empty.history.shape == (0, 4) and empty.targets.shape == (0,)
    assert empty.query_texts == [] and empty.example_ids == []
    with pytest.raises(ValueError, match="max_history"):
        to_arrays(EXAMPLES, INDEX, max_history=-1)
