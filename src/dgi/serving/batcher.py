"""Micro-batching: concurrent search requests share one beam search.

Requests wait in a queue; a single worker takes the first, gathers whatever else arrives within
`max_wait_ms` (up to `max_batch`), and runs them as one batch on the model thread, grouped by
ranking rule and beam size. Catalogue changes run on the same thread, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dgi.retriever import Retriever, SearchHit


@dataclass
class SearchJob:
    query: str | None
    history: list[str]
    k: int
    rule: str | None
    beam_size: int | None
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, retriever: Retriever, max_batch: int = 64, max_wait_ms: float = 2.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.retriever = retriever
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.on_batch = on_batch or (lambda size: None)
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgi-model")
        self._queue: asyncio.Queue[SearchJob] | None = None
        self._worker: asyncio.Task | None = None

    async def search(self, query: str | None, history: list[str], k: int, rule: str | None = None,
                     beam_size: int | None = None) -> list[SearchHit]:
        if self._worker is None:  # started lazily, inside the server's event loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(SearchJob(query, history, k, rule, beam_size, future))
        return await future

    async def on_model_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a catalogue change (or anything touching the retriever) between search batches."""
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, function, *args)

    async def _run(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(jobs) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            self.on_batch(len(jobs))
            groups: dict[tuple, list[SearchJob]] = {}
            for job in jobs:
                groups.setdefault((job.rule, job.beam_size), []).append(job)
            for (rule, beam_size), group in groups.items():
                try:
                    results = await self.on_model_thread(self._search_group, group, rule, beam_size)
                except Exception as error:  # one bad group must not stall the others
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(error)
                    continue
                for job, hits in zip(group, results):
                    if not job.future.done():
                        job.future.set_result(hits[: job.k])

    def _search_group(self, group: Sequence[SearchJob], rule: str | None, beam_size: int | None) -> list:
        return self.retriever.search([job.query for job in group], [job.history for job in group],
                                     k=max(job.k for job in group), rule=rule, beam_size=beam_size)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.model_thread.shutdown(wait=False, cancel_futures=True)
