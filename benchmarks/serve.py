"""`petclf serve` under load: dynamic batching against one prediction per request and the model floor, side by side.

Usage:  python benchmarks/serve.py [--requests 5000] [--concurrency 1,8,32] [--work DIR]

Model: resnet18 from scratch (pretrained=False) at 64 px (presize 96), saved by petclf; requests:
generated 400×300 JPEG photos (benchmarks/photos.py), one image per POST /predict, rotated over 320
files. Each server runs in its own process at its default precision; the load comes from this process,
a lean keep-alive HTTP/1.1 client on asyncio (no per-request client library cost), with `concurrency`
connections each sending its next request as soon as its answer arrives.

  serve      `python -m petclf.cli serve MODEL` as users start it (batching: --max-batch 32, --max-wait-ms 5)
  unbatched  the same app with POST /predict calling Predictor.predict once per request (Starlette's thread
             pool), i.e. what one writes without a batcher
  floor      the network alone: batched forward passes (batch 32) on ready uint8 pixels, at the same precision

Also: cold start (command → first answer) and the server's peak RSS after warm-up and after the run.
Targets: at concurrency 32, serve ≥ 0.7 × floor and ≥ 2 × unbatched; at concurrency 8, p99 ≤ 3 × p50.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ARCH, SIZE, MAX_BATCH = "resnet18", 64, 32

# The unbatched candidate: petclf's own app, with POST /predict answered by Predictor.predict, one call per request.
UNBATCHED = """
import io, sys, uvicorn
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route
from petclf.serve import app
from petclf.serve.body import read_body

application = app([sys.argv[1]])
predictor = application.state.petclf.models["model"].predictor

async def predict(request):
    body = await read_body(request, limit=32 * 2**20)
    top = await run_in_threadpool(predictor.predict, Image.open(io.BytesIO(body)), topk=3)
    return JSONResponse({"model": "model", "predictions": [[{"label": l, "probability": p} for l, p in top]]})

