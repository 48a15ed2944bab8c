"""The batcher on its own: batches fill up to max_batch, each caller gets its rows, cancelled callers drop out."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from petclf.serve.batching import Batcher, ForwardGate


def _run_batches(sizes: list[int], *, max_batch: int, max_wait_ms: float) -> list[int]:
    """Submit requests of ``sizes`` images at once, check each gets its own rows; return the batch sizes run."""
    seen: list[int] = []

    def run(pixels: np.ndarray) -> np.ndarray:
        return pixels[:, 0, 0, :2].astype(np.float32)  # each image's own id, so a mix-up shows

    async def main():
        with ThreadPoolExecutor(1) as worker:
            batcher = Batcher(run, executor=worker, max_batch=max_batch, max_wait_ms=max_wait_ms, on_batch=seen.append)
            batcher.start()
            requests, start = [], 0
            for n in sizes:
                ids = np.arange(start, start + n)
                requests.append(np.broadcast_to(ids[:, None, None, None], (n, 2, 2, 3)).astype(np.uint8).copy())
                start += n

            async def request(pixels: np.ndarray) -> np.ndarray:
                async with batcher.incoming():  # as the server does while it decodes a request's images
                    await asyncio.sleep(0)
                return await batcher.submit(pixels)

            answers = await asyncio.gather(*(request(r) for r in requests))
            await batcher.stop()
        return requests, answers

    requests, answers = asyncio.run(main())
    for request, answer in zip(requests, answers):
        assert np.array_equal(answer[:, 0], request[:, 0, 0, 0])
    return seen


def test_concurrent_requests_fill_batches_up_to_max_batch():
    assert _run_batches([1] * 20, max_batch=8, max_wait_ms=50) == [8, 8, 4]


def test_a_request_larger_than_max_batch_runs_whole_and_others_follow():
    assert _run_batches([3, 12, 2], max_batch=8, max_wait_ms=50) == [3, 12, 2]


def test_zero_wait_runs_what_is_queued():
    assert sum(_run_batches([1] * 6, max_batch=4, max_wait_ms=0)) == 6


def test_a_cancelled_request_is_dropped_from_its_batch():
    seen: list[int] = []

    async def main():
        with ThreadPoolExecutor(1) as worker:
            batcher = Batcher(lambda px: px[:, 0, 0, :1].astype(np.float32), executor=worker, max_batch=8,
                              max_wait_ms=200, on_batch=seen.append)
            batcher.start()
            async with batcher.incoming():  # another request on its way keeps the batch waiting
                gone = asyncio.ensure_future(batcher.submit(np.zeros((3, 1, 1, 3), np.uint8)))
                await asyncio.sleep(0.01)
                gone.cancel()
            kept = await batcher.submit(np.ones((2, 1, 1, 3), np.uint8))
            await batcher.stop()
            return kept

    assert asyncio.run(main()).shape == (2, 1) and seen == [2]


def test_a_lone_request_does_not_wait_for_company():
    async def main() -> float:
        with ThreadPoolExecutor(1) as worker:
            batcher = Batcher(lambda px: px[:, 0, 0, :1].astype(np.float32), executor=worker, max_batch=8,
                              max_wait_ms=5000)
            batcher.start()
            start = time.perf_counter()
            async with batcher.incoming():
                pixels = np.ones((1, 1, 1, 3), np.uint8)
            await batcher.submit(pixels)
            seconds = time.perf_counter() - start
            await batcher.stop()
            return seconds

    assert asyncio.run(main()) < 1.0


def test_decoding_waits_for_the_forward_pass_on_the_gate():
    events: list[str] = []

    def run(pixels: np.ndarray) -> np.ndarray:
        events.append("forward starts")
        time.sleep(0.2)
        events.append("forward ends")
        return pixels[:, 0, 0, :1].astype(np.float32)

    async def main() -> None:
        with ThreadPoolExecutor(1) as worker:
            batcher = Batcher(run, executor=worker, max_batch=8, max_wait_ms=0, gate=ForwardGate())
            batcher.start()
            first = asyncio.ensure_future(batcher.submit(np.ones((1, 1, 1, 3), np.uint8)))
            await asyncio.sleep(0.05)  # the first forward pass runs now
            async with batcher.incoming():
                events.append("decoding")
            await asyncio.gather(first, batcher.submit(np.ones((1, 1, 1, 3), np.uint8)))
            await batcher.stop()

    asyncio.run(main())
    assert events[:3] == ["forward starts", "forward ends", "decoding"]


def test_slots_run_that_many_batches_at_once_and_no_more():
    running, most, lock = [0], [0], threading.Lock()
    both = threading.Barrier(2, timeout=10)  # the first two batches meet here only if they run together

    def run(pixels: np.ndarray) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if pixels[0, 0, 0, 0] < 2:
            both.wait()
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return pixels[:, 0, 0, :1].astype(np.float32)

    async def main() -> list[np.ndarray]:
        with ThreadPoolExecutor(3) as worker:  # a thread to spare: the slots, not the pool, must hold back the third
            batcher = Batcher(run, executor=worker, max_batch=1, max_wait_ms=0, slots=2)
            batcher.start()
            answers = await asyncio.gather(*(batcher.submit(np.full((1, 1, 1, 3), k, np.uint8)) for k in range(6)))
            await batcher.stop()
            return answers

    answers = asyncio.run(main())
    assert [int(a[0, 0]) for a in answers] == list(range(6)) and most[0] == 2
