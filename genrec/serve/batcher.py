"""Dynamic micro-batching: concurrent retrieval requests wait (at most ``max_wait``) in a queue and are
decoded together by one ``retrieve_arrays`` call, at most ``max_batch`` at a time, in a single worker thread,
so the event loop stays free and throughput grows with load. While a batch decodes, the next one gathers.
The window is only held open while requests arrive faster than it lasts (the median of recent gaps between
arrivals is below ``max_wait``): a lone client is never made to wait for company that is not coming.

Admission control: the queue is bounded (``max_queue``) and each request may carry a deadline. A request is
refused at once (``Unavailable``, 503 with Retry-After) when the queue is full or when the batches ahead of
it, at the recent time per batch, would take it past its deadline; a queued request whose deadline has
passed (or would pass before its batch could finish) when the next batch is formed is dropped then, without
being decoded (no timer per request: under overload the event loop's time is the decoder's too). Deadlines are read from
``clock`` (monotonic seconds; tests inject their own)."""
from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from genrec.rank.candidates import source_label
from genrec.retriever import Candidate, Retriever


@dataclass(frozen=True)
class Query:
    """One retrieval request as the batcher sees it: known item ids only, oldest first."""

    history: np.ndarray
    retailer_id: int | None
    k: int
    exclude_history: bool
    explain: bool = False  # each product's feature values and sources too


@dataclass
class _Job:
    retriever: Retriever  # the model snapshot the request was validated against: it is decoded by the same
    query: Query
    future: asyncio.Future
    deadline: float | None = None  # on the batcher's clock; None: none
    enqueued: float = field(default_factory=time.monotonic)