application.router.routes.insert(0, Route("/predict", predict, methods=["POST"]))
uvicorn.run(application, host="127.0.0.1", port=int(sys.argv[2]), log_config=None, access_log=False)
"""

FLOOR = """
import json, resource, sys, time, torch
from petclf import Predictor
predictor = Predictor(sys.argv[1])
n, batch = int(sys.argv[2]), int(sys.argv[3])
p = predictor.pipeline.presize
x = torch.randint(0, 256, (batch, p, p, 3), dtype=torch.uint8)
with torch.inference_mode():
    for _ in range(3):
        predictor.net(x)
    steps = max(1, n // batch)
    start = time.perf_counter()
    for _ in range(steps):
        predictor.net(x)
    wall = time.perf_counter() - start
print(json.dumps({"throughput": steps * batch / wall, "precision": predictor.precision,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _model_and_photos(work: Path) -> tuple[Path, list[Path]]:
    """A resnet18 (64 px, untrained, from scratch) saved by petclf, and the photos; made once per --work."""
    sys.path.insert(0, str(HERE))
    from photos import build_photos

    photos = build_photos(work / "photos", n=320)
    model = work / "model"
    if not (model / "petclf.json").is_file():
        sys.path.insert(0, str(ROOT))
        from petclf import quick_learner, save_model

        save_model(quick_learner(photos, arch=ARCH, size=SIZE, bs=32, pretrained=False, device="cpu"), model)
    return model, sorted(photos.glob("*.jpg"))


def _request(body: bytes) -> bytes:
    return (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _load(port: int, requests: list[bytes], *, total: int, concurrency: int) -> dict:
    """Send ``total`` requests over ``concurrency`` keep-alive connections; latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(total))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for k in counter:
                start = time.perf_counter()
                writer.write(requests[k % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if not head.startswith(b"HTTP/1.1 200") or b'"predictions"' not in body:
                    errors.append((head.split(b"\r\n", 1)[0] + b" " + body[:200]).decode("latin-1"))
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"rps": len(latencies) / wall, "p50_ms": 1000 * ordered[len(ordered) // 2],
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], "errors": len(errors),
            "first_error": errors[0] if errors else ""}


def _wait_for_answer(port: int, request: bytes, proc: subprocess.Popen, timeout: float = 120) -> float:
    """Seconds until the server at ``port`` answers ``request`` with 200 (polled every 20 ms)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"no answer on port {port} within {timeout:.0f} s")


def _batches(port: int) -> tuple[float, float]:
    """(images, forward passes) so far, from ``petclf_batch_size``'s sum and count at the server's /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(("petclf_batch_size_sum", "petclf_batch_size_count"))}
    return values.get("petclf_batch_size_sum", 0.0), values.get("petclf_batch_size_count", 0.0)


def measure_server(command: Callable[[int], list[str]], photos: list[Path], *, total: int, levels: list[int],
                   log: Path, env: dict[str, str], batches: bool = False,
                   on_level: Callable[[int, dict], None] | None = None) -> dict:
    """Start ``command(port)``, wait for its first answer (cold start), warm it up, then send ``total`` requests
    at each concurrency level: figures per level, peak RSS after warm-up and at the end; with ``batches``, the
    images per forward pass at each level from the server's /metrics (petclf serve only). ``on_level(c, figures)``
    is called as each level ends (to print progress during a long run)."""
    port = _free_port()
    requests = [_request(p.read_bytes()) for p in photos]
    proc = subprocess.Popen(command(port), cwd=tempfile.gettempdir(), env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))
    try:
        results = {"cold_start_s": _wait_for_answer(port, requests[0], proc)}
        asyncio.run(_load(port, requests, total=max(200, 4 * max(levels)), concurrency=max(levels)))  # warm-up
        results["peak_rss_warm_mb"] = _rss_mb(proc.pid)[1]
        for c in levels:
            before = _batches(port) if batches else None
            results[c] = asyncio.run(_load(port, requests, total=total, concurrency=c))
            if before is not None:
                after = _batches(port)
                results[c]["mean_batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            if on_level is not None:
                on_level(c, results[c])
        results["peak_rss_end_mb"] = _rss_mb(proc.pid)[1]
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _run_server(kind: str, model: Path, photos: list[Path], *, total: int, levels: list[int], work: Path) -> dict:
    def command(port: int) -> list[str]:
        if kind == "serve":
            return [sys.executable, "-m", "petclf.cli", "serve", str(model), "--port", str(port),
                    "--max-batch", str(MAX_BATCH)]
        return [sys.executable, "-c", UNBATCHED, str(model), str(port)]

    def level(c: int, r: dict) -> None:
        print(f"  {kind:<9} c={c:<3} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
              f"  errors {r['errors']}" + (f"  ({r['first_error']})" if r["errors"] else ""), flush=True)

    results = measure_server(command, photos, total=total, levels=levels, log=work / f"{kind}.log",
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, on_level=level)
    print(f"  {kind:<9} cold start {results['cold_start_s']:.2f} s, peak RSS {results['peak_rss_warm_mb']:.0f} MB "
          f"after warm-up, {results['peak_rss_end_mb']:.0f} MB after the run", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="timed requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "petclf-bench-serve"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    model, photos = _model_and_photos(work)
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; {ARCH} {SIZE} px from scratch, {args.requests} requests per level, "
          f"one 400x300 JPEG each", flush=True)
    proc = subprocess.run([sys.executable, "-c", FLOOR, str(model), str(args.requests), str(MAX_BATCH)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    floor = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  floor     batch {MAX_BATCH} forward on ready pixels ({floor['precision']}): "
          f"{floor['throughput']:.1f} img/s, peak RSS {floor['peak_rss_mb']:.0f} MB", flush=True)
    serve = _run_server("serve", model, photos, total=args.requests, levels=levels, work=work)
    plain = _run_server("unbatched", model, photos, total=args.requests, levels=levels, work=work)
    top, mid = max(levels), (8 if 8 in levels else levels[len(levels) // 2])
    s, u = serve[top], plain[top]
    print(f"ratios at c={top}: serve/floor {s['rps'] / floor['throughput']:.2f} (target >= 0.7), "
          f"serve/unbatched {s['rps'] / u['rps']:.2f} (target >= 2); at c={mid}: serve p99/p50 "
          f"{serve[mid]['p99_ms'] / serve[mid]['p50_ms']:.2f} (target <= 3); serve RSS growth "
          f"{serve['peak_rss_end_mb'] / serve['peak_rss_warm_mb'] - 1:+.1%}; errors "
          f"{sum(r[c]['errors'] for r in (serve, plain) for c in levels)}")
    print(json.dumps({"floor": floor, "serve": serve, "unbatched": plain}, indent=1, default=str))


if __name__ == "__main__":
    main()
