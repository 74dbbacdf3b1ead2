"""Dynamic micro-batching: concurrent retrieval requests wait (at most ``max_wait``) in a queue and are
decoded together by one ``retrieve_arrays`` call, at most ``max_batch`` at a time, in a single worker thread,
so the event loop stays free and throughput grows with load. While a batch decodes, the next one gathers.
The window is only held open while requests arrive faster than it lasts (the median of recent gaps between
arrivals is below ``max_wait``): a lone client is never made to wait for company that is not coming."""
from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from genrec.retriever import Candidate, Retriever


@dataclass(frozen=True)
class Query:
    """One retrieval request as the batcher sees it: known item ids only, oldest first."""

    history: np.ndarray
    retailer_id: int | None
    k: int
    exclude_history: bool


@dataclass
class _Job:
    retriever: Retriever  # the model snapshot the request was validated against: it is decoded by the same
    query: Query
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class ShuttingDown(RuntimeError):
    """The batcher is closing and takes no new requests."""


class MicroBatcher:
    """Gathers ``submit`` calls into batched decodes. ``start`` inside the running event loop, ``close`` to
    finish every queued request and stop."""

    def __init__(self, max_batch: int, max_wait_s: float,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # called with (batch size, seconds) after every decode
        self._pending: deque[_Job] = deque()
        self._gaps: deque[float] = deque(maxlen=32)  # recent seconds between arrivals
        self._last_arrival: float | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrec-model")

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._pending)

    def start(self) -> None:
        """Start gathering (needs a running event loop)."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="genrec-batcher")

    async def submit(self, retriever: Retriever, query: Query) -> list[Candidate]:
        """Queue one request and wait for its products, best first."""
        if self._closing or self._task is None:
            raise ShuttingDown("the server is shutting down")
        job = _Job(retriever, query, asyncio.get_running_loop().create_future())
        if self._last_arrival is not None:
            self._gaps.append(job.enqueued - self._last_arrival)
        self._last_arrival = job.enqueued
        self._pending.append(job)
        self._wakeup.set()
        return await job.future

    async def close(self) -> None:
        """Take no new requests, decode every queued one, stop the worker thread."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
        self._executor.shutdown(wait=True)

    async def _collect(self) -> None:
        """Form batches: wait for a first request, then for more until the batch is full or the first one
        has waited ``max_wait_s`` (requests that queued during the previous decode go out at once)."""
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._pending[0].enqueued + self.max_wait_s
            while len(self._pending) < self.max_batch and not self._closing and self._busy_traffic():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            try:
                await self._run(batch)
            except Exception as e:  # never leave a caller waiting, whatever broke
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)

    def _busy_traffic(self) -> bool:
        """Whether requests have lately come closer together than the window, so waiting may fill the batch."""
        return len(self._gaps) >= 2 and statistics.median(self._gaps) < self.max_wait_s

    async def _run(self, batch: list[_Job]) -> None:
        """Decode a batch in the worker thread: one call per (model, beam width) group, which mixes
        retailers and exclude flags (usually the whole batch is one group)."""
        groups: dict[tuple, list[_Job]] = {}
        for job in batch:
            key = (id(job.retriever), max(job.retriever.beam_width, job.query.k))
            groups.setdefault(key, []).append(job)
        loop = asyncio.get_running_loop()
        for jobs in groups.values():
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, _decode, jobs)
            except Exception:  # one bad request must not fail its batch-mates: decode them one by one
                results = [await loop.run_in_executor(self._executor, _decode_or_error, job) for job in jobs]
            if self.on_batch is not None:
                self.on_batch(len(jobs), time.perf_counter() - start)
            for job, result in zip(jobs, results):
                if job.future.done():  # the caller went away
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)


def _decode(jobs: list[_Job]) -> list[list[Candidate]]:
    """One batched decode of requests sharing a model and beam width, whatever their retailers and exclude
    flags; each row is cut to its own k (with one beam width, the top k of a longer list is the top-k list)."""
    retriever = jobs[0].retriever
    k = max(job.query.k for job in jobs)
    out = retriever.retrieve_arrays(
        [job.query.history for job in jobs], [job.query.retailer_id for job in jobs], k,
        [job.query.exclude_history for job in jobs],
    )
    results = []
    for row, job in enumerate(jobs):
        ids, sids, scores = out.item_ids[row, :job.query.k], out.sids[row, :job.query.k], out.scores[row, :job.query.k]
        keep = ids >= 0
        results.append([Candidate(int(i), str(s), float(sc))
                        for i, s, sc in zip(ids[keep].tolist(), sids[keep].tolist(), scores[keep].tolist())])
    return results


def _decode_or_error(job: _Job) -> list[Candidate] | Exception:
    """One request alone; its exception is returned, to be raised in its caller."""
    try:
        return _decode([job])[0]
    except Exception as e:  # handed to the request's future, where the route turns it into a response
        return e
