"""BEIR-format retrieval benchmarks as datasets, plus DSI-style indexing examples.

A BEIR directory holds `corpus.jsonl`, `queries.jsonl` and `qrels/{split}.tsv`
(docs/data-format.md). Its queries judge several documents with graded relevance,
so each becomes one example whose `relevant` keeps every judgment for evaluation.
Such benchmarks have few training queries, which is why `add_indexing_examples`
can teach the model every item's Semantic ID from the item's own text (as DSI does).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgi.data.loaders import _ITEM_KEYS, Dataset, _check_type, _read_jsonl, _require, data_lines
from dgi.data.schema import DataError, Example, Item

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")
INDEXING_PREFIX = "index-"

# Keys not copied as they are into Item.fields: id, title and text are parsed, the rest
# are reserved by the dgi format and would clash when the dataset is saved.
_CORPUS_SKIP = frozenset({"_id", "title", "text"}) | _ITEM_KEYS


def _unique_id(record: dict[str, Any], first_line: dict[str, int], what: str,
               path: Path, line: int) -> str:
    value = _require(record, "_id", path, line)
    _check_type(value, str, "a string", path, line, "_id")
    if not value:
        raise DataError(path, line, "_id", f"empty {what} id")
    if value in first_line:
        raise DataError(path, line, "_id", f"duplicate {what} id {value!r} "
                                           f"(first seen on line {first_line[value]})")
    first_line[value] = line
    return value


def _load_corpus(path: Path) -> list[Item]:
    """Documents in file order; the text is "title. text" so the encoder sees the title."""
    items: list[Item] = []
    first_line: dict[str, int] = {}
    for line, record in _read_jsonl(path):
        doc_id = _unique_id(record, first_line, "document", path, line)
        title = record.get("title") or ""
        _check_type(title, str, "a string", path, line, "title")
        text = _require(record, "text", path, line)
        _check_type(text, str, "a string", path, line, "text")
        fields = {"title": title} | {key: value for key, value in record.items()
                                     if key not in _CORPUS_SKIP}
        joined = ". ".join(part for part in (title.strip(), text.strip()) if part)
        items.append(Item(id=doc_id, text=joined, fields=fields))
    if not items:
        raise DataError(path, 0, None, "no documents")
    return items


def _load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, record in _read_jsonl(path):
        query_id = _unique_id(record, first_line, "query", path, line)
        text = _require(record, "text", path, line)
        _check_type(text, str, "a string", path, line, "text")
        if not text.strip():
            raise DataError(path, line, "text", "empty query text")
        queries[query_id] = text
    return queries


def _parse_score(text: str, path: Path, line: int) -> float:
    try:
        score = float(text)
    except ValueError:
        raise DataError(path, line, "score", f"expected a number, got {text!r}") from None
    if not math.isfinite(score):
        raise DataError(path, line, "score", f"non-finite value {text!r}")
    return score


def _read_qrels(path: Path, queries: dict[str, str],
                documents: set[str]) -> dict[str, dict[str, float]]:
    """Query id -> {document id: score > 0}, both in file order (later tie-breaks need it)."""
    header = "\t".join(QRELS_HEADER)
    judged: dict[str, dict[str, float]] = {}
    first_line: dict[tuple[str, str], int] = {}
    has_header = False
    for line, raw in data_lines(path):
        if not raw.strip():
            continue
        columns = raw.rstrip("\r\n").split("\t")
        if not has_header:
            if tuple(columns) != QRELS_HEADER:
                raise DataError(path, line, None,
                                f"expected the header {header!r}, got {raw.strip()!r}")
            has_header = True
            continue
        if len(columns) != len(QRELS_HEADER):
            raise DataError(path, line, None,
                            f"expected 3 tab-separated columns, got {len(columns)}")
        query_id, doc_id, score_text = columns
        if query_id not in queries:
            raise DataError(path, line, "query-id", f"unknown query id {query_id!r}")
        if doc_id not in documents:
            raise DataError(path, line, "corpus-id", f"unknown corpus id {doc_id!r}")
        score = _parse_score(score_text, path, line)
        if (query_id, doc_id) in first_line:
            raise DataError(path, line, "corpus-id",
                            f"duplicate judgment of {doc_id!r} for query {query_id!r} "
                            f"(first seen on line {first_line[query_id, doc_id]})")
        first_line[query_id, doc_id] = line
        if score > 0:  # 0 (and TREC's negative grades) mean judged not relevant
            judged.setdefault(query_id, {})[doc_id] = score
    if not has_header:
        raise DataError(path, 0, None, f"missing the header {header!r}")
    return judged


def _examples(judged: dict[str, dict[str, float]], queries: dict[str, str],
              expand: bool) -> list[Example]:
    """One example per query (id = query id, so TREC runs match the BEIR qrels); `expand`
    adds one single-target example per further relevant document, since training has one
    target per example."""
    examples: list[Example] = []
    for query_id, relevant in judged.items():
        target = max(relevant, key=relevant.__getitem__)  # the first of equal grades
        query = queries[query_id]
        examples.append(Example(target, query=query, id=query_id, relevant=relevant))
        if expand:
            examples.extend(Example(doc_id, query=query, id=f"{query_id}@{doc_id}")
                            for doc_id in relevant if doc_id != target)
    return examples


def load_beir(directory: Path, name: str | None = None, train_split: str = "train",
              valid_split: str = "dev", test_split: str = "test", indexing_ratio: float = 0.0,
              seed: int = 0) -> Dataset:
    """Load a BEIR directory; `*_split` name the qrels files of train/valid/test.

    Missing train or valid qrels give empty splits; test qrels are required. Every
    document is an item, queries without a relevant document are left out.
    `indexing_ratio` and `seed` add indexing examples (see `add_indexing_examples`).
    """
    directory = Path(directory)
    items = _load_corpus(directory / CORPUS_FILE)
    documents = {item.id for item in items}
    queries = _load_queries(directory / QUERIES_FILE)
    sources = {"train": train_split, "valid": valid_split, "test": test_split}
    splits: dict[str, list[Example]] = {}
    for split, source in sources.items():
        path = directory / QRELS_DIR / f"{source}.tsv"
        if split != "test" and not path.exists():
            splits[split] = []
            continue
        judged = _read_qrels(path, queries, documents)
        splits[split] = _examples(judged, queries, expand=split == "train")
    meta = {"format": "beir", "qrels": {split: f"{QRELS_DIR}/{source}.tsv"
                                        for split, source in sources.items()}}
    dataset = Dataset(name=name or directory.resolve().name, items=items, splits=splits, meta=meta)
    return add_indexing_examples(dataset, indexing_ratio, seed)


def indexing_examples(items: Sequence[Item], ratio: float, seed: int = 0, spans: int = 0) -> list[Example]:
    """Item text -> item examples for round(ratio * n) of the n items with non-blank text.

    The items are the first ones of a `seed`-ed permutation, so the choice is reproducible
    and a smaller ratio picks a subset of a larger one; they are listed in corpus order.
    `spans` > 0 adds, after each item's whole-text example, that many with a short span of
    its text as the query (`text_spans`), seeded by `seed` and the item's position.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"indexing ratio must be in [0, 1], got {ratio}")
    if spans < 0:
        raise ValueError(f"indexing spans must be >= 0, got {spans}")
    eligible = [item for item in items if item.text.strip()]  # no text: nothing to learn from
    count = round(ratio * len(eligible))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(eligible))[:count])
    examples = []
    for i in chosen:
        item = eligible[i]
        examples.append(Example(item.id, query=item.text, id=f"{INDEXING_PREFIX}{item.id}"))
        queries = text_spans(item.text, spans, np.random.default_rng([seed, int(i)])) if spans else []
        examples.extend(Example(item.id, query=query, id=f"{INDEXING_PREFIX}{item.id}-span{j}")
                        for j, query in enumerate(queries))
    return examples


