"""``ServeOptions``: batching, limits and the network face of ``petclf serve``, one frozen value."""
from __future__ import annotations

from dataclasses import dataclass

from petclf.core.defaults import BACKENDS, PRECISIONS
from petclf.core.errors import UsageError, require_between, require_positive
from petclf.core.options import require_acceptance

__all__ = ["ServeOptions"]


@dataclass(frozen=True)
class ServeOptions:
    """How a server batches and what it refuses; the defaults suit one CPU machine answering a few clients.

    Example: ``app(["runs/pets/model"], options=ServeOptions(max_batch=64, timeout_s=10))``.
    """

    max_batch: int = 32  # images per forward pass: larger amortises more, but each batch waits longer for a core
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others; 0 runs what is queued at once
    max_body_mb: float = 32.0  # request bodies above this get 413 before they are read whole
    max_images: int = 64  # images in one request: one client cannot take every batch slot for itself
    timeout_s: float = 30.0  # a request not answered by then gets 504 (its queued images are dropped)
    precision: str = "auto"  # 'fp32' gives the same scores as Predictor.predict at fp32 for any batch size
    device: str | None = None  # None: the fastest available (CUDA, MPS, CPU)
    cors_origins: tuple[str, ...] = ()  # origins allowed to call the API from a browser page; () keeps CORS off
    access_log: bool = True  # one line per request on stderr
    # Host header names answered ('*.example.org' for subdomains, '*' for any). () leaves it to `serve`: loopback
    # names only when it listens on loopback (a page on another site cannot reach it by DNS rebinding), any otherwise.
    allowed_hosts: tuple[str, ...] = ()
    # Pixels being decoded at once, all requests together: decoding holds 10-16 bytes a pixel, so this bounds it
    # whatever the number of cores. A request's images must fit it together (else 413), one image alone (else
    # 422); below PIL's 89 Mpx per image it refuses images the scan and Predictor read.
    max_decode_mpx: float = 100.0
    max_header_kb: float = 32.0  # request line and headers above this get 431 (they are held in memory until whole)
    header_timeout_s: float = 10.0  # a connection whose request headers are not whole by then gets 408 and is closed
    # Runtime of the forward pass: 'torch', or the model's exported ONNX graph in 'onnxruntime' or 'openvino'
    # (fp32, exported and cached on first use; with int8, MODEL/model.int8.onnx from `petclf export --int8`).
    backend: str = "torch"
    int8: bool = False
    # Batches each model computes at once on a graph backend, each on its share of the cores: 1 answers a request
    # soonest; 2 or more answer more requests a second under load (BENCHMARKS.md, "streams"). torch: always 1.
    streams: int = 1
    # Share (0.5 to 1) of ordinary images each model with an "unknown" detector keeps known, as Predictor(unknown=)
    # takes it: its threshold moves along the model's stored validation curve. None: each model's own.
    unknown_accept: float | None = None

    def validate(self) -> "ServeOptions":
        """The options themselves, once every value is in range (else a UsageError naming the value and the fix).

        Example: ``ServeOptions(max_batch=0).validate()`` raises ``max_batch must be a positive integer``.
        """
        require_positive(max_batch=self.max_batch, max_images=self.max_images)
        require_between(0, 60_000, max_wait_ms=self.max_wait_ms)
        require_between(0.001, 16_384, max_body_mb=self.max_body_mb)
        require_between(0.001, 86_400, timeout_s=self.timeout_s)
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}. "
                             f"Received: precision={self.precision!r}.")
        if self.backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}. Received: backend={self.backend!r}.")
        if self.int8 and self.backend == "torch":
            raise UsageError("int8 graphs run on backend 'onnxruntime' or 'openvino': add --backend onnxruntime.")
        require_positive(streams=self.streams)
        if self.backend == "torch" and self.streams != 1:
            raise UsageError("streams apply to backend 'onnxruntime' or 'openvino'; the torch backend computes one "
                             "batch at a time on every core: add --backend openvino or leave out --streams.")
        if self.unknown_accept is not None:
            require_acceptance(unknown_accept=self.unknown_accept)
        require_between(1, 1_000_000, max_decode_mpx=self.max_decode_mpx)
        require_between(1, 1024, max_header_kb=self.max_header_kb)
        require_between(0.001, 3600, header_timeout_s=self.header_timeout_s)
        for name in ("cors_origins", "allowed_hosts"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise UsageError(f"{name} must be a tuple of non-empty strings such as "
                                 f"{('https://example.org',) if name == 'cors_origins' else ('example.org',)!r}, "
                                 f"not one string. Received: {name}={value!r}.")
        return self

    @property
    def max_decode_pixels(self) -> int:
        """``max_decode_mpx`` in pixels."""
        return int(self.max_decode_mpx * 1_000_000)

    @property
    def max_header_bytes(self) -> int:
        """``max_header_kb`` in bytes (KiB)."""
        return int(self.max_header_kb * 1024)

    @property
    def max_body_bytes(self) -> int:
        """``max_body_mb`` in bytes (MiB)."""
        return int(self.max_body_mb * 1024 * 1024)
