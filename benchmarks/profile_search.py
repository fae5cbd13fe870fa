"""Where a constrained beam search spends its time: torch.profiler over DGI's generation, batch 1 and 256.

    python benchmarks/profile_search.py --items 10000 --out benchmarks/results/search-profile.md

The Beauty-sized random model and clustered catalogue of benchmarks/scale.py, one thread, lexicographic
rule, beam 20. Writes the top operators by self CPU time for each batch size, plus how the time splits
between the context encoder, the decoder steps, the constrained search bookkeeping and the ranking,
and the two floors that explain what is left: the torch calls a batch-1 query makes from Python times
the cost of one trivial call, and the matrix-product FLOPs a query needs against the rate this CPU
reaches on products of the search's shapes (fp32 and bf16).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from dgi.io import write_text
from dgi.provenance import git_commit, machine
from dgi.retriever import Retriever
from dgi.search.beam import beam_search

sys.path.insert(0, str(Path(__file__).parent))
import scale  # noqa: E402
from compile_search import CallCounter  # noqa: E402

MATMUL_FLOPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul")


@torch.no_grad()
def generate(retriever: Retriever, history: torch.Tensor) -> None:
    """The same work as `Retriever.generate`, with each stage labelled for the profiler."""
    no_query = torch.zeros(len(history), dtype=torch.bool)
    with record_function("1 context encoder"):
        context = retriever.context(history, None, no_query)
    with record_function("2 decoder memory"):
        memory = retriever.model.decoder.memory(context.memory, context.padding)

    steps = retriever.model.incremental_steps(context, memory)

    def step(prefix: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
        with record_function("3 decoder step"):
            return steps(prefix, parents)

    with record_function("4 beam search (with steps)"):
        beams = beam_search(step, len(history), retriever.index, retriever.search_config.beam_size)
    with record_function("5 ranking"):
        retriever.rank(context, beams, 10, "lexicographic")


def histories(retriever: Retriever, batch: int) -> torch.Tensor:
    history = torch.full((batch, 20), -1, dtype=torch.long)
    history[:, -5:] = torch.randint(len(retriever.item_ids), (batch, 5), generator=torch.Generator().manual_seed(1))
    return history


def profile_batch(retriever: Retriever, batch: int, calls: int) -> tuple[str, float, float]:
    """The operator table, the unprofiled ms per call and the matrix-product MFLOP per query."""
    history = histories(retriever, batch)
    for _ in range(3):
        generate(retriever, history)
    started = time.perf_counter()
    for _ in range(calls):
        generate(retriever, history)
    per_call_ms = 1000 * (time.perf_counter() - started) / calls
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(calls):
            generate(retriever, history)
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=48)
    mflop = sum(event.flops for event in averages if event.key in MATMUL_FLOPS) / (calls * batch) / 1e6
    return table, per_call_ms, mflop


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def dispatch_floor(retriever: Retriever) -> dict:
    """Torch calls one batch-1 query makes from Python, and what one trivial call ([20, 128] + 1) costs."""
    history = histories(retriever, 1)
    counter = CallCounter()
    with torch.no_grad(), counter:
        generate(retriever, history)
    x = torch.randn(20, 128)
    per_call = median_seconds(lambda: [x.add(1.0) for _ in range(1000)], 20) / 1000
    calls = sum(counter.by_caller.values())
    return {"calls": calls, "us_per_trivial_call": 1e6 * per_call, "ms_floor": 1e3 * calls * per_call,
            "calls_by_caller": dict(counter.by_caller.most_common(12))}


def matmul_rates() -> dict:
    """GFLOP/s of one decoder-shaped product (width 128 -> 256) with 20 rows (batch 1's beams) and 5,120
    rows (batch 256's), in fp32 and in bf16 (with the weight cast once, as a bf16 copy of the model would)."""
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        weight = torch.randn(256, 128).to(dtype)
        for rows in (20, 5120):
            x = torch.randn(rows, 128).to(dtype)
            seconds = median_seconds(lambda: [torch.nn.functional.linear(x, weight) for _ in range(50)], 10) / 50
            rates[f"{str(dtype).removeprefix('torch.')}_rows_{rows}"] = 2 * rows * 128 * 256 / seconds / 1e9
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    retriever = scale.random_retriever(args.items)
    sections = [f"# Constrained beam search profile ({args.items:,} items, 1 thread, beam 20, lexicographic)\n",
                f"Command: `{' '.join(['python', *map(shlex.quote, sys.argv)])}`; commit {git_commit()}; "
                f"machine {machine()}.\n"]
    mflop = {}
    for batch, calls in ((1, 200), (256, 5)):
        table, per_call_ms, mflop[batch] = profile_batch(retriever, batch, calls)
        sections += [f"## Batch {batch}: {per_call_ms:.2f} ms per call ({per_call_ms / batch:.3f} ms per query), "
                     f"unprofiled; {mflop[batch]:.1f} MFLOP of matrix products per query\n", "```", table, "```\n"]
    floor, rates = dispatch_floor(retriever), matmul_rates()
    sections += ["## Floors\n",
                 f"- Dispatch: a batch-1 query makes {floor['calls']} torch calls from Python; one trivial call "
                 f"costs {floor['us_per_trivial_call']:.2f} µs here, so {floor['ms_floor']:.2f} ms of its latency is "
                 f"dispatch alone, whatever the arithmetic. By caller: {floor['calls_by_caller']}.",
                 f"- Arithmetic: {mflop[256]:.1f} MFLOP of matrix products per query at batch 256. GFLOP/s of a "
                 f"decoder-shaped product (128 -> 256): " + ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items())
                 + f". At the fp32 rate of 5,120 rows the products alone cap batched search at "
                 f"{rates['float32_rows_5120'] * 1e3 / mflop[256]:,.0f} queries/s; at the bf16 rate, "
                 f"{rates['bfloat16_rows_5120'] * 1e3 / mflop[256]:,.0f}.\n"]
    write_text(args.out, "\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