def text_spans(text: str, count: int, rng: np.random.Generator, lengths: tuple[int, int] = (2, 4)) -> list[str]:
    """`count` runs of `lengths` consecutive words of `text` (lowercased, punctuation dropped), each of a
    random length and start: queries as short as searchers type, for DSI's random-span indexing. A text
    shorter than a drawn length gives all its words; a text without words gives no span."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return []
    queries = []
    for _ in range(count):
        length = min(len(words), int(rng.integers(lengths[0], lengths[1] + 1)))
        start = int(rng.integers(0, len(words) - length + 1))
        queries.append(" ".join(words[start:start + length]))
    return queries


def add_indexing_examples(dataset: Dataset, ratio: float, seed: int = 0, spans: int = 0) -> Dataset:
    """A copy of `dataset` whose train split ends with `indexing_examples(items, ratio, seed, spans)`.

    `ratio` is the share of items (with text) that get one indexing example: 1.0 adds one
    per item, 0.5 a seeded random half. When no item is chosen (ratio 0.0) it returns
    `dataset` itself. Valid and test are untouched, so evaluation still measures
    query -> item retrieval only.
    """
    extra = indexing_examples(dataset.items, ratio, seed, spans)
    if not extra:
        return dataset
    train = dataset.splits.get("train", [])
    taken = {example.id for example in train}
    for example in extra:  # against train and against the indexing examples before it
        if example.id in taken:
            raise ValueError(f"train already has an example with the indexing id {example.id!r}")
        taken.add(example.id)
    meta = {**dataset.meta, "indexing": {"ratio": ratio, "seed": seed, "examples": len(extra)}}
    if spans:
        meta["indexing"]["spans"] = spans
    return Dataset(name=dataset.name, items=dataset.items,
                   splits={**dataset.splits, "train": [*train, *extra]}, meta=meta)
