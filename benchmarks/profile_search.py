"""Where a constrained beam search spends its time: torch.profiler over DGI's generation, batch 1 and 256.

    python benchmarks/profile_search.py --items 10000 --out benchmarks/results/search-profile.md

The Beauty-sized random model and clustered catalogue of benchmarks/scale.py, one thread, lexicographic
rule, beam 20. Writes the top operators by self CPU time for each batch size, plus how the time splits
between the context encoder, the decoder steps, the constrained search bookkeeping and the ranking.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from dgi.config import load_config
from dgi.io import write_text
from dgi.nets.model import DGIModel
from dgi.provenance import git_commit, machine
from dgi.retriever import Retriever
from dgi.search.beam import beam_search
from dgi.search.index import SIDIndex

_spec = importlib.util.spec_from_file_location("scale", Path(__file__).with_name("scale.py"))
scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale)


def build(n: int) -> Retriever:
    config = load_config([scale.CONFIG], ["search.rule=lexicographic"])
    torch.manual_seed(0)
    model = DGIModel(config, config.model.width, config.quantizer.codebook_sizes, 0).eval()
    vectors = scale.clustered_catalogue(n, config.model.width, torch.Generator().manual_seed(n))
    model.quantizer.kmeans_init(vectors, 5, seed=0)
    with torch.no_grad():
        index = SIDIndex.build(model.quantizer.encode(vectors), model.quantizer.codebook_sizes)
    return Retriever(model, index, vectors, [str(i) for i in range(n)], [""] * n, config.search)


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


def profile_batch(retriever: Retriever, batch: int, calls: int) -> tuple[str, float]:
    history = torch.full((batch, 20), -1, dtype=torch.long)
    history[:, -5:] = torch.randint(len(retriever.item_ids), (batch, 5), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        generate(retriever, history)
    started = time.perf_counter()
    for _ in range(calls):
        generate(retriever, history)
    per_call_ms = 1000 * (time.perf_counter() - started) / calls
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            generate(retriever, history)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=48)
    return table, per_call_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    retriever = build(args.items)
    sections = [f"# Constrained beam search profile ({args.items:,} items, 1 thread, beam 20, lexicographic)\n",
                f"Command: `{' '.join(['python', *map(shlex.quote, sys.argv)])}`; commit {git_commit()}; "
                f"machine {machine()}.\n"]
    for batch, calls in ((1, 200), (256, 5)):
        table, per_call_ms = profile_batch(retriever, batch, calls)
        sections += [f"## Batch {batch}: {per_call_ms:.2f} ms per call ({per_call_ms / batch:.3f} ms per query), "
                     "unprofiled\n", "```", table, "```\n"]
    write_text(args.out, "\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