class Unavailable(RuntimeError):
    """The request cannot be served now (503): ``code`` says why, ``retry_after_s`` when to try again."""

    def __init__(self, code: str, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


class ShuttingDown(Unavailable):
    """The batcher is closing and takes no new requests."""

    def __init__(self, message: str = "the server is shutting down") -> None:
        super().__init__("shutting_down", message, 1)


class MicroBatcher:
    """Gathers ``submit`` calls into batched decodes. ``start`` inside the running event loop, ``close`` to
    finish every queued request and stop. ``max_queue`` bounds the waiting requests (None: unbounded),
    ``timeout_s`` is the default deadline of a request (None: none), of which the batcher plans to use all
    but ``headroom`` (a share kept for what it cannot see: the connection, the client's own time);
    ``on_shed(reason)`` and ``on_drop()`` count refusals and deadline drops."""

    def __init__(self, max_batch: int, max_wait_s: float,
                 on_batch: Callable[[int, float], None] | None = None, *, max_queue: int | None = None,
                 timeout_s: float | None = None, headroom: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 on_shed: Callable[[str], None] | None = None, on_drop: Callable[[], None] | None = None) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # called with (batch size, seconds) after every decode
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.headroom = headroom
        self.clock = clock
        self.on_shed, self.on_drop = on_shed, on_drop
        self._batch_s = 0.0  # recent seconds per batch (moving average, on ``clock``): what a place in line costs
        self._decoding_since: float | None = None  # when the batch now decoding began (``clock``)
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

    def deadline(self, timeout_ms: float | None = None, waited_s: float = 0.0) -> float | None:
        """When a request that arrived ``waited_s`` ago should be answered by: ``timeout_s`` after its
        arrival, or sooner when the client asks (``timeout_ms``; a client can shorten its deadline, never
        lengthen it), less the ``headroom`` share."""
        limits = [t for t in (self.timeout_s, None if timeout_ms is None else timeout_ms / 1000.0) if t is not None]
        return self.clock() - waited_s + (1.0 - self.headroom) * min(limits) if limits else None

    def _expected_finish(self, now: float, waiting: int) -> float:
        """When a request queued now behind ``waiting`` others should be decoded: the rest of the batch in
        the worker, the full batches ahead, its own."""
        current = 0.0 if self._decoding_since is None else max(0.0, self._batch_s - (now - self._decoding_since))
        return now + current + (waiting // self.max_batch + 1) * self._batch_s

    def retry_after_s(self) -> int:
        """Whole seconds until the queue now waiting should have been decoded (at least 1)."""
        return max(1, math.ceil(len(self._pending) / self.max_batch * self._batch_s))

    def _refuse(self, code: str, message: str) -> Unavailable:
        if self.on_shed is not None:
            self.on_shed(code)
        return Unavailable(code, message, self.retry_after_s())

    def _expired(self, job: _Job) -> Unavailable:
        if self.on_drop is not None:
            self.on_drop()
        return Unavailable("deadline_exceeded", "the request's deadline passed while it waited for a batch; "
                           "it was not decoded", self.retry_after_s())

    def admit(self) -> None:
        """Unavailable unless a request could be queued now (shutting down, queue full): a check cheap enough
        to make before a request's body is even parsed."""
        if self._closing or self._task is None:
            if self.on_shed is not None:
                self.on_shed("shutting_down")
            raise ShuttingDown()
        waiting = len(self._pending)
        if self.max_queue is not None and waiting >= self.max_queue:
            raise self._refuse("queue_full", f"{waiting} requests already wait for a batch (the queue holds "
                               f"{self.max_queue}); retry later")

    async def submit(self, retriever: Retriever, query: Query, deadline: float | None = None) -> list[Candidate]:
        """Queue one request and wait for its products, best first. Unavailable (and nothing decoded) when
        the queue is full, when ``deadline`` (on ``clock``) cannot be met, or when it has passed by the time
        its batch is formed."""
        self.admit()
        waiting = len(self._pending)
        now = self.clock()
        if deadline is not None and self._expected_finish(now, waiting) > deadline:
            raise self._refuse("deadline_unreachable", f"{waiting} requests wait ahead of this one: it could not "
                               f"be answered within its deadline ({1000 * (deadline - now):.0f} ms from now)")
        job = _Job(retriever, query, asyncio.get_running_loop().create_future(), deadline)
        if self._last_arrival is not None:
            self._gaps.append(job.enqueued - self._last_arrival)
        self._last_arrival = job.enqueued
        self._pending.append(job)
        self._wakeup.set()
        try:  # a job whose deadline passes is dropped when the next batch is formed (no timer per request)
            return await job.future
        except asyncio.CancelledError:
            self._forget(job)
            raise

    def _forget(self, job: _Job) -> None:
        """Take a job its caller no longer waits for out of the queue."""
        job.future.cancel()
        try:
            self._pending.remove(job)
        except ValueError:  # already taken into a batch
            pass

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
            batch = self._take_batch()
            if not batch:
                continue
            try:
                await self._run(batch)
            except Exception as e:  # never leave a caller waiting, whatever broke
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)

    def _take_batch(self) -> list[_Job]:
        """Up to ``max_batch`` queued jobs, dropping (unanswered-for or late) ones that must not be decoded:
        those whose caller went away and those that could not finish before their deadline."""
        batch: list[_Job] = []
        now = self.clock()
        while self._pending and len(batch) < self.max_batch:
            job = self._pending.popleft()
            if job.future.done():
                continue
            if job.deadline is not None and now + self._batch_s > job.deadline:
                job.future.set_exception(self._expired(job))
                continue
            batch.append(job)
        return batch

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
        began = self._decoding_since = self.clock()
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
        took = self.clock() - began
        self._decoding_since = None
        self._batch_s = took if self._batch_s == 0.0 else 0.8 * self._batch_s + 0.2 * took


def _decode(jobs: list[_Job]) -> list[list[Candidate]]:
    """One batched decode of requests sharing a model and beam width, whatever their retailers and exclude
    flags; each row is cut to its own k (with one beam width, the top k of a longer list is the top-k list)."""
    retriever = jobs[0].retriever
    k = max(job.query.k for job in jobs)
    explain = any(job.query.explain for job in jobs)
    out = retriever.retrieve_arrays(
        [job.query.history for job in jobs], [job.query.retailer_id for job in jobs], k,
        [job.query.exclude_history for job in jobs], **({"explain": True} if explain else {}),
    )
    results = []
    for row, job in enumerate(jobs):
        cut = slice(0, job.query.k)
        ids, sids, scores, srcs = (a[row, cut].tolist() for a in (out.item_ids, out.sids, out.scores, out.sources))
        feats = out.explained[row][cut] if job.query.explain else [None] * len(ids)
        results.append([Candidate(i, str(s), float(sc), source_label(src), f)
                        for i, s, sc, src, f in zip(ids, sids, scores, srcs, feats) if i >= 0])
    return results


def _decode_or_error(job: _Job) -> list[Candidate] | Exception:
    """One request alone; its exception is returned, to be raised in its caller."""
    try:
        return _decode([job])[0]
    except Exception as e:  # handed to the request's future, where the route turns it into a response
        return e
