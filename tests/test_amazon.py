"""Amazon datasets: leave-one-out splits on the real files, semi-synthetic queries, download checks."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dgi.cli import app
from dgi.data import DataError, Dataset, Example, load_dataset
from dgi.data import amazon
from dgi.data.amazon import DownloadError, download_amazon, prepare_amazon
from dgi.data.shop_queries import make_query, parse_title

SHARED = Path(os.environ.get("DGI_SHARED_DATA", Path(__file__).parents[1].parent / "shared" / "data"))
BEAUTY = SHARED / "amazon-beauty"
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")

UNIT_WORDS = {"oz", "ounce", "ounces", "fl", "ml", "pack", "count", "ct", "pcs", "pc", "g", "mg",
              "lb", "lbs", "piece", "pieces", "bottle", "bottles"}


def raw_sequences(path: Path) -> dict[str, list[str]]:
    """The upstream file read independently of the code under test."""
    lines = path.read_text().splitlines()
    return {tokens[0]: tokens[1:] for tokens in map(str.split, lines) if tokens}


@pytest.fixture(scope="module")
def beauty() -> Dataset:
    return prepare_amazon(BEAUTY, "amazon-beauty")


@pytest.fixture(scope="module")
def beauty_search() -> Dataset:
    return prepare_amazon(BEAUTY, "amazon-beauty-search")


@pytest.fixture(scope="module")
def beauty_raw() -> dict[str, list[str]]:
    return raw_sequences(BEAUTY / "user_sequence.txt")


def by_id(dataset: Dataset) -> dict[str, tuple[str, Example]]:
    return {example.id: (split, example) for split, examples in dataset.splits.items()
            for example in examples}


# --- amazon-beauty on the real files ------------------------------------------------------

@needs_data
def test_beauty_counts(beauty, beauty_raw):
    lengths = [len(items) for items in beauty_raw.values()]
    assert len(beauty.items) == 12_101
    assert len(beauty.splits["valid"]) == len(beauty.splits["test"]) == 22_363
    assert len(beauty.splits["train"]) == sum(n - 3 for n in lengths) == 131_413
    assert beauty.meta["counts"] == {"users": 22_363, "items": 12_101, "interactions": 198_502,
                                     "train": 131_413, "valid": 22_363, "test": 22_363,
                                     "empty_titles": 7}
    assert all(example.query is None and example.timestamp is None
               for examples in beauty.splits.values() for example in examples)
    files = beauty.meta["source"]["files"]
    assert files["user_sequence.txt"]["matches_upstream"] and files["products_lookup.csv"]["matches_upstream"]


@needs_data
def test_beauty_titles_are_the_joined_upstream_titles(beauty):
    id_map = json.loads((BEAUTY / "item_id_to_int.json").read_text())
    with (BEAUTY / "products_lookup.csv").open(newline="") as handle:
        names = {int(row["global_product_id"]): row["name"] for row in csv.DictReader(handle)}
    assert {item.id: item.text for item in beauty.items} == {asin: names[n] for asin, n in id_map.items()}
    assert sum(item.text == "" for item in beauty.items) == 7


@needs_data
def test_beauty_leave_one_out_matches_raw_file(beauty, beauty_raw):
    examples = by_id(beauty)
    shortest = min(beauty_raw, key=lambda user: len(beauty_raw[user]))
    longest = max(beauty_raw, key=lambda user: len(beauty_raw[user]))
    for user in [next(iter(beauty_raw)), shortest, longest, "A3G6XNM240RMWA"]:
        items = beauty_raw[user]
        n = len(items)
        ids = {f"{user}-{t}" for t in range(2, n + 1)}
        assert {key for key in examples if key.rsplit("-", 1)[0] == user} == ids
        for t in range(2, n + 1):
            split, example = examples[f"{user}-{t}"]
            assert split == ("test" if t == n else "valid" if t == n - 1 else "train")
            assert example.target == items[t - 1]
            assert example.history == tuple(items[:t - 1][-20:])
    assert len(beauty_raw[longest]) == 204
    assert len(examples[f"{longest}-204"][1].history) == 20


@needs_data
def test_histories_are_truncated_to_max_history(beauty):
    lengths = [len(example.history) for examples in beauty.splits.values() for example in examples]
    assert max(lengths) == 20 and min(lengths) == 1


@needs_data
def test_cli_prepare_writes_a_valid_dataset(beauty, tmp_path):
    result = CliRunner().invoke(app, ["data", "prepare", "amazon-beauty", "--source", str(BEAUTY),
                                      "--out", str(tmp_path / "beauty")])
    assert result.exit_code == 0, result.output
    assert "12101 items" in result.output and "train 131413" in result.output
    loaded = load_dataset(tmp_path / "beauty")  # full validation
    assert loaded.name == "amazon-beauty"
    assert loaded.items == beauty.items and loaded.splits == beauty.splits
    assert loaded.meta["counts"] == beauty.meta["counts"]


@needs_data
def test_toys_has_ids_only(tmp_path):
    toys = prepare_amazon(SHARED / "amazon-toys", "amazon-toys")
    assert (len(toys.items), len(toys.splits["train"]), len(toys.splits["test"])) == (11_924, 109_361, 19_412)
    assert all(item.text == "" for item in toys.items)
    assert "ID-based" in toys.meta["item_text"]


# --- amazon-beauty-search ------------------------------------------------------------------

@needs_data
def test_search_variant_keeps_users_items_and_splits(beauty, beauty_search):
    assert beauty_search.name == "amazon-beauty-search"
    assert beauty_search.items == beauty.items
    for split, examples in beauty.splits.items():
        assert [(e.id, e.history, e.target) for e in examples] == \
               [(e.id, e.history, e.target) for e in beauty_search.splits[split]]
    assert "semi-synthetic" in beauty_search.meta["queries"]["procedure"]
    assert beauty_search.meta["queries"]["seed"] == 0


@needs_data
def test_search_queries_are_short_clean_and_reproducible(beauty_search):
    titles = {item.id: item.text for item in beauty_search.items}
    examples = [example for examples in beauty_search.splits.values() for example in examples]
    for example in examples:
        words = example.query.split()
        assert 2 <= len(words) <= 4, example
        assert re.fullmatch(r"[a-z ]+", example.query), example
        assert not UNIT_WORDS & set(words), example
        assert example.query == make_query(titles[example.target], 0, example.id)
    sample = examples[::50]
    other_seed = sum(make_query(titles[e.target], 1, e.id) != e.query for e in sample)
    assert other_seed > 0.3 * len(sample)
    with_type = sum(parse_title(titles[e.target]).product_type.replace("_", " ") in e.query
                    for e in examples)
    assert with_type > 0.85 * len(examples)


DOCUMENTED = ["paraffin bath", "shower detangler", "ardell fashion lashes", "lash false eyelashes",
              "long liner makeup", "collection palette", "camouflage palette", "light foundation",
              "xtreme brite brightening gel", "hair care"]


@needs_data
def test_documented_examples_are_current(beauty_search):
    """docs/datasets.md shows the first ten test queries; update it when this fails."""
    assert [example.query for example in beauty_search.splits["test"][:10]] == DOCUMENTED


@needs_data
def test_saved_search_dataset_round_trips(beauty_search, tmp_path):
    beauty_search.save(tmp_path)
    loaded = load_dataset(tmp_path)
    assert loaded.splits == beauty_search.splits
    assert loaded.meta["queries"] == beauty_search.meta["queries"]


# --- the query procedure on hand-written titles --------------------------------------------

def queries(title: str, n: int = 300) -> list[str]:
    return [make_query(title, 0, f"u-{i}") for i in range(n)]


def test_title_parsing_drops_sizes_and_finds_brand_and_type():
    shampoo = parse_title("Neutrogena T-Gel Shampoo, Stubborn Itch Control, 4.4 Ounce")
    assert (shampoo.brand, shampoo.product_type, shampoo.category) == ("neutrogena", "shampoo", "hair care")
    assert shampoo.attributes == ("gel", "stubborn", "itch", "control")
    liner = parse_title("Maybelline New York Ultra-Liner Liquid Liner, Waterproof, "
                        "Black 135L-01 , .25 fl oz (7.3 ml)")
    assert (liner.brand, liner.product_type) == ("maybelline", "liquid liner")
    assert liner.attributes == ("ultra", "waterproof", "black")
    perfume = parse_title("Prada Candy By Prada Eau De Parfum Spray 1.7 Oz For Women")
    assert (perfume.brand, perfume.product_type, perfume.category) == ("prada", "perfume", "womens fragrance")
    assert parse_title("Revlon Sheer Nail Enamel, Sheer Rose 011").product_type == "nail polish"
    assert parse_title("Derma E Hyaluronic Acid Day Cr&egrave;me, 2-Ounces").product_type == "day cream"


@pytest.mark.parametrize("title", [
    "Nordvik Clay Mask 100 count 2-pack",
    "Pretty Feet  and  Hands Rough Skin Remover-Exfoliant, 3-Ounce Bottles (Pack of 3)",
    "Crabtree  and  Evelyn - Gardener's Ultra-Moisturising Hand Therapy Pump - 250g/8.8 OZ",
    "Love Potion Perfume ~ 1/3 fl.oz. Concentrated Perfume Oil",
    "Stella",
])
def test_queries_have_no_sizes_and_two_to_four_words(title):
    for query in queries(title):
        words = query.split()
        assert 2 <= len(words) <= 4 and not UNIT_WORDS & set(words), query
        assert not re.search(r"\d", query), query


def test_query_mix_brand_generic_and_type():
    title = "Revlon Sheer Nail Enamel, Sheer Rose 011"
    made = queries(title, 2000)
    assert 0.08 < sum(q.startswith("revlon ") for q in made) / len(made) < 0.22
    assert 0.02 < sum(q == "nail care" for q in made) / len(made) < 0.10
    assert sum(q.endswith("nail polish") for q in made) / len(made) > 0.9
    assert set(made) >= {"sheer nail polish", "rose nail polish", "sheer rose nail polish", "nail polish"}


def test_queries_are_deterministic_and_pinned():
    title = "Olay Regenerist Anti-Aging Serum, 1.7 fl oz"
    assert queries(title, 20) == queries(title, 20)
    assert make_query(title, 0, "u-0") == "anti aging serum"  # compounds stay together
    assert make_query("Maybelline New York Ultra-Liner Liquid Liner, Waterproof, Black", 0, "u-2") \
        == "ultra black liquid liner"
    assert {make_query("", seed, "u-1") for seed in range(5)} == {"beauty products"}


# --- malformed input -----------------------------------------------------------------------

ASINS = [f"B00000000{i}" for i in range(6)]


def write_source(directory: Path, lines: list[str], titles: bool = True) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "user_sequence.txt").write_text("".join(line + "\n" for line in lines))
    if titles:
        (directory / "item_id_to_int.json").write_text(json.dumps({a: i for i, a in enumerate(ASINS)}))
        rows = [",global_product_id,name"] + [f"{i},{i},Nordvik Clay Mask {i}" for i in range(len(ASINS))]
        (directory / "products_lookup.csv").write_text("\n".join(rows) + "\n")
    return directory


def test_small_source_gives_exact_splits(tmp_path):
    source = write_source(tmp_path / "src", [f"U1 {' '.join(ASINS[:5])}", "", f"U2 {' '.join(ASINS[3:])}"])
    dataset = prepare_amazon(source, "amazon-beauty", with_queries=True, max_history=2)
    assert dataset.name == "amazon-beauty-search"
    assert [item.id for item in dataset.items] == ASINS
    assert [(e.id, e.history, e.target) for e in dataset.splits["train"]] == [
        ("U1-2", (ASINS[0],), ASINS[1]), ("U1-3", (ASINS[0], ASINS[1]), ASINS[2])]
    assert [(e.id, e.history) for e in dataset.splits["valid"]] == [
        ("U1-4", (ASINS[1], ASINS[2])), ("U2-2", (ASINS[3],))]
    assert [(e.id, e.target) for e in dataset.splits["test"]] == [("U1-5", ASINS[4]), ("U2-3", ASINS[5])]
    assert all(e.query == make_query(f"Nordvik Clay Mask {ASINS.index(e.target)}", 0, e.id)
               for examples in dataset.splits.values() for e in examples)


@pytest.mark.parametrize(("line", "message"), [
    ("U9 B000000001 B000000002", "has 2 items"),
    ("U9 B000000001 b000000002 B000000003", "malformed item id 'b000000002'"),
    ("U9 B000000001,B000000002,B000000003", "malformed item id"),
    ("U1 B000000001 B000000002 B000000003", "duplicate user 'U1' (first seen on line 1)"),
    ("U9 B000000001 B000000002 B0000000ZZ", "unknown ASIN 'B0000000ZZ'"),
])
def test_malformed_sequences_name_file_and_line(tmp_path, line, message):
    source = write_source(tmp_path, [f"U1 {' '.join(ASINS[:4])}", line])
    with pytest.raises(DataError, match=re.escape(message)) as error:
        prepare_amazon(source, "amazon-beauty")
    assert (Path(error.value.path).name, error.value.line) == ("user_sequence.txt", 2)
    assert "user_sequence.txt:2: " in str(error.value)


def test_malformed_titles_name_file_and_line(tmp_path):
    source = write_source(tmp_path, [f"U1 {' '.join(ASINS[:4])}"])
    with (source / "products_lookup.csv").open("a") as handle:
        handle.write("6,x,Broken row\n")
    with pytest.raises(DataError, match=r"products_lookup\.csv:8: expected 3 columns"):
        prepare_amazon(source, "amazon-beauty")


def test_bad_names_and_options(tmp_path):
    source = write_source(tmp_path, [f"U1 {' '.join(ASINS[:4])}"], titles=False)
    with pytest.raises(ValueError, match="unknown dataset 'amazon-shoes'; known: amazon-beauty"):
        prepare_amazon(source, "amazon-shoes")
    with pytest.raises(ValueError, match="has no titles"):
        prepare_amazon(source, "amazon-toys", with_queries=True)
    with pytest.raises(ValueError, match="max_history"):
        prepare_amazon(source, "amazon-toys", max_history=0)
    assert prepare_amazon(source, "amazon-toys").items[0].text == ""


def test_cli_reports_data_errors(tmp_path):
    source = write_source(tmp_path, ["U1 B000000001 B000000002"])
    result = CliRunner().invoke(app, ["data", "prepare", "amazon-beauty", "--source", str(source),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "user_sequence.txt:1: user 'U1' has 2 items" in result.output


# --- download ------------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        QuietHandler.requests.append(self.path)


@pytest.fixture
def serve(monkeypatch) -> Iterator[Callable[[Path], None]]:
    """serve(root): a local raw.githubusercontent.com stand-in for the files under `root`."""
    servers = []

    def start(root: Path) -> None:
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        monkeypatch.setattr(amazon, "RAW_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")

    QuietHandler.requests = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def mirror(root: Path, files: dict[amazon.UpstreamFile, Path | bytes]) -> Path:
    """Lay files out as raw.githubusercontent.com does: /owner/repo/commit/path."""
    for upstream, content in files.items():
        target = root / upstream.repo / upstream.commit / upstream.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            target.symlink_to(content)
        else:
            target.write_bytes(content)
    return root


@needs_data
def test_download_fetches_and_verifies_the_pinned_files(serve, tmp_path):
    spec = amazon.DATASETS["amazon-beauty"]
    serve(mirror(tmp_path / "mirror", {upstream: BEAUTY / upstream.name for upstream in spec.files}))
    paths = download_amazon("amazon-beauty", tmp_path / "out")
    assert sorted(path.name for path in paths) == sorted(
        ["user_sequence.txt", "item_id_to_int.json", "products_lookup.csv", "LICENSE-titles.txt"])
    for path in paths:
        assert path.read_bytes() == (BEAUTY / path.name).read_bytes()
    assert len(QuietHandler.requests) == 4
    download_amazon("amazon-beauty-search", tmp_path / "out")  # same files, already verified
    assert len(QuietHandler.requests) == 4
    assert sorted(os.listdir(tmp_path / "out")) == sorted(path.name for path in paths)


@pytest.mark.parametrize(("change", "message"), [
    (lambda size: b"x" * size, "with sha256"),  # right size, wrong bytes
    (lambda size: b"x" * (size - 1), f"got {2_129_679 - 1} bytes"),
    (lambda size: b"x" * (size + 1), "got more than"),
])
def test_download_rejects_a_checksum_mismatch(serve, tmp_path, change, message):
    (upstream,) = amazon.DATASETS["amazon-toys"].files
    serve(mirror(tmp_path / "mirror", {upstream: change(upstream.size)}))
    with pytest.raises(DownloadError, match=message) as error:
        download_amazon("amazon-toys", tmp_path / "out")
    assert "the upstream file changed or the download was corrupted" in str(error.value)
    assert os.listdir(tmp_path / "out") == []  # neither the file nor a temporary is left


def test_download_reports_http_errors(serve, tmp_path):
    serve(tmp_path)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_amazon("amazon-toys", tmp_path / "out")


def test_download_offline_says_what_to_do(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(amazon, "RAW_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError, match=rf"cannot reach 127\.0\.0\.1:{port}: .*; copy the files from "
                                            r"user_sequence\.txt <- https://github\.com/zhaodong-liu/GRAM"):
        download_amazon("amazon-toys", tmp_path / "out")
    result = CliRunner().invoke(app, ["data", "download", "amazon-toys", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "cannot reach" in result.output
