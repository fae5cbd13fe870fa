"""Read, validate and write dataset directories (format: docs/data-format.md)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from dgi.data.schema import DataError, Example, Item
from dgi.io import atomic_directory, sha256_file, write_lines

ITEMS_FILE = "items.jsonl"
META_FILE = "dataset.json"
SPLITS = ("train", "valid", "test")
REQUIRED_SPLITS = ("train", "test")

_ITEM_KEYS = frozenset({"id", "text", "embedding"})
_JSON_TYPES = {str: "string", bool: "boolean", int: "number", float: "number",
               list: "array", dict: "object", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def data_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based number, line) of a UTF-8 text file. A missing file, or a line that is not UTF-8,
    is a DataError naming the file and line, like every other data problem."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(path, 0, None, "file not found") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, number, None, f"not valid UTF-8 (byte {exc.start} of the line)") from None


def read_data_text(path: Path) -> str:
    """A whole UTF-8 data file (a JSON document), with the errors of `data_lines`."""
    return "".join(line for _, line in data_lines(path))


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, object) so every later error can point at its line."""
    for number, line in data_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, number, None,
                            f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(path, number, None,
                            f"expected a JSON object, got {_json_type(record)}")
        yield number, record


def _require(record: dict[str, Any], key: str, path: Path, line: int) -> Any:
    if key not in record:
        raise DataError(path, line, key, "missing required field")
    return record[key]


def _check_type(value: Any, expected: type | tuple[type, ...], name: str,
                path: Path, line: int, key: str) -> None:
    # bool is an int subclass in Python but not a number in JSON terms.
    if isinstance(value, bool) or not isinstance(value, expected):
        raise DataError(path, line, key, f"expected {name}, got {_json_type(value)}")


def _parse_embedding(value: Any, path: Path, line: int) -> tuple[float, ...]:
    _check_type(value, list, "an array of numbers", path, line, "embedding")
    if not value:
        raise DataError(path, line, "embedding", "empty embedding")
    for position, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise DataError(path, line, "embedding",
                            f"expected a number at position {position}, got {_json_type(number)}")
        if not math.isfinite(number):
            raise DataError(path, line, "embedding",
                            f"non-finite value {number} at position {position}")
    return tuple(float(number) for number in value)


def load_items(path: Path) -> list[Item]:
    """Load and validate the corpus; ids must be unique and embeddings share one dimension."""
    path = Path(path)
    items: list[Item] = []
    first_line: dict[str, int] = {}
    dimension: tuple[int, int] | None = None  # (dimension, line where it was first seen)
    for line, record in _read_jsonl(path):
        item_id = _require(record, "id", path, line)
        _check_type(item_id, str, "a string", path, line, "id")
        if not item_id:
            raise DataError(path, line, "id", "empty item id")
        if item_id in first_line:
            raise DataError(path, line, "id", f"duplicate item id {item_id!r} "
                                              f"(first seen on line {first_line[item_id]})")
        first_line[item_id] = line
        text = _require(record, "text", path, line)
        _check_type(text, str, "a string", path, line, "text")
        embedding = record.get("embedding")
        if embedding is not None:
            embedding = _parse_embedding(embedding, path, line)
            if dimension is None:
                dimension = (len(embedding), line)
            elif len(embedding) != dimension[0]:
                raise DataError(path, line, "embedding",
                                f"dimension {len(embedding)} differs from dimension "
                                f"{dimension[0]} on line {dimension[1]}")
        fields = {key: value for key, value in record.items() if key not in _ITEM_KEYS}
        items.append(Item(id=item_id, text=text, embedding=embedding, fields=fields))
    if not items:
        raise DataError(path, 0, None, "no items")
    return items


def _parse_history(value: Any, known: Collection[str], path: Path, line: int) -> tuple[str, ...]:
    _check_type(value, list, "an array of item ids", path, line, "history")
    for position, item_id in enumerate(value):
        if not isinstance(item_id, str):
            raise DataError(path, line, "history",
                            f"expected an item id string at position {position}, "
                            f"got {_json_type(item_id)}")
        if item_id not in known:
            raise DataError(path, line, "history",
                            f"unknown item id {item_id!r} at position {position}")
    return tuple(value)


