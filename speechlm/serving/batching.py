"""Dynamic batching: concurrent requests share one generate call.

Requests wait in a bounded queue; the worker takes the first one, then keeps taking until it holds
``max_batch`` jobs or ``max_wait_s`` has passed since the first, and runs the batch in a single worker thread
(one model, one batch at a time). While a batch decodes, newcomers queue up and form the next batch. A full
queue is refused at once (:class:`QueueFull`: the route answers 503 with Retry-After) rather than letting
latency grow without bound. A job whose client left or timed out is marked cancelled: it is dropped before
its batch starts, and its row stops decoding at the next token.

Tokens travel from the worker thread to the request's coroutine through an ``asyncio.Queue`` fed with
``loop.call_soon_threadsafe``; the stream ends with :data:`END` or an exception.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

END = object()
"""Put on a job's stream after its last token."""


class QueueFull(Exception):
    """The batcher's queue is full; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"server busy: the request queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One row of a batch: what the model needs and where its tokens go."""

    payload: Any
    """What the batch runner reads (the engine's prompt, audio, limits)."""
    stream: asyncio.Queue = field(default_factory=asyncio.Queue)
    """Tokens (ints), then END or an exception."""
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Collect jobs into batches and hand each batch to ``run_batch(jobs, emit)`` in one worker thread.

    ``emit(job, item)`` (thread-safe) delivers a token, END or an exception to the job's stream; the runner
    must end every job's stream. ``max_queue`` bounds the jobs waiting (not those decoding).
    """

    def __init__(self, run_batch: Callable[[list[Job], Callable[[Job, Any], None]], None], max_batch: int = 8,
                 max_wait_s: float = 0.01, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.batch_sizes: list[int] = []  # every batch run, for /health and the benchmark
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechlm-batch")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seconds_per_batch = 1.0  # running estimate for Retry-After

    # ---- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.create_task(self._worker(), name="speechlm-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    # ---- submitting -----------------------------------------------------------------------------------
    def submit(self, payload: Any) -> Job:
        """Queue a job or raise :class:`QueueFull` at once."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running (start() it inside the event loop)")
        job = Job(payload)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(self.retry_after()) from None
        return job

    def submit_many(self, payloads: list[Any]) -> list[Job]:
        """All or nothing: a request whose pieces do not all fit is refused whole."""
        if self._queue is not None and self._queue.qsize() + len(payloads) > self.max_queue:
            raise QueueFull(self.retry_after())
        return [self.submit(p) for p in payloads]

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: batches ahead times the measured time per batch."""
        ahead = self.waiting / self.max_batch + 1
        return max(1, int(ahead * self._seconds_per_batch + 0.999))

    # ---- the worker -----------------------------------------------------------------------------------
    async def _worker(self) -> None:
        assert self._queue is not None and self._loop is not None
        while True:
            batch = [await self._queue.get()]
            deadline = self._loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - self._loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            live = [j for j in batch if not j.cancelled]
            for j in batch:
                if j.cancelled:
                    j.stream.put_nowait(END)
            if not live:
                continue
            t0 = time.monotonic()
            try:
                await self._loop.run_in_executor(self._pool, self.run_batch, live, self._emit)
            except Exception as e:  # the runner failed as a whole: every job hears it
                for j in live:
                    self._emit(j, e)
            self.batch_sizes.append(len(live))
            del self.batch_sizes[:-1000]
            self._seconds_per_batch = 0.8 * self._seconds_per_batch + 0.2 * (time.monotonic() - t0)

    def _emit(self, job: Job, item: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(job.stream.put_nowait, item)
