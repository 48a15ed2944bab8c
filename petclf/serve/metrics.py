"""Operations: Prometheus metrics of one app (its own registry) and one access-log line per request."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from petclf.core.log import logger
from petclf.core.safe_text import printable

__all__ = ["Metrics", "ObserveRequests", "access_log"]

#: Access lines go through petclf's logger (``petclf: …`` on stderr), so one setting silences or redirects them.
access_log = logger.getChild("serve.access")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Requests (by route, method and status), their latency, batch sizes and images, in a registry of their own.

    A registry per app keeps two apps in one process (tests, a mounted app) from sharing counts.

    Example: ``Metrics(max_batch=32).render()`` → ``(b'# HELP petclf_requests_total …', 'text/plain; …')``.
    """

    def __init__(self, *, max_batch: int) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("petclf_requests", "HTTP requests answered, by route template, method and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("petclf_request_duration_seconds", "Time from a request's start to its answer.",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("petclf_requests_in_flight", "Requests being answered now.", registry=self.registry)
        buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch} - {b for b in (64, 128, 256) if b > max_batch})
        self.batch_size = Histogram("petclf_batch_size", "Images per forward pass.", ["model"],
                                    buckets=buckets, registry=self.registry)
        self.images = Counter("petclf_images", "Images predicted.", ["model"], registry=self.registry)

    def observe_batch(self, model: str, size: int) -> None:
        """Count one forward pass of ``size`` images of ``model``."""
        self.batch_size.labels(model).observe(size)
        self.images.labels(model).inc(size)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ObserveRequests:
    """ASGI middleware: each HTTP request is counted, timed and logged in one line once its answer is sent.

    Example: ``Starlette(routes, middleware=[Middleware(ObserveRequests, metrics=m, log=True)])``.
    """

    def __init__(self, app, *, metrics: Metrics, log: bool) -> None:
        self.app, self.metrics, self.log = app, metrics, log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before it answers

        async def send_observed(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.in_flight.dec()
            # The route's template, not the path: one series per endpoint, whatever paths clients try.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            if self.log:
                client = scope.get("client") or ("-", 0)
                query = scope.get("query_string", b"").decode("latin-1")
                path = scope["path"] + ("?" + query if query else "")
                access_log.info(f"{client[0]} {scope['method']} {printable(path)} {status} {seconds * 1000:.1f} ms")