def _parse_relevant(value: Any, target: str, known: Collection[str],
                    path: Path, line: int) -> dict[str, float]:
    _check_type(value, dict, "an object of item id -> relevance", path, line, "relevant")
    relevant: dict[str, float] = {}
    for item_id, grade in value.items():
        if item_id not in known:
            raise DataError(path, line, "relevant", f"unknown item id {item_id!r}")
        if isinstance(grade, bool) or not isinstance(grade, (int, float)):
            raise DataError(path, line, "relevant",
                            f"expected a number for {item_id!r}, got {_json_type(grade)}")
        if not math.isfinite(grade) or grade <= 0:
            raise DataError(path, line, "relevant",
                            f"relevance of {item_id!r} must be finite and > 0, got {grade}")
        relevant[item_id] = float(grade)
    if target not in relevant:
        raise DataError(path, line, "relevant", f"does not contain the target {target!r}")
    return relevant


def load_examples(path: Path, item_ids: Collection[str], split: str) -> list[Example]:
    """Load one split; `item_ids` is the corpus, so dangling references fail at load time."""
    path = Path(path)
    known = item_ids if isinstance(item_ids, (set, frozenset, dict)) else set(item_ids)
    examples: list[Example] = []
    first_line: dict[str, int] = {}
    for line, record in _read_jsonl(path):
        target = _require(record, "target", path, line)
        _check_type(target, str, "an item id string", path, line, "target")
        if target not in known:
            raise DataError(path, line, "target", f"unknown item id {target!r}")
        history = _parse_history(record.get("history", []), known, path, line)
        query = record.get("query")
        if query is not None:
            _check_type(query, str, "a string or null", path, line, "query")
        timestamp = record.get("timestamp")
        if timestamp is not None:
            _check_type(timestamp, (int, float), "a number or null", path, line, "timestamp")
            if not math.isfinite(timestamp):
                raise DataError(path, line, "timestamp", f"non-finite value {timestamp}")
        example_id = record.get("id", f"{split}-{line}")
        _check_type(example_id, str, "a string", path, line, "id")
        if not example_id:
            raise DataError(path, line, "id", "empty example id")
        if example_id in first_line:
            raise DataError(path, line, "id", f"duplicate example id {example_id!r} "
                                              f"(first seen on line {first_line[example_id]})")
        first_line[example_id] = line
        relevant = record.get("relevant")
        if relevant is not None:
            relevant = _parse_relevant(relevant, target, known, path, line)
        examples.append(Example(
            target=target,
            history=history,
            query=query if query and query.strip() else None,
            timestamp=None if timestamp is None else float(timestamp),
            id=example_id,
            relevant=relevant,
        ))
    return examples


def embedding_check(array: np.ndarray, source: str | os.PathLike[str]) -> None:
    """Reject NaN/inf rows of computed embeddings (e.g. from a text encoder) before training."""
    if array.ndim != 2:
        raise DataError(source, 0, "embedding", f"expected a 2-D array, got shape {array.shape}")
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        raise DataError(source, row + 1, "embedding",
                        f"non-finite value in row {row} ({bad_rows.size} bad rows in total)")


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def _item_record(item: Item) -> dict[str, Any]:
    clashes = _ITEM_KEYS.intersection(item.fields)
    if clashes:
        raise ValueError(f"item {item.id!r}: fields use reserved keys {sorted(clashes)}")
    record: dict[str, Any] = {"id": item.id, "text": item.text}
    if item.embedding is not None:
        record["embedding"] = list(item.embedding)
    record.update(item.fields)
    return record


def _example_record(example: Example) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if example.id:
        record["id"] = example.id
    if example.query is not None:
        record["query"] = example.query
    record["history"] = list(example.history)
    record["target"] = example.target
    if example.timestamp is not None:
        record["timestamp"] = example.timestamp
    if example.relevant is not None:
        record["relevant"] = dict(example.relevant)
    return record


def write_items(path: Path, items: Iterable[Item]) -> None:
    """Write items.jsonl atomically."""
    write_lines(path, (_dumps(_item_record(item)) for item in items), "\n")


