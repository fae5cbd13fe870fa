"""Loading, validation errors and atomic writing of dataset directories."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from dgi.data import (
    DataError,
    Dataset,
    Example,
    Item,
    embedding_check,
    load_dataset,
    load_items,
    write_items,
)

ITEMS = ['{"id": "a", "text": "red shoe"}', '{"id": "b", "text": ""}',
         '{"id": "c", "text": "mug"}']
TRAIN = ['{"query": "shoe", "history": ["b"], "target": "a"}']
TEST = ['{"history": ["a", "b"], "target": "c"}']


def make_dir(tmp_path: Path, **files: list[str] | None) -> Path:
    """Write a dataset directory; a file given as None is left out."""
    contents = {"items": ITEMS, "train": TRAIN, "test": TEST} | files
    for name, lines in contents.items():
        if lines is not None:
            (tmp_path / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
    return tmp_path


def sample_dataset() -> Dataset:
    items = [
        Item("a", "Nordvik trail running shoe, blue", (0.5, -1.0, 2.0), {"brand": "Nordvik"}),
        Item("b", ""),
        Item("c", "ceramic mug, 350 ml", (0.0, 1e-9, 3.0), {"tags": ["kitchen", "mug"]}),
    ]
    splits = {
        "train": [Example("a", ("b",), "running shoe", 1.5e9, "t1"),
                  Example("a", (), "shoe", None, "t2"),
                  Example("c", ("a", "b"), None, 1.6e9, "t3")],
        "valid": [Example("b", ("a",), "empty title", None, "v1")],
        "test": [Example("c", ("a", "b", "a"), "mug", 1.7e9, "x1")],
    }
    return Dataset(name="tiny", items=items, splits=splits, meta={"source": "unit test"})


def test_round_trip(tmp_path: Path) -> None:
    dataset = sample_dataset()
    dataset.save(tmp_path / "out")
    loaded = load_dataset(tmp_path / "out")
    assert loaded == dataset
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "dataset.json", "items.jsonl", "test.jsonl", "train.jsonl", "valid.jsonl"]


def test_defaults_and_optional_files(tmp_path: Path) -> None:
    train = ['{"target": "a", "query": ""}', "", '{"target": "b", "query": null, "timestamp": 3}']
    dataset = load_dataset(make_dir(tmp_path, train=train))
    assert dataset.splits["train"] == [Example("a", id="train-1"),
                                       Example("b", timestamp=3.0, id="train-3")]
    assert dataset.splits["valid"] == []
    assert dataset.name == tmp_path.name and dataset.meta == {}
    assert dataset.items[1] == Item("b", "")
    assert dataset.item_index == {"a": 0, "b": 1, "c": 2}


def test_extra_item_keys_become_fields(tmp_path: Path) -> None:
    items = ['{"id": "a", "text": "t", "price": 9.5, "embedding": null}']
    assert load_items(make_dir(tmp_path, items=items) / "items.jsonl") == [
        Item("a", "t", None, {"price": 9.5})]


def test_popularity_counts_train_targets_only() -> None:
    popularity = sample_dataset().popularity()
    assert popularity.dtype == np.int64
    assert popularity.tolist() == [2, 0, 1]


BAD_CASES = [
    # (file, lines, expected message; the directory path is prefixed)
    ("items", ['{"id": "a", "text": "x"}', '{"id": "b", "text": '],
     "items.jsonl:2: invalid JSON"),
    ("items", ["[1, 2]"], "items.jsonl:1: expected a JSON object, got array"),
    ("items", ['{"text": "x"}'], "items.jsonl:1: field 'id': missing required field"),
    ("items", ['{"id": "a"}'], "items.jsonl:1: field 'text': missing required field"),
    ("items", ['{"id": "a", "text": 5}'],
     "items.jsonl:1: field 'text': expected a string, got number"),
    ("items", ['{"id": 7, "text": "x"}'],
     "items.jsonl:1: field 'id': expected a string, got number"),
    ("items", ['{"id": "", "text": "x"}'], "items.jsonl:1: field 'id': empty item id"),
    ("items", ['{"id": "B00X", "text": "x"}', '{"id": "c", "text": "y"}', "",
               '{"id": "B00X", "text": "z"}'],
     "items.jsonl:4: field 'id': duplicate item id 'B00X' (first seen on line 1)"),
    ("items", ["", "  "], "items.jsonl: no items"),
    ("items", ['{"id": "a", "text": "x", "embedding": [1.0, NaN]}'],
     "items.jsonl:1: field 'embedding': non-finite value nan at position 1"),
    ("items", ['{"id": "a", "text": "x", "embedding": [-Infinity]}'],
     "items.jsonl:1: field 'embedding': non-finite value -inf at position 0"),
    ("items", ['{"id": "a", "text": "x", "embedding": [1, "2"]}'],
     "items.jsonl:1: field 'embedding': expected a number at position 1, got string"),
    ("items", ['{"id": "a", "text": "x", "embedding": "0.1 0.2"}'],
     "items.jsonl:1: field 'embedding': expected an array of numbers, got string"),
    ("items", ['{"id": "a", "text": "x", "embedding": [1, 2]}', '{"id": "b", "text": "y"}',
               '{"id": "c", "text": "z", "embedding": [1, 2, 3]}'],
     "items.jsonl:3: field 'embedding': dimension 3 differs from dimension 2 on line 1"),
    ("train", ['{"target": "a"}', "{bad json}"], "train.jsonl:2: invalid JSON"),
    ("train", ['"a"'], "train.jsonl:1: expected a JSON object, got string"),
    ("train", ['{"query": "shoe"}'], "train.jsonl:1: field 'target': missing required field"),
    ("train", ['{"target": "zz"}'], "train.jsonl:1: field 'target': unknown item id 'zz'"),
    ("test", ['{"target": "a", "history": ["b", "nope"]}'],
     "test.jsonl:1: field 'history': unknown item id 'nope' at position 1"),
    ("test", ['{"target": "a", "history": "b"}'],
     "test.jsonl:1: field 'history': expected an array of item ids, got string"),
    ("valid", ['{"target": "a", "history": [3]}'],
     "valid.jsonl:1: field 'history': expected an item id string at position 0, got number"),
    ("train", ['{"target": "a", "query": ["shoe"]}'],
     "train.jsonl:1: field 'query': expected a string or null, got array"),
    ("train", ['{"target": "a", "timestamp": "2024-01-01"}'],
     "train.jsonl:1: field 'timestamp': expected a number or null, got string"),
    ("train", ['{"target": "a", "timestamp": true}'],
     "train.jsonl:1: field 'timestamp': expected a number or null, got boolean"),
    ("train", ['{"target": "a", "id": "e1"}', '{"target": "b", "id": "e1"}'],
     "train.jsonl:2: field 'id': duplicate example id 'e1' (first seen on line 1)"),
    ("items", None, "items.jsonl: file not found"),
    ("train", None, "train.jsonl: file not found"),
    ("test", None, "test.jsonl: file not found"),
]


@pytest.mark.parametrize(("name", "lines", "expected"), BAD_CASES)
def test_invalid_content_is_located(tmp_path: Path, name: str, lines: list[str] | None,
                                    expected: str) -> None:
    directory = make_dir(tmp_path, **{name: lines})
    with pytest.raises(DataError) as caught:
        load_dataset(directory)
    assert str(caught.value).startswith(f"{directory}/{expected}")
    assert isinstance(caught.value, ValueError)


def test_error_attributes_survive_pickling(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset(make_dir(tmp_path, train=['{"target": "a"}', '{"target": 1}']))
    error = pickle.loads(pickle.dumps(caught.value))
    assert (Path(error.path).name, error.line, error.field) == ("train.jsonl", 2, "target")
    assert str(error) == str(caught.value)


def test_invalid_metadata(tmp_path: Path) -> None:
    directory = make_dir(tmp_path)
    (directory / "dataset.json").write_text('{\n  "name": "x",\n}')
    with pytest.raises(DataError, match=r"dataset\.json:3: invalid JSON"):
        load_dataset(directory)
    (directory / "dataset.json").write_text("[]")
    with pytest.raises(DataError, match=r"dataset\.json:1: expected a JSON object, got array"):
        load_dataset(directory)


def test_embedding_check_names_the_row() -> None:
    embeddings = np.ones((5, 3), dtype=np.float32)
    embedding_check(embeddings, "encoder")
    embeddings[3, 1] = np.nan
    embeddings[4, 0] = np.inf
    with pytest.raises(DataError) as caught:
        embedding_check(embeddings, "encoder")
    assert str(caught.value) == ("encoder:4: field 'embedding': "
                                 "non-finite value in row 3 (2 bad rows in total)")
    assert caught.value.line == 4
    with pytest.raises(DataError, match="expected a 2-D array"):
        embedding_check(np.ones(3), "encoder")


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    write_items(path, [Item("a", "first")])
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_items(path, [Item("a", "ok"), Item("b", "bad", (float("nan"),))])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["items.jsonl"]


def test_reserved_field_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved keys"):
        write_items(tmp_path / "items.jsonl", [Item("a", "x", fields={"text": "clash"})])


def test_saved_files_are_plain_json_lines(tmp_path: Path) -> None:
    sample_dataset().save(tmp_path)
    first_item = json.loads((tmp_path / "items.jsonl").read_text().splitlines()[0])
    assert first_item == {"id": "a", "text": "Nordvik trail running shoe, blue",
                          "embedding": [0.5, -1.0, 2.0], "brand": "Nordvik"}
    meta = json.loads((tmp_path / "dataset.json").read_text())
    files = meta.pop("files")
    assert meta == {"name": "tiny", "source": "unit test"}
    assert set(files) == {"items.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl"}
    assert files["items.jsonl"]["bytes"] == (tmp_path / "items.jsonl").stat().st_size


def test_a_failed_save_leaves_the_previous_dataset_whole(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "data"
    sample_dataset().save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from dgi.data import loaders

    calls = {"n": 0}
    real = loaders.write_examples

    def killed_after_one_split(path, examples):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while writing the second split")
        real(path, examples)

    monkeypatch.setattr(loaders, "write_examples", killed_after_one_split)
    with pytest.raises(KeyboardInterrupt):
        sample_dataset().save(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary directory left


def test_a_mixed_or_damaged_dataset_directory_is_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    sample_dataset().save(first)
    other = sample_dataset()
    other.splits["valid"] = other.splits["train"][:2]
    other.save(second)
    (first / "valid.jsonl").write_bytes((second / "valid.jsonl").read_bytes())  # a file from another preparation
    with pytest.raises(DataError, match="valid.jsonl.*sha256 differs"):
        load_dataset(first)
    (first / "valid.jsonl").unlink()
    with pytest.raises(DataError, match="valid.jsonl.*missing"):
        load_dataset(first)


def test_save_refuses_to_replace_a_directory_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a dataset directory"):
        sample_dataset().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


SHARED = Path(os.environ.get("DGI_SHARED_DATA", Path(__file__).parents[1].parent / "shared" / "data"))


@pytest.mark.skipif(not (SHARED / "amazon-beauty").is_dir(), reason=f"no shared data at {SHARED}")
def test_kill_9_of_data_prepare_leaves_the_directory_absent_or_complete(tmp_path: Path) -> None:
    """A real SIGKILL of `dgi data prepare` (Beauty) while it writes its files: never a partial directory."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "data"
    command = [sys.executable, "-m", "dgi.cli", "data", "prepare", "amazon-beauty",
               "--source", str(SHARED / "amazon-beauty"), "--out", str(out)]

    def writing(files_written: int) -> list[Path]:
        return [p for p in tmp_path.glob(".data.*.tmp") if len(list(p.iterdir())) >= files_written]

    def prepare(kill_after_files: int | None) -> int:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill_after_files is None:
            return process.wait()
        while process.poll() is None and not writing(kill_after_files):
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        return process.wait()

    for files_written in (0, 1, 2, 3):  # killed as the temporary directory holds that many files
        assert prepare(files_written) == -signal.SIGKILL
        assert not out.exists()
        for leftover in tmp_path.iterdir():  # the killed writer's temporary directory, never the dataset
            assert leftover.name.startswith(".data.") and leftover.name.endswith(".tmp")
            shutil.rmtree(leftover)
    assert prepare(None) == 0
    dataset = load_dataset(out)  # complete: every file checked against the manifest
    assert len(dataset.items) == 12101 and len(dataset.splits["test"]) == 22363
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # re-prepare over it
    while process.poll() is None and not writing(2):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # the old directory, whole
