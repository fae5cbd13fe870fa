"""Search speed and memory at catalogue scale: DGI's generation against its dense path and FAISS, one run.

    python benchmarks/scale.py --sizes 10000,100000,1000000 --out benchmarks/results/scale.json

The JSON is keyed by size, then by method (plus "catalogue": codebook sizes and the share of items
with a unique SID), each with p50_ms_b1, p99_ms_b1, qps_b256, recall_at_10, build_seconds and
bytes_per_item. A Beauty-sized DGI model (configs/amazon-beauty.yaml: width 128, 2 context + 2 decoder layers,
3 x 256 codebooks) with random weights (latency does not depend on training) over a clustered
synthetic catalogue of 128-d unit item vectors; each item's SID is its residual-k-means code. Every
query is a history of 5 items. For each size and method: batch-1 p50 / p99 latency (ms), batched
throughput at 256 queries per call (q/s), index build seconds, resident bytes per item of what the
search holds (RSS growth from the input catalogue to the built index and retriever, after garbage
collection and malloc_trim; DGI holds its item vectors in float16 unless `--item-vectors float32`),
and recall@10 against the exact float32 top 10 of the dense path (so a fast answer that is wrong shows). Every time includes encoding the context (the context encoder
runs for FAISS too, which then searches z_q). One torch / FAISS thread unless `--threads`. Where
bf16 is native (AVX512-BF16 / AMX, or CUDA) `dgi_lexicographic_bf16` runs the decoder steps under bf16
autocast (`search.precision=bf16`). The figure (FILE.png beside the JSON) plots latency, throughput
and recall against the size.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch

from dgi.config import load_config
from dgi.device import autocast_dtype
from dgi.figures import scale_png
from dgi.io import write_json
from dgi.nets.model import DGIModel
from dgi.provenance import git_commit, machine, resident_bytes
from dgi.retriever import Retriever
from dgi.search.index import SIDIndex

CONFIG = Path(__file__).parents[1] / "configs" / "amazon-beauty.yaml"
HISTORY, K, BATCH = 5, 10, 256


def clustered_catalogue(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Unit vectors around n / 100 random centres (as item embeddings cluster by category)."""
    centres = torch.nn.functional.normalize(torch.randn(max(n // 100, 1), dim, generator=generator), dim=-1)
    which = torch.randint(len(centres), (n,), generator=generator)
    noise = 0.5 * torch.randn(n, dim, generator=generator) / dim**0.5  # norm ~0.5 around a unit centre
    return torch.nn.functional.normalize(centres[which] + noise, dim=-1)


def latencies(run: Callable[[torch.Tensor], object], histories: torch.Tensor, repeats: int) -> dict:
    run(histories[:1])  # warm-up
    times = []
    for row in range(repeats):
        started = time.perf_counter()
        run(histories[row:row + 1])
        times.append(1000 * (time.perf_counter() - started))
    started = time.perf_counter()
    batches = 0
    for start in range(0, len(histories), BATCH):
        run(histories[start:start + BATCH])
        batches += 1
    qps = len(histories) / (time.perf_counter() - started)
    times.sort()
    return {"p50_ms_b1": statistics.median(times), "p99_ms_b1": times[min(len(times) - 1, int(0.99 * len(times)))],
            "qps_b256": qps}


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(e)) / len(e) for f, e in zip(found, exact)]))


