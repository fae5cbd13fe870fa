"""Amazon 5-core datasets (Beauty, Sports, Toys) as used by TIGER, P5 and S3Rec.

`prepare_amazon` turns the upstream files into a dataset with the standard
leave-one-out protocol so results are comparable with published numbers;
`download_amazon` fetches those files, pinned by size and sha256, because the
repository must not ship them. docs/datasets.md describes both.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dgi.data.loaders import Dataset, data_lines, read_data_text
from dgi.data.schema import DataError, Example, Item
from dgi.data.shop_queries import BRAND_RATE, GENERIC_RATE, make_query

RAW_BASE_URL = "https://raw.githubusercontent.com"
SEQUENCES_FILE = "user_sequence.txt"
ID_MAP_FILE = "item_id_to_int.json"
TITLES_FILE = "products_lookup.csv"
LICENSE_FILE = "LICENSE-titles.txt"

_GRAM = ("zhaodong-liu/GRAM", "2c168a4cc12e70c464502149392943e091006835")
_LLMSEQ = ("dh-r/LLM-Sequential-Recommendation", "6464b39064f369b251580c63edbf635de0934101")
_ASIN = re.compile(r"[0-9A-Z]{10}")
_CHUNK = 1 << 16

PROTOCOL = (
    "leave-one-out per user (TIGER, SASRec, S3Rec): for a time-ordered sequence s_1..s_n the "
    "last item is the test target (history s_1..s_{n-1}), the second to last the validation "
    "target (history s_1..s_{n-2}), and every earlier prefix predicts its next item for "
    "training targets s_2..s_{n-2}; histories keep the last max_history items; example id "
    "'{user}-{t}' with t the 1-based target position; no timestamps"
)
QUERY_PROCEDURE = (
    "semi-synthetic queries: dgi.data.shop_queries.make_query(target title, seed, example id) "
    "writes a 2-4 word shop query from the target's title: lowercase, no punctuation, sizes, "
    f"volumes and counts removed, brand kept in ~{BRAND_RATE:.0%} of queries, the product type "
    "(hand-written vocabulary, else the product name's last word) plus one or two descriptive "
    f"words; ~{GENERIC_RATE:.0%} are partial or generic (the type or its category, e.g. "
    "'hair care'); empty titles give 'beauty products'"
)


@dataclass(frozen=True)
class UpstreamFile:
    """One published file, pinned so a changed or corrupted upstream copy is caught."""

    name: str  # file name in the source directory
    repo: str
    commit: str
    path: str
    size: int
    sha256: str

    @property
    def url(self) -> str:
        return f"{RAW_BASE_URL}/{self.repo}/{self.commit}/{self.path}"

    @property
    def page(self) -> str:
        return f"https://github.com/{self.repo}/blob/{self.commit}/{self.path}"


def _sequences(folder: str, size: int, sha256: str) -> UpstreamFile:
    return UpstreamFile(SEQUENCES_FILE, *_GRAM, f"rec_datasets/{folder}/{SEQUENCES_FILE}",
                        size, sha256)


_BEAUTY_FILES = (
    _sequences("Beauty", 2_513_357,
               "47197cbee7bdc1896926e10d96b807dce0aecb9a1f0c2ccc887c21090237c9b7"),
    UpstreamFile(ID_MAP_FILE, *_LLMSEQ, f"beauty/{ID_MAP_FILE}", 243_011,
                 "3d1a1d362c7daeddf616057fae8fa24af9d70902fdaf4631852231a9953afa50"),
    UpstreamFile(TITLES_FILE, *_LLMSEQ, f"beauty/{TITLES_FILE}", 961_053,
                 "65133eca0615999df67fc5b26a93a7da762e53e613a083fd6b9e37174896d128"),
    UpstreamFile(LICENSE_FILE, *_LLMSEQ, "LICENSE", 1_529,
                 "c0aaf63a6db6ba5e827a2976bcfcf670691729f53431d2dcd5d5381049d65919"),
)


@dataclass(frozen=True)
class AmazonSpec:
    """A known dataset: which upstream files it needs and whether it has titles/queries."""

    name: str
    description: str
    files: tuple[UpstreamFile, ...]
    titles: bool
    queries: bool


DATASETS: dict[str, AmazonSpec] = {spec.name: spec for spec in (
    AmazonSpec("amazon-beauty", "Amazon Beauty 5-core with product titles",
               _BEAUTY_FILES, titles=True, queries=False),
    AmazonSpec("amazon-beauty-search",
               "Amazon Beauty 5-core with titles and semi-synthetic queries",
               _BEAUTY_FILES, titles=True, queries=True),
    AmazonSpec("amazon-sports", "Amazon Sports and Outdoors 5-core, interactions only",
               (_sequences("Sports", 3_784_674,
                           "240fd0484501ca53769c016cb1bc674ac7e420aef562b88cea1439b94a3ba044"),),
               titles=False, queries=False),
    AmazonSpec("amazon-toys", "Amazon Toys and Games 5-core, interactions only",
               (_sequences("Toys", 2_129_679,
                           "9c2f2cce5323c5e5fd840896a68f0274aba4c241c54f0bc77ac9183094004071"),),
               titles=False, queries=False),
)}


class DownloadError(RuntimeError):
    """An upstream file could not be fetched or did not match its pinned checksum."""


def get_spec(name: str) -> AmazonSpec:
    """Look a dataset up by name, listing the known ones when it is not there."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def read_sequences(path: Path) -> list[tuple[str, list[str], int]]:
    """(user, items oldest first, line) per user; rejects anything the protocol cannot split."""
    users: list[tuple[str, list[str], int]] = []
    first_line: dict[str, int] = {}
    for number, line in data_lines(path):
        tokens = line.split()
        if not tokens:
            continue
        user, items = tokens[0], tokens[1:]
        if user in first_line:
            raise DataError(path, number, None, f"duplicate user {user!r} "
                                                f"(first seen on line {first_line[user]})")
        first_line[user] = number
        bad = next((item for item in items if not _ASIN.fullmatch(item)), None)
        if bad is not None:
            raise DataError(path, number, None, f"malformed item id {bad!r}: expected "
                                                "a user id then 10-character ASINs")
        if len(items) < 3:
            raise DataError(path, number, None, f"user {user!r} has {len(items)} items; "
                                                "leave-one-out needs at least 3")
        users.append((user, items, number))
    if not users:
        raise DataError(path, 0, None, "no users")
    return users


