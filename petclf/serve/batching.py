"""Dynamic batching: images of concurrent requests gathered into one forward pass, each answer to its own request.

One forward of 32 images costs far less than 32 forwards of one (the weights are read once,
the matrix kernels run full), so under load the server runs what has queued as one batch.
The first request of a batch waits for company at most ``max_wait_ms``, and only while other
requests are on their way (being decoded): a lone request runs at once instead of idling. While
a batch runs on a worker thread the next one gathers, so under load batches fill without waiting.
A model runs ``slots`` batches at once: one for a forward that takes every core (torch), where two
forwards at once would only fight over the same cores; as many as its graph has streams, each on its
share of the cores, where one batch's threads would otherwise wait for the core that the event loop
or a decoder took (BENCHMARKS.md, "streams"). The event loop stays free to read requests.
With one slot on a CPU, images are decoded between forward passes rather than during them
(``ForwardGate``): a forward pass already uses every core, and OpenMP's threads, which wait for each
other at every layer, slow down badly when anything else takes a core from them. Requests that arrive
during a forward pass are decoded together once it ends, and form the next batch.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Iterator

import numpy as np

__all__ = ["Batcher", "ForwardGate"]


class ForwardGate:
    """Closed while a forward pass runs on the CPU; decoding waits for it to open (see the module's docstring).

    Example: ``gate = ForwardGate()``; ``Batcher(..., gate=gate)``; ``async with batcher.incoming(): decode()``.
    """

    def __init__(self) -> None:
        self._running = 0
        self._open: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._open is None:  # made on first use, on the running event loop
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    async def wait_open(self) -> None:
        """Return once no forward pass runs."""
        await self._event().wait()

    @contextlib.contextmanager
    def closed(self) -> Iterator[None]:
        """Keep the gate closed for the block (a forward pass)."""
        self._running += 1
        self._event().clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._event().set()


@dataclass
class _Waiting:
    pixels: np.ndarray  # (k, presize, presize, 3) uint8: one request's images
    future: asyncio.Future
    since: float = field(default_factory=time.monotonic)


class Batcher:
    """Queues (k, H, W, 3) pixel arrays from many requests and answers each with its rows of ``run``'s output.

    ``run`` takes one stacked (n, H, W, 3) array and returns an (n, classes) array; it runs on
    ``executor``, ``slots`` batches at once at most (``run`` must then be safe from that many threads,
    and ``executor`` have as many). ``on_batch(n)`` is told each batch's size (for metrics). With a
    ``gate``, requests entering ``incoming`` wait while a forward pass of any batcher sharing the gate runs.

    Example::

        batcher = Batcher(lambda px: probs_of(px), executor=worker, max_batch=32, max_wait_ms=5)
        batcher.start()                         # on the running event loop
        async with batcher.incoming():          # a batch gathering now waits for this request
            pixels = await decode(upload)
        probs = await batcher.submit(pixels)   # (k, classes), in the order of ``pixels``
        await batcher.stop()                    # answers what is queued, then ends
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, executor: Executor, max_batch: int,
                 max_wait_ms: float, on_batch: Callable[[int], None] | None = None,
                 gate: ForwardGate | None = None, slots: int = 1) -> None:
        self._run, self._executor, self._on_batch, self._gate = run, executor, on_batch, gate
        self.max_batch, self.max_wait_s, self.slots = max_batch, max_wait_ms / 1000, slots
        self._free: asyncio.Semaphore | None = None  # batches that may start now (made on the running loop)
        self._running: set[asyncio.Task] = set()
        self._queue: deque[_Waiting] = deque()
        self._queued_images = 0
        self._incoming = 0  # requests being decoded, whose images will be submitted soon
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        """Start gathering batches on the running event loop."""
        self._arrived, self._free, self._stopping = asyncio.Event(), asyncio.Semaphore(self.slots), False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="petclf-batcher")

    async def stop(self) -> None:
        """Answer every request still queued (without waiting for more), then end."""
        if self._task is None:
            return
        self._stopping = True
        self._arrived.set()
        await self._task
        await asyncio.gather(*self._running)
        self._task = None

    @contextlib.asynccontextmanager
    async def incoming(self) -> AsyncIterator[None]:
        """Mark a request as on its way (its images being decoded, once the gate is open): a gathering batch waits
        for it, up to ``max_wait_ms``. Submit right after the block, without awaiting anything else in between."""
        if self._gate is not None:
            await self._gate.wait_open()
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            if self._arrived is not None:
                self._arrived.set()  # a batch that waited only for this request need not wait any more

    async def submit(self, pixels: np.ndarray) -> np.ndarray:
        """The rows of ``run``'s output for ``pixels``, computed in a batch with whatever else is queued.

        Cancelling the caller (a request's timeout) drops its images if their batch has not started.
        """
        if self._task is None or self._stopping:
            raise RuntimeError("the batcher is not running (the server is starting or shutting down).")
        waiting = _Waiting(pixels, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        self._queued_images += len(pixels)
        self._arrived.set()
        return await waiting.future

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._free.acquire()  # a slot: until one is free, what arrives queues into the next batch
            await self._gather()
            batch = self._take()
            if not batch:
                self._free.release()
                continue
            task = asyncio.get_running_loop().create_task(self._answer(batch), name="petclf-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather(self) -> None:
        """Wait until a full batch is queued, no other request is on its way, the oldest request has waited
        ``max_wait_ms``, or the server stops."""
        await asyncio.sleep(0)  # requests let through the gate as the last forward pass ended count as on their way
        deadline = self._queue[0].since + self.max_wait_s
        while self._queued_images < self.max_batch and self._incoming > 0 and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
                return

    def _take(self) -> list[_Waiting]:
        """Requests from the front of the queue up to ``max_batch`` images (at least one request); timed-out ones go."""
        batch: list[_Waiting] = []
        count = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled by its request's timeout: nobody waits for the answer
                self._queue.popleft()
                self._queued_images -= len(head.pixels)
                continue
            if batch and count + len(head.pixels) > self.max_batch:
                break
            self._queue.popleft()
            self._queued_images -= len(head.pixels)
            batch.append(head)
            count += len(head.pixels)
        return batch

    async def _answer(self, batch: list[_Waiting]) -> None:
        """Run ``batch`` in its slot (freed at the end) and hand each request its rows, or the error."""
        try:
            pixels = batch[0].pixels if len(batch) == 1 else np.concatenate([w.pixels for w in batch])
            if self._on_batch is not None:
                self._on_batch(len(pixels))
            with self._gate.closed() if self._gate is not None else contextlib.nullcontext():
                out = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, pixels)
        except Exception as err:  # noqa: BLE001 - handed to every waiting request, which answers with it
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(err)
            return
        finally:
            self._free.release()
        start = 0
        for waiting in batch:
            rows = out[start:start + len(waiting.pixels)]
            start += len(waiting.pixels)
            if not waiting.future.done():
                waiting.future.set_result(rows)
