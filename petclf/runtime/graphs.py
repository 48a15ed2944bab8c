"""Run a model's exported ONNX graph with ONNX Runtime or OpenVINO, in place of the torch network.

The graph is the one ``petclf export --onnx`` writes (preprocessing inside: uint8 pixels in), so a
``Predictor`` on another backend reads images, flips them for TTA and decides exactly as with torch;
only the forward call changes. Without a graph given, the fp32 graph is exported on first use and kept
in petclf's cache folder under the hash of the model's files (weights and petclf.json), so a retrained
or recalibrated model never runs a stale graph. An int8 graph (``petclf export --int8``) records the
same hash and is refused when it no longer matches its model.
"""
from __future__ import annotations

import os
import queue
from pathlib import Path

import numpy as np
import torch

from petclf.core.defaults import BACKENDS
from petclf.core.errors import UsageError
from petclf.data.cachedir import cache_dir
from petclf.runtime.export import HASH_KEY, export_onnx, model_hash

__all__ = ["GraphNet", "INT8_FILE", "cached_graph", "graph_for", "graph_precision", "require_runtime"]

#: Where ``petclf export --int8`` writes inside the model directory, and where ``--int8`` looks.
INT8_FILE = "model.int8.onnx"
_EXTRAS = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}


def require_runtime(backend: str):
    """The runtime package of ``backend`` imported, or a UsageError naming the extra that installs it.

    Example: ``ort = require_runtime("onnxruntime")``.
    """
    if backend not in _EXTRAS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}. Received: backend={backend!r}.")
    module, extra = _EXTRAS[backend]
    try:
        return __import__(module)
    except ImportError:
        raise UsageError(f"the {backend} backend needs the {module} package: pip install 'petclf[{extra}]'.") from None


def cached_graph(model_dir: str | Path) -> Path:
    """The model's fp32 ONNX graph, exported now if the cache holds none for these exact weights.

    Example: ``cached_graph("runs/pets/model")`` → ``Path('~/.cache/petclf/graphs/3f1c….onnx')``.
    """
    from petclf.core.atomic import atomic_path  # noqa: PLC0415

    key = model_hash(model_dir)
    path = cache_dir() / "graphs" / f"{key}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # two processes exporting at once each write a whole file
            export_onnx(model_dir, tmp)
    return path


def graph_for(model_dir: str | Path, *, int8: bool = False, graph: str | Path | None = None) -> Path:
    """The graph a non-torch backend runs: ``graph`` as given, the model's int8 export, or its cached fp32 graph.

    Example: ``graph_for("runs/pets/model", int8=True)`` → ``Path('runs/pets/model/model.int8.onnx')``.
    """
    if graph is not None and int8:
        raise UsageError("pass either an int8 graph's path or int8=True (the model's own int8 export), not both.")
    if graph is None and not int8:
        return cached_graph(model_dir)
    path = Path(graph) if graph is not None else Path(model_dir) / INT8_FILE
    if not path.is_file():
        hint = f"make it with `petclf export {model_dir} --int8`" if graph is None else "check the path"
        raise UsageError(f"no ONNX graph at {path}: {hint}.")
    require_runtime("onnxruntime")
    import onnx  # noqa: PLC0415

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if props.get(HASH_KEY) != model_hash(model_dir):
        raise UsageError(f"{path} was not exported from the model in {model_dir} as it is now (retrained or "
                         f"changed since): export it again with `petclf export {model_dir} --int8`.")
    return path


def graph_precision(path: str | Path) -> str:
    """'int8' for a quantized graph (QuantizeLinear nodes, as ``petclf export --int8`` writes), else 'fp32'.

    Example: ``graph_precision("runs/pets/model/model.int8.onnx")`` → ``'int8'``.
    """
    require_runtime("onnxruntime")
    import onnx  # noqa: PLC0415

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return "int8" if any(n.op_type in ("QuantizeLinear", "QLinearConv", "ConvInteger") for n in nodes) else "fp32"