def released_resident_bytes() -> int:
    """Resident memory once garbage is collected and the C allocator has returned its free pages: what
    the process holds, not what building it left in malloc's free lists (glibc's malloc_trim)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the number then includes free lists
        pass
    return resident_bytes()


def random_retriever(n: int, kmeans_iterations: int = 5) -> Retriever:
    """The Beauty-sized random model over the clustered n-item catalogue (seeded by n), lexicographic rule,
    float32 vectors: what the profiling benchmarks time (`measure_size` builds its own, timing the build)."""
    config = load_config([CONFIG], ["search.rule=lexicographic"])
    torch.manual_seed(0)
    model = DGIModel(config, config.model.width, config.quantizer.codebook_sizes, 0).eval()
    vectors = clustered_catalogue(n, config.model.width, torch.Generator().manual_seed(n))
    model.quantizer.kmeans_init(vectors, kmeans_iterations, seed=0)
    with torch.no_grad():
        index = SIDIndex.build(model.quantizer.encode(vectors), model.quantizer.codebook_sizes)
    return Retriever(model, index, vectors, [str(i) for i in range(n)], [""] * n, config.search)


def measure_size(n: int, args: argparse.Namespace) -> dict:
    generator = torch.Generator().manual_seed(n)
    config = load_config([CONFIG], ["search.rule=lexicographic", f"search.item_vectors={args.item_vectors}"])
    torch.manual_seed(0)
    model = DGIModel(config, config.model.width, config.quantizer.codebook_sizes, 0).eval()
    vectors = clustered_catalogue(n, config.model.width, generator)  # the input (float32), not what search holds
    before = released_resident_bytes()
    device = torch.device(args.device)
    started = time.perf_counter()
    model.quantizer.kmeans_init(vectors, args.kmeans_iterations, seed=0)
    with torch.no_grad():
        codes = model.quantizer.encode(vectors)
    index = SIDIndex.build(codes, model.quantizer.codebook_sizes)
    retriever = Retriever(model.to(device), index, vectors.to(device), [str(i) for i in range(n)], [""] * n,
                          config.search)
    dgi_build = time.perf_counter() - started
    del codes
    dgi_bytes = (released_resident_bytes() - before) / n
    held = [retriever.item_vectors, *(t for value in vars(index).values()
                                      for t in (value if isinstance(value, list) else [value]) if isinstance(t, torch.Tensor))]
    tensor_bytes = sum(t.numel() * t.element_size() for t in held) / n
    exact_search = Retriever(retriever.model, index, vectors.to(device), retriever.item_ids, retriever.item_texts,
                             config.search.model_copy(update={"item_vectors": "float32"}))
    unique_share = index.collision_stats()["unique_share"]

    histories = torch.randint(n, (args.queries, HISTORY), generator=generator)
    padded = torch.full((args.queries, config.data.max_history), -1, dtype=torch.long)
    padded[:, -HISTORY:] = histories
    no_query = torch.zeros(args.queries, dtype=torch.bool)

    def context_vectors(rows: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return retriever.context(rows, None, torch.zeros(len(rows), dtype=torch.bool)).vector.cpu().numpy()

    with torch.no_grad():  # the float32 dense path: what every method's recall is measured against
        exact = exact_search.dense(padded, None, no_query, K)[0].cpu().numpy()
    methods: dict[str, dict] = {}
    runs = {
        "dgi_lexicographic": lambda rows: retriever.generate(rows, None, torch.zeros(len(rows), dtype=torch.bool), K,
                                                             "lexicographic").items,
        "dgi_rerank": lambda rows: retriever.generate(rows, None, torch.zeros(len(rows), dtype=torch.bool), K,
                                                      "rerank").items,
        "dgi_dense": lambda rows: retriever.dense(rows, None, torch.zeros(len(rows), dtype=torch.bool), K)[0],
    }
    if autocast_dtype(device, "auto") is not None:  # bf16 is native here: the decoder steps in bf16 too
        fast = Retriever(retriever.model, index, retriever.item_vectors, retriever.item_ids, retriever.item_texts,
                         config.search.model_copy(update={"precision": "bf16"}))
        runs["dgi_lexicographic_bf16"] = lambda rows: fast.generate(rows, None, torch.zeros(len(rows), dtype=torch.bool),
                                                                    K, "lexicographic").items
    for name, run in runs.items():
        timing = latencies(run, padded, args.repeats)
        found = np.concatenate([run(padded[s:s + BATCH]).cpu().numpy() for s in range(0, args.queries, BATCH)])
        methods[name] = {**timing, "recall_at_10": recall_at_k(found[:, :K], exact),
                         "build_seconds": 0.0 if name == "dgi_dense" else dgi_build,
                         "bytes_per_item": dgi_bytes, "tensor_bytes_per_item": tensor_bytes}
    items = np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)
    for name, make in (("faiss_flat", lambda d: faiss.IndexFlatIP(d)),
                       ("faiss_hnsw", lambda d: faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT))):
        gc.collect()
        before = resident_bytes()
        started = time.perf_counter()
        ann = make(items.shape[1])
        if name == "faiss_hnsw":
            ann.hnsw.efConstruction = 40
        faiss.omp_set_num_threads(args.build_threads)  # building is not what is timed against DGI
        ann.add(items)
        faiss.omp_set_num_threads(args.threads)
        if name == "faiss_hnsw":
            ann.hnsw.efSearch = 64
        build = time.perf_counter() - started
        ann_bytes = (resident_bytes() - before) / n

        def search(rows: torch.Tensor, ann=ann) -> torch.Tensor:
            return torch.from_numpy(ann.search(context_vectors(rows), K)[1])

        timing = latencies(search, padded, args.repeats)
        found = np.concatenate([search(padded[s:s + BATCH]).numpy() for s in range(0, args.queries, BATCH)])
        methods[name] = {**timing, "recall_at_10": recall_at_k(found, exact), "build_seconds": build,
                         "bytes_per_item": ann_bytes}
        del ann
    return {"catalogue": {"codebook_sizes": list(model.quantizer.codebook_sizes), "unique_sid_share": unique_share},
            **methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=1024, help="queries per size (batched 256 at a time)")
    parser.add_argument("--repeats", type=int, default=200, help="batch-1 queries timed per method")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where DGI runs (FAISS runs on the CPU)")
    parser.add_argument("--build-threads", type=int, default=2, help="FAISS threads while building an index")
    parser.add_argument("--kmeans-iterations", type=int, default=10)
    parser.add_argument("--item-vectors", choices=["float16", "float32"], default="float16",
                        help="how DGI's retriever holds the item vectors (search.item_vectors)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)  # now, not after the last size's minutes of work
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    load_before = machine()["load_average_1min"]
    results = {}
    for n in (int(size) for size in args.sizes.split(",")):
        results[str(n)] = measure_size(n, args)
        print(json.dumps({n: results[str(n)]}), flush=True)
    by_size = {int(n): {m: r for m, r in methods.items() if m != "catalogue"} for n, methods in results.items()}
    write_json(args.out, {**results, "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
                          "git_commit": git_commit(), "machine": {**machine(), "load_average_1min_before": load_before},
                          "threads": args.threads, "device": args.device, "item_vectors": args.item_vectors, "history_items": HISTORY, "k": K,
                          "batch": BATCH})
    args.out.with_suffix(".png").write_bytes(scale_png(by_size))


if __name__ == "__main__":
    main()