def write_examples(path: Path, examples: Iterable[Example]) -> None:
    """Write one split file atomically; an empty example id is left for the loader to default."""
    write_lines(path, (_dumps(_example_record(example)) for example in examples), "\n")


@dataclass
class Dataset:
    """A corpus plus its train/valid/test splits; `meta` is free-form provenance."""

    name: str
    items: list[Item]
    splits: dict[str, list[Example]]
    meta: dict[str, Any]

    @cached_property
    def item_index(self) -> dict[str, int]:
        """Item id -> position in `items` (cached: do not mutate `items` afterwards)."""
        return {item.id: position for position, item in enumerate(self.items)}

    def popularity(self) -> np.ndarray:
        """Train-target counts per item: the only popularity that does not leak test data."""
        index = self.item_index
        targets = np.fromiter((index[example.target] for example in self.splits["train"]),
                              dtype=np.int64, count=len(self.splits["train"]))
        return np.bincount(targets, minlength=len(self.items)).astype(np.int64)

    def save(self, directory: Path) -> None:
        """Write the dataset directory whole: into a temporary sibling, renamed into place at the end.

        dataset.json lists every file with its size and sha256, so `load_dataset` refuses a directory
        that was mixed or damaged afterwards. An existing directory is replaced only if it is a dataset.
        """
        directory = Path(directory)
        if directory.exists() and any(directory.iterdir()) and not (
                (directory / ITEMS_FILE).exists() or (directory / META_FILE).exists()):
            raise FileExistsError(f"{directory} exists and is not a dataset directory: refusing to replace it")
        with atomic_directory(directory) as tmp:
            write_items(tmp / ITEMS_FILE, self.items)
            for split in SPLITS:
                write_examples(tmp / f"{split}.jsonl", self.splits.get(split, []))
            files = {file.name: {"bytes": file.stat().st_size, "sha256": sha256_file(file)}
                     for file in sorted(tmp.iterdir())}
            meta = {"name": self.name, **{k: v for k, v in self.meta.items() if k not in ("name", "files")},
                    "files": files}
            write_lines(tmp / META_FILE, [json.dumps(meta, ensure_ascii=False, allow_nan=False, indent=2)], "\n")


def _verify_files(directory: Path, files: Any) -> None:
    """Each file the manifest lists has its recorded size and sha256, and no split file is unlisted."""
    meta_path = directory / META_FILE
    if not isinstance(files, dict):
        raise DataError(meta_path, 0, "files", f"expected an object, got {_json_type(files)}")
    remedy = "the directory is damaged or mixes two preparations: prepare it again"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise DataError(path, 0, None, f"listed in {META_FILE} but missing; {remedy}")
        if not isinstance(expected, dict) or path.stat().st_size != expected.get("bytes") \
                or sha256_file(path) != expected.get("sha256"):
            raise DataError(path, 0, None, f"size or sha256 differs from {META_FILE}; {remedy}")
    unlisted = [f"{split}.jsonl" for split in SPLITS if (directory / f"{split}.jsonl").exists()
                and f"{split}.jsonl" not in files]
    if unlisted:
        raise DataError(directory / unlisted[0], 0, None, f"not listed in {META_FILE}; {remedy}")


def _load_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        meta = json.loads(read_data_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None,
                        f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(meta, dict):
        raise DataError(path, 1, None, f"expected a JSON object, got {_json_type(meta)}")
    return meta


def load_dataset(directory: Path) -> Dataset:
    """Load and validate a dataset directory; valid.jsonl and dataset.json are optional."""
    directory = Path(directory)
    meta = _load_meta(directory / META_FILE)
    if "files" in meta:  # written by Dataset.save; hand-made directories have no manifest
        _verify_files(directory, meta.pop("files"))
    items = load_items(directory / ITEMS_FILE)
    item_ids = {item.id for item in items}
    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        path = directory / f"{split}.jsonl"
        if split in REQUIRED_SPLITS or path.exists():
            splits[split] = load_examples(path, item_ids, split)
        else:
            splits[split] = []
    name = meta.pop("name", None)
    if name is not None and not isinstance(name, str):
        raise DataError(directory / META_FILE, 0, "name",
                        f"expected a string, got {_json_type(name)}")
    return Dataset(name=name or directory.resolve().name, items=items, splits=splits, meta=meta)