class GraphNet:
    """An exported graph as a callable that takes (N, presize, presize, 3) uint8 pixels and gives fp32 scores.

    Stands in for the torch network of a ``Predictor``: ``net(pixels)`` returns the ``logits`` output
    (a multi-label graph's ``probabilities`` turned back into scores), followed by the ``ood_score`` as one
    more column when the graph has one (as the torch network with an "unknown" detector answers), and ``run``
    returns every named output of the graph. ``threads``: intra-op threads in all (default: every core).
    ``streams``: forwards that may run at once, each called from its own thread and computed on
    ``threads // streams`` of the cores; calls beyond that wait for a free stream. 1 (one forward at a time on
    every core) answers one batch soonest; a server under heavy load answers more with 2 (BENCHMARKS.md).

    Example: ``GraphNet("pets.onnx", backend="openvino")(torch.zeros(1, 96, 96, 3, dtype=torch.uint8))``.
    """

    def __init__(self, path: str | Path, *, backend: str, threads: int | None = None, streams: int = 1,
                 multi_label: bool = False) -> None:
        self.path, self.backend, self.multi_label = Path(path), backend, multi_label
        threads = threads or os.cpu_count() or 1
        if not isinstance(streams, int) or isinstance(streams, bool) or not 1 <= streams <= max(threads, 1):
            raise UsageError(f"streams must be a whole number from 1 to the {threads} threads the graph may use, as "
                             f"each stream computes on at least one. Received: streams={streams!r}.")
        self.streams = streams
        runtime = require_runtime(backend)
        self.precision = graph_precision(path)
        if backend == "onnxruntime":
            opts = runtime.SessionOptions()
            # One session serves concurrent calls (ONNX Runtime's Run is thread-safe), each on its share of the cores.
            opts.intra_op_num_threads, opts.inter_op_num_threads = max(1, threads // streams), 1
            opts.execution_mode = runtime.ExecutionMode.ORT_SEQUENTIAL
            self._session = runtime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
            self.outputs = tuple(o.name for o in self._session.get_outputs())
        else:
            core = runtime.Core()
            # One stream: LATENCY on every core. Several: THROUGHPUT with that many streams and an infer request
            # each. f32: on CPUs with bf16 instructions OpenVINO would otherwise compute in bf16 (scores 1e-2 away
            # from torch's, measured here).
            hint = {"PERFORMANCE_HINT": "LATENCY"} if streams == 1 else {"PERFORMANCE_HINT": "THROUGHPUT",
                                                                        "NUM_STREAMS": streams}
            compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                          {**hint, "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
            self._requests: queue.SimpleQueue = queue.SimpleQueue()
            for _ in range(streams):
                self._requests.put(compiled.create_infer_request())
            self.outputs = tuple(o.get_any_name() for o in compiled.outputs)
        if "logits" not in self.outputs and not (multi_label and "probabilities" in self.outputs):
            raise UsageError(f"{path} has no 'logits' output (it has {', '.join(self.outputs)}): expected a graph "
                             "written by `petclf export`.")
        #: Whether ``net(pixels)`` ends with the OOD score column.
        self.scores_ood = "ood_score" in self.outputs and "logits" in self.outputs

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph by name for (N, presize, presize, 3) uint8 ``pixels``; safe from several
        threads at once (``streams`` of them compute together).

        Example: ``net.run(pixels)["logits"].shape`` → ``(N, classes)``.
        """
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if self.backend == "onnxruntime":
            return dict(zip(self.outputs, self._session.run(None, {self._input: pixels})))
        request = self._requests.get()  # a free stream's request; waits while every stream computes
        try:
            result = request.infer([pixels])
            # Copies: the request's buffers are reused by the next call.
            return {name: np.array(result[k]) for k, name in enumerate(self.outputs)}
        finally:
            self._requests.put(request)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.run(pixels.cpu().numpy())
        if "logits" in out:
            logits = torch.from_numpy(out["logits"]).float()
            if self.scores_ood:
                return torch.cat([logits, torch.from_numpy(out["ood_score"]).float().reshape(-1, 1)], dim=1)
            return logits
        # A multi-label graph gives sigmoid probabilities; Predictor decides on scores, so invert the sigmoid.
        return torch.logit(torch.from_numpy(out["probabilities"]).float(), eps=1e-7)

    def eval(self) -> "GraphNet":
        """Itself (a graph is always in inference mode), as ``nn.Module.eval`` returns the module."""
        return self

