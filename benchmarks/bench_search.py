"""Time the vectorized beam search and ranking against their loop-based references.

Usage: python benchmarks/bench_search.py [--items 20000 --sizes 256 256 256 --batch 256 --beam 20]
Writes benchmarks/results/search-speed.json. The step function is a tiny random "decoder" whose
log-probs depend only on (query, prefix), as the search requires; its own time is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dgi.search.index import SIDIndex
from dgi.provenance import git_commit
from dgi.search.beam import beam_search, rank_items, reference_beam_search, reference_rank_items

RESULTS = Path(__file__).parent / "results" / "search-speed.json"


class ToyDecoder:
    """h = query + sum of prefix code embeddings; log-probs = log_softmax(h @ out_j.T). Times itself."""

    def __init__(self, sizes: list[int], batch: int, dim: int, g: torch.Generator) -> None:
        self.queries = torch.randn(batch, dim, generator=g)
        self.embed = [torch.randn(k, dim, generator=g) / dim**0.5 for k in sizes]
        self.out = [torch.randn(k, dim, generator=g) for k in sizes]
        self.seconds = 0.0

    def __call__(self, prefixes: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        start = time.perf_counter()
        h = self.queries.unsqueeze(1).expand(-1, prefixes.shape[1], -1)
        for level in range(prefixes.shape[-1]):
            h = h + self.embed[level][prefixes[..., level]]
        logp = (h @ self.out[prefixes.shape[-1]].T).log_softmax(-1)
        self.seconds += time.perf_counter() - start
        return logp


def timed(fn: Callable[[], object], repeats: int, decoder: ToyDecoder) -> tuple[dict, object]:
    """Min/median wall time over repeats (after one warm-up), and the share spent in the decoder."""
    result = fn()
    walls, decoder.seconds = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    return {"min_ms": 1e3 * min(walls), "median_ms": 1e3 * statistics.median(walls),
            "step_fn_ms_per_run": 1e3 * decoder.seconds / repeats, "repeats": repeats}, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 256, 256])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, torch.get_num_threads()}),
                        help="torch thread counts to time the fast versions with (a busy host hurts >1)")
    args = parser.parse_args()

    g = torch.Generator().manual_seed(args.seed)
    codes = torch.stack([torch.randint(k, (args.items,), generator=g) for k in args.sizes], 1)
    index = SIDIndex.build(codes, args.sizes)
    decoder = ToyDecoder(args.sizes, args.batch, args.dim, g)
    query_vectors = torch.nn.functional.normalize(decoder.queries, dim=-1)
    item_vectors = torch.nn.functional.normalize(torch.randn(args.items, args.dim, generator=g), dim=-1)

    def sweep(fn: Callable[[], object]) -> tuple[dict, object]:
        """Time ``fn`` at every requested thread count."""
        out = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            out[f"threads_{threads}"], result = timed(fn, args.repeats, decoder)
        return out, result

    timings, matches, beams = {}, {}, {}
    for mode, constrained in (("constrained", True), ("unconstrained", False)):
        search = (args.batch, index, args.beam, constrained)
        timings[f"beam_search_{mode}"], fast = sweep(lambda: beam_search(decoder, *search))
        timings[f"reference_beam_search_{mode}"], ref = timed(lambda: reference_beam_search(decoder, *search),
                                                               1, decoder)
        matches[f"beam_search_{mode}"] = torch.equal(fast.codes, ref.codes) and torch.equal(fast.scores, ref.scores)
        beams[mode] = fast
    rank = (beams["constrained"], index, query_vectors, item_vectors, args.k)
    timings["rank_items_lexicographic"], fast = sweep(lambda: rank_items(*rank))
    timings["reference_rank_items_lexicographic"], ref = timed(lambda: reference_rank_items(*rank), 1, decoder)
    matches["rank_items_lexicographic"] = torch.equal(fast.items, ref.items)

    report = {
        "command": shlex.join(["python", *sys.argv]),
        "git_commit": git_commit(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]},
        "config": vars(args) | {"collision_stats": index.collision_stats()},
        "timings": timings,
        "speedup_constrained_by_threads": {
            threads: timings["reference_beam_search_constrained"]["min_ms"] / timing["min_ms"]
            for threads, timing in timings["beam_search_constrained"].items()},
        "fast_equals_reference": matches,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
