"""A validation split carved from train, for datasets that ship none (e.g. BEIR without dev qrels).

Without validation examples every epoch scores 0, so best-epoch selection keeps the first epoch
and ranking-rule selection has nothing to compare: a seeded share of the training queries is
moved to valid instead. Whole queries move, so no query text is on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dgi.data.beir import INDEXING_PREFIX
from dgi.data.loaders import Dataset
from dgi.data.schema import Example


def carve_validation(dataset: Dataset, ratio: float, seed: int, max_examples: int) -> Dataset:
    """A copy of `dataset` with min(round(ratio * n), max_examples) of its n training examples moved to
    an empty valid split (`dataset` itself when valid has examples).

    The unit is a query: every training example with the same query text (a BEIR query and its
    single-target expansions) moves together, an example without a query alone. Units are taken in
    a `seed`-ed permutation until enough examples moved; one unit always stays in train. Indexing
    examples (ids "index-...") are not queries and stay in train. In valid, the examples of one
    context (query and history) become one example judging all their targets (`_as_one`), as the
    loaders build validation examples. `meta["valid_carve"]` records the counts (examples 0 when
    nothing moved); popularity then counts the remaining training examples only.
    """
    if dataset.splits.get("valid"):
        return dataset
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"carve ratio must be in [0, 1], got {ratio}")
    train = dataset.splits["train"]
    units: dict[tuple[str, str], list[int]] = {}
    for position, example in enumerate(train):
        if not example.id.startswith(INDEXING_PREFIX):
            key = ("query", example.query) if example.query else ("id", example.id)
            units.setdefault(key, []).append(position)
    groups = list(units.values())
    candidates = sum(map(len, groups))
    wanted = min(round(ratio * candidates), max_examples)
    carved: set[int] = set()
    for unit in np.random.default_rng(seed).permutation(len(groups))[: len(groups) - 1]:
        if len(carved) >= wanted:
            break
        carved.update(groups[unit])
    contexts: dict[tuple, list[Example]] = {}
    for position in sorted(carved):
        example = train[position]
        contexts.setdefault((example.query, example.history), []).append(example)
    valid = [_as_one(examples) for examples in contexts.values()]
    info = {"ratio": ratio, "seed": seed, "max_examples": max_examples, "examples": len(carved),
            "of": candidates, "valid_examples": len(valid)}
    return Dataset(name=dataset.name, items=dataset.items,
                   splits={**dataset.splits, "train": [e for i, e in enumerate(train) if i not in carved],
                           "valid": valid},
                   meta={**dataset.meta, "valid_carve": info})


def _as_one(examples: Sequence[Example]) -> Example:
    """One evaluation example for a context: the first example, judging every target of the group
    (the highest grade where several examples judge an item), so a query counts once."""
    first = examples[0]
    if len(examples) == 1:
        return first
    relevant: dict[str, float] = {}
    for example in examples:
        for item_id, grade in (example.relevant or {example.target: 1.0}).items():
            relevant[item_id] = max(relevant.get(item_id, 0.0), grade)
    return Example(first.target, first.history, first.query, first.timestamp, first.id, relevant)


def carve_message(info: dict) -> str:
    """The console line for `meta["valid_carve"]`."""
    if not info["examples"]:
        return (f"dataset has no validation split and none was carved (data.valid_carve_ratio={info['ratio']}, "
                f"{info['of']} training examples): every epoch scores 0 on validation")
    return (f"dataset has no validation split: carved {info['examples']} of {info['of']} training examples "
            f"({info['examples'] / info['of']:.0%}, whole queries, seed {info['seed']}) as validation "
            f"({info['valid_examples']} example{'s' if info['valid_examples'] != 1 else ''})")
