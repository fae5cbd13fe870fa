"""Properties of the synthetic generator at a small scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dgi.data import Dataset, generate_synthetic, load_dataset

SMALL = {"n_items": 500, "n_examples": 4000}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return generate_synthetic(**SMALL, seed=0)


def all_examples(dataset: Dataset) -> list:
    return [example for split in ("train", "valid", "test") for example in dataset.splits[split]]


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_deterministic_for_a_seed(tmp_path: Path, dataset: Dataset) -> None:
    dataset.save(tmp_path / "first")
    generate_synthetic(**SMALL, seed=0).save(tmp_path / "again")
    generate_synthetic(**SMALL, seed=1).save(tmp_path / "other")
    first = file_bytes(tmp_path / "first")
    assert first == file_bytes(tmp_path / "again")
    other = file_bytes(tmp_path / "other")
    assert all(first[name] != other[name] for name in first)


def test_saved_dataset_passes_validation(tmp_path: Path, dataset: Dataset) -> None:
    dataset.save(tmp_path)
    assert load_dataset(tmp_path) == dataset


def test_split_sizes_and_time_order(dataset: Dataset) -> None:
    sizes = {name: len(examples) for name, examples in dataset.splits.items()}
    assert sizes == {"train": 3200, "valid": 400, "test": 400}
    times = {name: [e.timestamp for e in examples] for name, examples in dataset.splits.items()}
    assert max(times["train"]) <= min(times["valid"])
    assert max(times["valid"]) <= min(times["test"])


def test_zero_shot_items_only_after_train(dataset: Dataset) -> None:
    zero_shot = set(dataset.meta["zero_shot_item_ids"])
    assert len(zero_shot) == dataset.meta["counts"]["zero_shot_items"] == 20
    for example in dataset.splits["train"]:
        assert example.target not in zero_shot
        assert zero_shot.isdisjoint(example.history)
    assert any(example.target in zero_shot for example in dataset.splits["test"])
    assert dataset.popularity()[[dataset.item_index[i] for i in zero_shot]].sum() == 0


def test_popularity_is_long_tailed(dataset: Dataset) -> None:
    counts = np.sort(dataset.popularity())[::-1]
    top = counts[: len(counts) // 5].sum()
    assert top > 0.45 * counts.sum()


def test_query_and_history_shares(dataset: Dataset) -> None:
    examples = all_examples(dataset)
    no_query = sum(e.query is None for e in examples) / len(examples)
    no_history = sum(not e.history for e in examples) / len(examples)
    assert 0.10 < no_query < 0.20
    assert 0.10 < no_history < 0.20
    assert all(e.query is not None or e.history for e in examples)
    assert max(len(e.history) for e in examples) == 20


def test_queries_have_two_to_four_words(dataset: Dataset) -> None:
    lengths = {len(e.query.split()) for e in all_examples(dataset) if e.query is not None}
    assert lengths == {2, 3, 4}


def test_catalog_texts_are_topical_and_diverse(dataset: Dataset) -> None:
    texts = [item.text for item in dataset.items]
    assert len(set(texts)) > 0.98 * len(texts)
    assert len({item.fields["category"] for item in dataset.items}) >= 12
    assert all(item.text.startswith(item.fields["brand"]) for item in dataset.items)


def test_history_is_informative(dataset: Dataset) -> None:
    category = {item.id: item.fields["category"] for item in dataset.items}
    with_history = [e for e in all_examples(dataset) if e.history]
    same = np.mean([category[e.target] == category[e.history[-1]] for e in with_history])
    assert same > 0.5  # about 1/14 if consecutive items were unrelated
