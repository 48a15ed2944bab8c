"""What a running server holds (models, batchers, threads, metrics) and the one path every prediction takes."""
from __future__ import annotations

import asyncio
import functools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Awaitable, TypeVar

import numpy as np
from starlette.requests import Request

from petclf.core.safe_text import printable
from petclf.serve.batching import Batcher, ForwardGate
from petclf.serve.budget import PixelBudget
from petclf.serve.decode import decode_pixels, read_image_bytes
from petclf.serve.errors import RequestError
from petclf.serve.metrics import Metrics
from petclf.serve.models import ServedModel
from petclf.serve.options import ServeOptions

__all__ = ["ServerState", "server_state"]

T = TypeVar("T")


def _not_ready() -> RequestError:
    return RequestError(503, "the server is starting or shutting down: try again in a moment.")


@dataclass
class ServerState:
    """The models by name, the options, the metrics, and (while running) the threads and batchers.

    Decoding runs on a pool of threads (PIL releases the GIL), between forward passes when one takes every
    core of the CPU; forward passes run on worker threads, as many as a model's graph has streams (one for
    torch): the event loop only reads requests and writes answers.
    """

    models: dict[str, ServedModel]
    options: ServeOptions
    metrics: Metrics
    batchers: dict[str, Batcher] = field(default_factory=dict)
    decoder: ThreadPoolExecutor | None = None
    worker: ThreadPoolExecutor | None = None
    budget: PixelBudget | None = None  # pixels decoded at once, all requests together
    explainers: dict = field(default_factory=dict)  # model name → its heat maps' Explainer, built on first use
    explain_lock: threading.Lock = field(default_factory=threading.Lock)  # one heat map at a time
    # 'new' → 'running' (by the app's lifespan, or by the first request where a host app does not run the
    # lifespan of apps mounted in it) → 'stopped' (lifespan shutdown, after the requests in flight).
    phase: str = "new"

    @property
    def ready(self) -> bool:
        """Whether predictions are answered now."""
        return self.phase == "running"

    def start(self) -> None:
        """Start the threads and a batcher per model, once; call on the running event loop."""
        if self.phase != "new":
            return
        self.decoder = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="petclf-decode")
        streams = max(model.predictor.streams for model in self.models.values())
        self.worker = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="petclf-forward")
        self.budget = PixelBudget(self.options.max_decode_pixels)
        # Decoding waits for a forward pass that takes every core of the CPU; on an accelerator, or beside a graph's
        # streams (each on its share of the cores), it runs alongside.
        cpu_gate = ForwardGate()
        for name, model in self.models.items():
            whole_cpu = model.predictor.device.type == "cpu" and model.predictor.streams == 1
            batcher = Batcher(model.logits, executor=self.worker, max_batch=self.options.max_batch,
                              max_wait_ms=self.options.max_wait_ms,
                              on_batch=functools.partial(self.metrics.observe_batch, name),
                              gate=cpu_gate if whole_cpu else None, slots=model.predictor.streams)
            batcher.start()
            self.batchers[name] = batcher
        self.phase = "running"

    async def stop(self) -> None:
        """Answer what is queued, then end the batchers and threads (after the server stopped taking requests)."""
        self.phase = "stopped"
        for batcher in self.batchers.values():
            await batcher.stop()
        self.batchers.clear()
        for pool in (self.decoder, self.worker):
            if pool is not None:
                pool.shutdown(wait=True)

    def model(self, name: str | None) -> ServedModel:
        """The model called ``name``; with None, the only one served (400 when several are)."""
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise RequestError(400, "several models are served: name one, as POST /models/NAME/predict, with NAME "
                                    f"one of {', '.join(self.models)}.")
        if name not in self.models:
            raise RequestError(404, f"no model named {printable(name)!r} is served: expected one of "
                                    f"{', '.join(self.models)} (GET /metadata lists them).")
        return self.models[name]

    async def predict_encoded(self, model: ServedModel, images: list[tuple[str, bytes]]) -> np.ndarray:
        """(n, classes) scores of encoded ``images`` (name, bytes): decoded off the loop, then batched."""
        if not self.ready:
            raise _not_ready()
        batcher = self.batchers[model.name]
        async with batcher.incoming():
            pixels = await self._decode(model, images)
        if not self.ready:  # stopped while this request waited to be decoded
            raise _not_ready()
        return await batcher.submit(pixels)

    async def predict_pixels(self, model: ServedModel, pixels: np.ndarray) -> np.ndarray:
        """(n, classes) scores of ready (n, presize, presize, 3) uint8 ``pixels``, batched with other requests."""
        if not self.ready:
            raise _not_ready()
        return await self.batchers[model.name].submit(pixels)

    async def decode_encoded(self, model: ServedModel, images: list[tuple[str, bytes]]) -> np.ndarray:
        """(n, presize, presize, 3) uint8 pixels of encoded ``images`` (name, bytes), under the pixel budget, for
        routes that do more than predict (heat maps)."""
        if not self.ready:
            raise _not_ready()
        return await self._decode(model, images)

    async def _decode(self, model: ServedModel, images: list[tuple[str, bytes]]) -> np.ndarray:
        """(n, presize, presize, 3) uint8 pixels of encoded ``images`` (name, bytes), decoded in parallel, off the
        event loop."""
        if not images:
            raise RequestError(400, "the request holds no image: send one image as the body (Content-Type: image/jpeg"
                                    ", …) or files as multipart/form-data (curl -F image=@cat.jpg).")
        if len(images) > self.options.max_images:
            raise RequestError(413, f"{len(images)} images in one request; the limit is {self.options.max_images}: "
                                    "split them over several requests (or start the server with a larger "
                                    "--max-images).")
        loop = asyncio.get_running_loop()
        # Headers first (no pixel decoded): what each image will take, so the request waits for its share of
        # the budget, or is refused, before any memory goes to its pixels.
        sizes = await asyncio.gather(*(
            loop.run_in_executor(self.decoder, functools.partial(decode_pixels, data, model.presize, name=name))
            for name, data in images))
        capacity = self.budget.capacity
        for (name, _), size in zip(images, sizes):
            if size > capacity:
                raise RequestError(422, f"{name} holds {size / 1e6:.1f} Mpx; the server decodes at most "
                                        f"{capacity / 1e6:g} Mpx at once: send a smaller image (or start the server "
                                        "with a larger --max-decode-mpx).")
        total = sum(sizes)
        if total > capacity:
            raise RequestError(413, f"the {len(images)} images of this request hold {total / 1e6:.1f} Mpx together; "
                                    f"the server decodes at most {capacity / 1e6:g} Mpx at once: send fewer or "
                                    "smaller images per request (or start the server with a larger "
                                    "--max-decode-mpx).")
        await self.budget.acquire(total)
        jobs = [self.decoder.submit(read_image_bytes, data, model.presize, name=name) for name, data in images]
        try:
            arrays = await asyncio.gather(*(asyncio.wrap_future(job) for job in jobs))
        finally:
            self._release_when_decoded(jobs, total, loop)
        return np.stack(arrays)

    def _release_when_decoded(self, jobs: list[Future], pixels: int, loop: asyncio.AbstractEventLoop) -> None:
        """Give the budget back once no thread decodes for the request any more (it may have failed or timed out)."""
        for job in jobs:
            job.cancel()  # a job not started yet never will: its request has its answer (or its error) already
        running = [job for job in jobs if not job.done()]
        if not running:
            self.budget.release(pixels)
            return
        # Threads still decoding hold their memory until they finish, whatever became of the request: so do its pixels.
        left, lock = [len(running)], threading.Lock()

        def finished(_job: Future) -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last and not loop.is_closed():
                loop.call_soon_threadsafe(self.budget.release, pixels)

        for job in running:
            job.add_done_callback(finished)

    async def within_timeout(self, work: Awaitable[T]) -> T:
        """``work``'s result, or 504 once the request has taken ``timeout_s`` (its queued images are dropped)."""
        try:
            return await asyncio.wait_for(work, self.options.timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(504, f"no answer within the server's {self.options.timeout_s:g} s limit: the server "
                                    "is overloaded or the request is too large; retry later or send fewer images.") \
                from None


def server_state(request: Request) -> ServerState:
    """The ``ServerState`` of the app that received ``request`` (started now if no lifespan started it)."""
    state = request.app.state.petclf
    state.start()
    return state