def read_titles(id_map_path: Path, titles_path: Path) -> dict[str, str]:
    """ASIN -> title through the integer ids that join the two upstream files."""
    try:
        id_map = json.loads(read_data_text(id_map_path))
    except json.JSONDecodeError as exc:
        raise DataError(id_map_path, exc.lineno, None,
                        f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(id_map, dict) or not all(
            isinstance(value, int) and not isinstance(value, bool) for value in id_map.values()):
        raise DataError(id_map_path, 0, None, "expected a JSON object mapping ASINs to integers")
    names: dict[int, str] = {}
    reader = csv.reader(line for _, line in data_lines(titles_path))
    try:
        header = next(reader, None)
        if header != ["", "global_product_id", "name"]:
            raise DataError(titles_path, 1, None,
                            f"expected header ',global_product_id,name', got {header}")
        for row in reader:
            line = reader.line_num
            if len(row) != 3 or not row[1].isdigit():
                raise DataError(titles_path, line, None,
                                "expected 3 columns with an integer global_product_id")
            if int(row[1]) in names:
                raise DataError(titles_path, line, "global_product_id",
                                f"duplicate id {row[1]}")
            names[int(row[1])] = row[2]
    except csv.Error as exc:  # e.g. a field past the csv module's size limit, a NUL byte
        raise DataError(titles_path, reader.line_num, None, f"malformed CSV: {exc}") from None
    missing = next((asin for asin, number in id_map.items() if number not in names), None)
    if missing is not None:
        raise DataError(titles_path, 0, None,
                        f"no title for global_product_id {id_map[missing]} (ASIN {missing})")
    return {asin: names[number] for asin, number in id_map.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _provenance(source_dir: Path, spec: AmazonSpec) -> dict[str, Any]:
    """Checksums of the files actually used, and whether they are the pinned upstream ones."""
    files = {}
    for upstream in spec.files:
        path = source_dir / upstream.name
        if path.exists():
            sha256 = _sha256(path)
            files[upstream.name] = {"sha256": sha256, "bytes": path.stat().st_size,
                                    "upstream": upstream.page,
                                    "matches_upstream": sha256 == upstream.sha256}
    return files


def _example(user: str, items: list[str], t: int, max_history: int,
             query: Callable[[str, str], str] | None) -> Example:
    """Target s_t (1-based) with history s_1..s_{t-1}, keeping the last `max_history`;
    `query(target, example id)` writes the query of search variants."""
    target, example_id = items[t - 1], f"{user}-{t}"
    return Example(target=target, history=tuple(items[max(0, t - 1 - max_history):t - 1]),
                   query=query(target, example_id) if query else None, id=example_id)


def prepare_amazon(source_dir: Path, name: str, with_queries: bool = False,
                   max_history: int = 20, query_seed: int = 0) -> Dataset:
    """Build a known Amazon dataset from its upstream files in `source_dir`.

    `with_queries` turns amazon-beauty into amazon-beauty-search (the search variant
    always has queries). Title-less datasets (sports, toys) get empty item texts: only
    ID-based models make sense on them.
    """
    spec = get_spec(name)
    queries = with_queries or spec.queries
    if queries and not spec.titles:
        raise ValueError(f"{name} has no titles, so no queries can be written from them")
    if max_history < 1:
        raise ValueError(f"max_history must be at least 1, got {max_history}")
    source_dir = Path(source_dir)
    sequences_path = source_dir / SEQUENCES_FILE
    users = read_sequences(sequences_path)
    titles = read_titles(source_dir / ID_MAP_FILE, source_dir / TITLES_FILE) if spec.titles else {}

    query = (lambda target, key: make_query(titles[target], query_seed, key)) if queries else None
    order: dict[str, None] = {}  # items in order of first appearance
    splits: dict[str, list[Example]] = {"train": [], "valid": [], "test": []}
    for user, items, line in users:
        if spec.titles:
            unknown = next((item for item in items if item not in titles), None)
            if unknown is not None:
                raise DataError(sequences_path, line, None,
                                f"unknown ASIN {unknown!r} (not in {ID_MAP_FILE})")
        order.update(dict.fromkeys(items))
        n = len(items)
        splits["train"].extend(_example(user, items, t, max_history, query)
                               for t in range(2, n - 1))
        splits["valid"].append(_example(user, items, n - 1, max_history, query))
        splits["test"].append(_example(user, items, n, max_history, query))

    dataset_name = "amazon-beauty-search" if queries else spec.name
    meta: dict[str, Any] = {
        "description": DATASETS[dataset_name].description,
        "generator": "dgi.data.amazon.prepare_amazon",
        "source": {"origin": "McAuley et al. Amazon product data (2014), 5-core, research use",
                   "files": _provenance(source_dir, spec)},
        "protocol": PROTOCOL,
        "max_history": max_history,
        "counts": {"users": len(users), "items": len(order),
                   "interactions": sum(len(items) for _, items, _ in users),
                   **{split: len(examples) for split, examples in splits.items()}},
        "item_text": "product title" if spec.titles else "none (no titles upstream): "
                                                          "use ID-based models only",
    }
    if spec.titles:
        meta["counts"]["empty_titles"] = sum(1 for asin in order if not titles[asin])
    if queries:
        meta["queries"] = {"kind": "semi-synthetic", "seed": query_seed,
                           "procedure": QUERY_PROCEDURE}
    items = [Item(id=asin, text=titles.get(asin, "")) for asin in order]
    return Dataset(name=dataset_name, items=items, splits=splits, meta=meta)


def _verified(path: Path, upstream: UpstreamFile) -> bool:
    return path.is_file() and path.stat().st_size == upstream.size \
        and _sha256(path) == upstream.sha256


def _fetch(upstream: UpstreamFile, target: Path, timeout: float) -> None:
    """Stream one file to a temporary sibling, check size and sha256, then rename."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(upstream.url, timeout=timeout) as response, \
                temporary.open("xb") as handle:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                size += len(chunk)
                if size > upstream.size:
                    break  # no point in reading a file that is already too long
                digest.update(chunk)
                handle.write(chunk)
        if size != upstream.size or digest.hexdigest() != upstream.sha256:
            raise DownloadError(
                f"{upstream.url}: expected {upstream.size} bytes with sha256 {upstream.sha256}, "
                f"got {'more than ' if size > upstream.size else ''}{size} bytes"
                f"{'' if size > upstream.size else f' with sha256 {digest.hexdigest()}'}; "
                "the upstream file changed or the download was corrupted")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def download_amazon(name: str, out_dir: Path, timeout: float = 60.0) -> list[Path]:
    """Fetch the upstream files of a known dataset into `out_dir` (a `--source` for prepare).

    Files already present with the pinned checksum are kept, so reruns are cheap.
    """
    spec = get_spec(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for upstream in spec.files:
        target = out_dir / upstream.name
        if not _verified(target, upstream):
            try:
                _fetch(upstream, target, timeout)
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"{upstream.url}: HTTP {exc.code} {exc.reason}") from exc
            except OSError as exc:  # URLError, refused connection, DNS failure, timeout
                host = urllib.parse.urlsplit(upstream.url).netloc
                reason = getattr(exc, "reason", exc)
                pages = "; ".join(f"{file.name} <- {file.page}" for file in spec.files)
                raise DownloadError(
                    f"cannot reach {host}: {reason}; copy the files from {pages} "
                    f"(or from a machine that has them) into {out_dir} instead") from exc
        paths.append(target)
    return paths
