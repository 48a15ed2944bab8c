"""``PixelBudget``: how many pixels the server decodes at once, shared by every request, first come first served.

Decoding holds a few bytes per pixel of the image (more than its file: a 172 KB PNG can hold 88
million pixels), and the decoders run on as many threads as there are cores, so without a shared
bound the memory a server needs grows with its core count and with what its clients send. A
request takes the pixels of all its images at once, before any is decoded, so two requests never
hold part of the budget each while waiting for the rest.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import AsyncIterator

__all__ = ["PixelBudget"]


class PixelBudget:
    """At most ``capacity`` pixels held at once; requests wait in the order they came (a large one is not starved).

    Used on one event loop. Example::

        async with budget.hold(pixels):
            arrays = await decode(images)
    """

    def __init__(self, capacity: int) -> None:
        self.capacity, self.used = capacity, 0
        self._waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    async def acquire(self, pixels: int) -> None:
        """Wait until ``pixels`` are free, and take them (``pixels`` must be at most ``capacity``)."""
        if pixels > self.capacity:
            raise ValueError(f"{pixels} pixels can never fit a budget of {self.capacity}")
        if not self._waiting and self.used + pixels <= self.capacity:
            self.used += pixels
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # granted, then cancelled before it could run
                self.release(pixels)
            else:
                self._grant()  # it may have been the one the others queued behind
            raise

    def release(self, pixels: int) -> None:
        """Give back ``pixels`` taken by ``acquire``, letting the requests waiting in front go."""
        self.used -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            pixels, granted = self._waiting[0]
            if granted.done():  # its request was cancelled (timed out) while it waited
                self._waiting.popleft()
            elif self.used + pixels <= self.capacity:
                self._waiting.popleft()
                self.used += pixels
                granted.set_result(None)
            else:
                return

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """``acquire`` on entry, ``release`` on exit."""
        await self.acquire(pixels)
        try:
            yield
        finally:
            self.release(pixels)
