"""Resident memory of a served catalogue at scale: bytes per item of the index part (item vectors + SID table).

    python benchmarks/catalogue_memory.py [--items 1000000] [--width 128]

Writes a model directory with N synthetic items (random unit vectors, random 3 x 256 SIDs, short
ids and texts; untrained weights of the Beauty config), loads it in a fresh process with
`Retriever.load`, and records the process's resident-memory growth, the bytes of the item vectors and
of every SID-index tensor, and the latency of a dense and a generative search over the full catalogue.
Saves benchmarks/results/catalogue-memory.json (goal: <= 800 bytes per item for the index part).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dgi.config import load_config
from dgi.io import write_json
from dgi.nets.model import DGIModel
from dgi.model_dir import EncoderSpec, ModelFiles
from dgi.provenance import git_commit, machine, resident_bytes

RESULTS = Path(__file__).parent / "results" / "catalogue-memory.json"
CONFIG = Path(__file__).parents[1] / "configs" / "amazon-beauty.yaml"


def write_catalogue(path: Path, n_items: int, width: int, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    config = load_config([CONFIG], [f"model.width={width}", "model.item_id_embeddings=false"])
    sizes = list(config.quantizer.codebook_sizes)
    model = DGIModel(config, 384, sizes)
    vectors = torch.nn.functional.normalize(torch.randn(n_items, width, generator=generator), dim=-1)
    codes = torch.stack([torch.randint(0, size, (n_items,), generator=generator) for size in sizes], dim=1)
    ids = [f"I{i:08d}" for i in range(n_items)]
    ModelFiles(config, model.state_dict(), vectors, codes, ids, [f"synthetic item {i}" for i in range(n_items)],
               EncoderSpec("all-MiniLM-L6-v2", 384, (0.0,) * 384), sizes, 0).write(path)


def measure(path: Path) -> dict:
    """Runs in a fresh process: RSS before and after loading, tensor bytes, search latency."""
    from dgi.retriever import Retriever

    torch.set_num_threads(2)
    before = resident_bytes()
    started = time.perf_counter()
    retriever = Retriever.load(path)
    load_seconds = time.perf_counter() - started
    after = resident_bytes()
    n = len(retriever)
    index_tensors = {name: sum(t.nbytes for t in (value if isinstance(value, list) else [value]))
                     for name, value in vars(retriever.index).items()
                     if isinstance(value, torch.Tensor) or isinstance(value, list) and value
                     and all(isinstance(t, torch.Tensor) for t in value)}
    vectors = retriever.item_vectors.nbytes
    timings = {}
    histories = [[retriever.item_ids[i * 7919 % n] for i in range(j, j + 5)] for j in range(64)]
    for rule in ("dense", "lexicographic", "rerank"):
        run = lambda rule=rule: retriever.search([None] * 64, histories, k=10, rule=rule)  # noqa: E731
        run()
        started = time.perf_counter()
        run()
        timings[rule] = {"batch": 64, "ms_per_query": 1e3 * (time.perf_counter() - started) / 64}
    return {"items": n, "rss_growth_bytes": after - before, "load_seconds": load_seconds,
            "item_vector_bytes": vectors, "index_tensor_bytes": index_tensors,
            "index_part_bytes_per_item": (vectors + sum(index_tensors.values())) / n,
            "process_growth_bytes_per_item": (after - before) / n, "search": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the fresh child process
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalogue"
        started = time.perf_counter()
        write_catalogue(path, args.items, args.width)
        write_seconds = time.perf_counter() - started
        on_disk = sum(file.stat().st_size for file in path.iterdir())
        child = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True,
                               check=True)
        measured = json.loads(child.stdout.strip().splitlines()[-1])
    result = {"command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "git_commit": git_commit(),
              "machine": machine(), "width": args.width, "write_seconds": write_seconds,
              "bytes_on_disk": on_disk, "bytes_on_disk_per_item": on_disk / args.items, **measured}
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("items", "index_part_bytes_per_item", "process_growth_bytes_per_item",
                                             "load_seconds", "search")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
