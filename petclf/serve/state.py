"""What a running server holds (models, batchers, threads, metrics) and the one path every prediction takes."""
from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Awaitable, TypeVar

import numpy as np
from starlette.requests import Request

from petclf.core.safe_text import printable
from petclf.serve.batching import Batcher, ForwardGate
from petclf.serve.decode import read_image_bytes
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

    Decoding runs on a pool of threads (PIL releases the GIL), between forward passes when these run on
    the CPU; forward passes run on one worker thread: the event loop only reads requests and writes answers.
    """

    models: dict[str, ServedModel]
    options: ServeOptions
    metrics: Metrics
    batchers: dict[str, Batcher] = field(default_factory=dict)
    decoder: ThreadPoolExecutor | None = None
    worker: ThreadPoolExecutor | None = None
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
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="petclf-forward")
        cpu_gate = ForwardGate()  # on an accelerator the CPU is free to decode during a forward pass
        for name, model in self.models.items():
            batcher = Batcher(model.logits, executor=self.worker, max_batch=self.options.max_batch,
                              max_wait_ms=self.options.max_wait_ms,
                              on_batch=functools.partial(self.metrics.observe_batch, name),
                              gate=cpu_gate if model.predictor.device.type == "cpu" else None)
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
        arrays = await asyncio.gather(*(
            loop.run_in_executor(self.decoder, functools.partial(read_image_bytes, data, model.presize, name=name))
            for name, data in images))
        return np.stack(arrays)

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
