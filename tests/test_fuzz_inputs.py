"""A fuzzed input matrix: mutated dataset files give a DataError naming the file (and line), nothing else.

Each case copies a small valid source (a dataset directory, a BEIR corpus, Amazon upstream files),
mutates one file the way real files go wrong, and loads it. Either the mutation was harmless and the
load succeeds, or it raises DataError naming a file of the source (the mutated one, or one that no
longer agrees with it, such as a split naming a renamed item); any other exception fails the test.
`dgi data prepare` on a mutated source leaves no output directory behind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dgi.cli import app
from dgi.data import DataError, Dataset, Example, Item, load_beir, load_dataset
from dgi.data.amazon import prepare_amazon

FIXTURES = Path(__file__).parent / "fixtures"
ASINS = [f"B00000000{i}" for i in range(8)]
MUTATIONS = ("truncate", "wrong_type", "duplicate_line", "non_utf8", "empty_field", "huge_line", "empty_file",
             "unknown_id", "garbage_line")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _dataset_dir(path: Path) -> Path:
    items = [Item(a, f"Nordvik clay mask {i}") for i, a in enumerate(ASINS)]
    train = [Example(ASINS[i + 1], (ASINS[i],), "clay mask", None, f"t{i}") for i in range(6)]
    Dataset("fuzz", items, {"train": train, "valid": train[:2], "test": train[2:4]}, {}).save(path)
    manifest = json.loads((path / "dataset.json").read_text())
    manifest.pop("files")  # the manifest would catch every byte changed: fuzz the parsers behind it
    (path / "dataset.json").write_text(json.dumps(manifest))
    return path


def _amazon_dir(path: Path) -> Path:
    path.mkdir()
    lines = [f"U{u} {' '.join(ASINS[u:u + 5])}" for u in range(3)]
    (path / "user_sequence.txt").write_text("".join(line + "\n" for line in lines))
    (path / "item_id_to_int.json").write_text(json.dumps({a: i for i, a in enumerate(ASINS)}))
    rows = [",global_product_id,name"] + [f"{i},{i},Nordvik Clay Mask {i}" for i in range(len(ASINS))]
    (path / "products_lookup.csv").write_text("\n".join(rows) + "\n")
    return path


def _mutate(file: Path, mutation: str, where: float) -> None:
    data = file.read_bytes()
    lines = data.splitlines(keepends=True) or [b""]
    row = min(int(where * len(lines)), len(lines) - 1)
    line = lines[row]
    if mutation == "truncate":
        data = data[: int(where * len(data))]
    elif mutation == "wrong_type":  # the first string or array value of a known field becomes [1, {}]
        lines[row] = re.sub(rb'("(?:_id|id|text|target|history|query)": )("[^"]*"|\[[^\]]*\])', rb"\1[1, {}]", line,
                            count=1)
        data = b"".join(lines)
    elif mutation == "duplicate_line":
        data = b"".join(lines[: row + 1] + [line] + lines[row + 1:])
    elif mutation == "non_utf8":
        lines[row] = line[: len(line) // 2] + b"\xff\xfe\x80" + line[len(line) // 2:]
        data = b"".join(lines)
    elif mutation == "empty_field":
        lines[row] = line.replace(b'"Nordvik', b'"').replace(b"Nordvik", b"").replace(b'"B0', b'"', 1)
        data = b"".join(lines)
    elif mutation == "huge_line":
        data = b"".join(lines[:row] + [b"x" * 2_000_000 + b"\n"] + lines[row:])
    elif mutation == "empty_file":
        data = b""
    elif mutation == "unknown_id":
        data = data.replace(ASINS[3].encode(), b"B0NOSUCHID", 1)
    else:
        data = b"".join(lines[:row] + [b"{not json at all\n"] + lines[row:])
    file.write_bytes(data)


def _check(load, path: Path, mutated: Path) -> None:
    """A DataError naming a file of the source (the mutated one, or one that now disagrees with it)."""
    try:
        load(path)
    except DataError as error:
        named = Path(error.path)
        assert named == path or path in named.parents, (error, mutated)
        assert error.line >= 0 and str(error).startswith(str(error.path))


@FUZZ
@given(file=st.sampled_from(["items.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl", "dataset.json"]),
       mutation=st.sampled_from(MUTATIONS), where=st.floats(0, 1))
def test_dataset_directory_loader(tmp_path_factory, file, mutation, where):
    path = _dataset_dir(tmp_path_factory.mktemp("fuzz") / "data")
    _mutate(path / file, mutation, where)
    _check(load_dataset, path, path / file)


@FUZZ
@given(file=st.sampled_from(["corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"]),
       mutation=st.sampled_from(MUTATIONS), where=st.floats(0, 1))
def test_beir_loader(tmp_path_factory, file, mutation, where):
    path = tmp_path_factory.mktemp("fuzz") / "beir"
    shutil.copytree(FIXTURES / "beir-tiny", path)
    _mutate(path / file, mutation, where)
    _check(load_beir, path, path / file)


@FUZZ
@given(file=st.sampled_from(["user_sequence.txt", "item_id_to_int.json", "products_lookup.csv"]),
       mutation=st.sampled_from(MUTATIONS), where=st.floats(0, 1))
def test_amazon_upstream_files(tmp_path_factory, file, mutation, where):
    path = _amazon_dir(tmp_path_factory.mktemp("fuzz") / "amazon")
    _mutate(path / file, mutation, where)
    _check(lambda source: prepare_amazon(source, "amazon-beauty", with_queries=True), path, path / file)


def test_prepare_on_a_broken_source_writes_nothing(tmp_path):
    source = _amazon_dir(tmp_path / "amazon")
    _mutate(source / "user_sequence.txt", "garbage_line", 0.5)
    result = CliRunner().invoke(app, ["data", "prepare", "amazon-beauty", "--source", str(source),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "user_sequence.txt" in result.output
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["amazon"]
