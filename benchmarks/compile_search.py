"""Does torch.compile pay for constrained generation on the CPU? Eager against compiled decoder steps.

    python benchmarks/compile_search.py --out benchmarks/results/search-compile.json

A Beauty-sized DGI model with random weights (latency does not depend on training) over a clustered
10,000-item synthetic catalogue (as `scale.py`), lexicographic rule, beam 20, one thread. Batch 1 is
timed per query, alternating eager and compiled calls so that a load change hits both alike; batch 256
is timed as throughput. Also written: the number of torch calls one batch-1 query makes from Python
(where the time goes when the arithmetic is ~3 MFLOP), the compile seconds and whether the compiled
search returns the same items.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from dgi.io import write_json
from dgi.provenance import git_commit, machine

sys.path.insert(0, str(Path(__file__).parent))
from scale import HISTORY, random_retriever  # noqa: E402

K = 10


class CallCounter(TorchFunctionMode):
    """Counts the torch functions called from Python, by the calling module and function."""

    def __init__(self) -> None:
        super().__init__()
        self.by_caller: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        frame = sys._getframe(1)
        while frame is not None and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename:
            frame = frame.f_back
        if frame is not None:
            self.by_caller[f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    retriever = random_retriever(args.items)
    model, config = retriever.model, retriever.model.config
    histories = torch.full((args.queries, config.data.max_history), -1, dtype=torch.long)
    histories[:, -HISTORY:] = torch.randint(args.items, (args.queries, HISTORY), generator=torch.Generator().manual_seed(1))

    def search(rows: torch.Tensor) -> torch.Tensor:
        return retriever.generate(rows, None, torch.zeros(len(rows), dtype=torch.bool), K, "lexicographic").items

    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        eager_items = torch.cat([search(histories[s:s + 256]) for s in range(0, args.queries, 256)])
        counter = CallCounter()
        with counter:
            search(histories[:1])
        eager_step = model.decoder.step
        torch._dynamo.config.cache_size_limit = 64  # one graph per (batch, beams, position): keep them all compiled
        compiled_step = torch.compile(eager_step, dynamic=False)
        started = time.perf_counter()
        model.decoder.step = compiled_step
        search(histories[:1])
        search(histories[:256])
        compile_seconds = time.perf_counter() - started
        compiled_items = torch.cat([search(histories[s:s + 256]) for s in range(0, args.queries, 256)])
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for i in range(args.queries):
            for name, step in (("eager", eager_step), ("compiled", compiled_step)):
                model.decoder.step = step
                started = time.perf_counter()
                search(histories[i:i + 1])
                times[name].append((time.perf_counter() - started) * 1e3)
        throughput = {}
        for name, step in (("eager", eager_step), ("compiled", compiled_step)):
            model.decoder.step = step
            started = time.perf_counter()
            for _ in range(3):
                search(histories[:256])
            throughput[name] = 3 * 256 / (time.perf_counter() - started)
    result = {
        "command": shlex.join([sys.executable, *sys.argv]), "git_commit": git_commit(),
        "machine": {**machine(), "load_average_1min_before": load_before}, "items": args.items, "threads": 1,
        "torch_calls_per_batch1_query": sum(counter.by_caller.values()),
        "torch_calls_by_caller": dict(counter.by_caller.most_common()),
        "compile_seconds": compile_seconds, "same_items": bool(torch.equal(eager_items, compiled_items)),
        **{name: {"p50_ms_b1": statistics.median(t), "p99_ms_b1": statistics.quantiles(t, n=100)[98],
                  "qps_b256": throughput[name]} for name, t in times.items()},
    }
    result["compiled_over_eager_p50"] = result["compiled"]["p50_ms_b1"] / result["eager"]["p50_ms_b1"]
    write_json(args.out, result)
    print({key: result[key] for key in ("torch_calls_per_batch1_query", "compile_seconds", "same_items",
                                        "eager", "compiled", "compiled_over_eager_p50")})


if __name__ == "__main__":
    main()
