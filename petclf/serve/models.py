"""The models a server answers for: each model directory under a name, its ``Predictor``, card and label rule."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from petclf.core.errors import UsageError
from petclf.core.safe_text import printable
from petclf.runtime.predict import DEFAULT_THRESHOLD, DEFAULT_TOPK, Predictor
from petclf.serve.options import ServeOptions

__all__ = ["NAME_PATTERN", "ServedModel", "load_models", "model_names"]

#: Model names appear in URLs (/models/NAME/predict, /v2/models/NAME/infer): letters, digits, '_', '.', '-'.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_QUALITY = re.compile(r"error|accuracy|loss|f1|precision|recall|auc|map", re.IGNORECASE)


@dataclass
class ServedModel:
    """One model directory at work: its name in URLs, its ``Predictor`` and the facts its card shows.

    Example: ``ServedModel.load("pets", "runs/pets/model", options=ServeOptions()).classes``.
    """

    name: str
    directory: Path
    predictor: Predictor = field(repr=False)
    max_batch: int

    @classmethod
    def load(cls, name: str, directory: str | Path, *, options: ServeOptions) -> "ServedModel":
        """Load ``directory`` (checked as ``Predictor`` checks it) and run one image through it, so the first
        request does not pay for the kernels' set-up; ``options.unknown_accept`` moves the "unknown" threshold of
        a model with a detector as ``Predictor(unknown=)`` does (a model without one is served as it is)."""
        predictor = Predictor(directory, device=options.device, precision=options.precision, backend=options.backend,
                              int8=options.int8, streams=options.streams)
        if predictor.detector is not None and options.unknown_accept is not None:
            predictor.accept_unknown(options.unknown_accept)
        model = cls(name=name, directory=Path(directory), predictor=predictor, max_batch=options.max_batch)
        model.logits(np.zeros((1, model.presize, model.presize, 3), dtype=np.uint8))
        return model

    @property
    def classes(self) -> tuple[str, ...]:
        return self.predictor.classes

    @property
    def presize(self) -> int:
        """Side of the square RGB pixels the model takes (and the ONNX export's input)."""
        return self.predictor.pipeline.presize

    @property
    def multi_label(self) -> bool:
        return self.predictor.multi_label

    @property
    def thresholds(self) -> list[float] | None:
        """Per-class thresholds of a multi-label model (its own, else 0.5 each); None for single-label models."""
        if not self.multi_label:
            return None
        own = self.predictor.thresholds
        return [float(t) for t in own] if own is not None else [DEFAULT_THRESHOLD] * len(self.classes)

    @property
    def has_unknown(self) -> bool:
        """Whether the model scores how unlike its training images an image is (an "unknown" detector)."""
        return self.predictor.detector is not None

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """(n, classes) float32 scores of (n, presize, presize, 3) uint8 pixels, ``max_batch`` images per forward;
        for a model with an "unknown" detector (n, classes + 1), the OOD score last (``split`` parts them).

        Runs on a forward thread of the server (blocking; with --streams N, N at once); ``Batcher`` calls it with
        the images of many requests.
        """
        x = torch.from_numpy(pixels)
        # flip TTA included when the model asks for it
        scores, device = self.predictor.scores_and_ood, self.predictor.device
        parts = []
        with torch.inference_mode():
            for i in range(0, len(x), self.max_batch):
                logits, ood = scores(x[i:i + self.max_batch].to(device))
                parts.append(logits.float().cpu() if ood is None else
                             torch.cat([logits.float(), ood.float()[:, None]], dim=1).cpu())
        return torch.cat(parts).numpy()

    def split(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(logits, OOD scores, unknown flags) of ``logits``' output; the last two None without a detector."""
        if not self.has_unknown:
            return out, None, None
        ood = out[:, -1]
        return out[:, :-1], ood, ood > self.predictor.unknown_threshold

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities of ``logits`` as ``Predictor`` computes them (softmax; each label's sigmoid if multi-label)."""
        return self.predictor.probabilities(torch.from_numpy(logits)).numpy()

    def top(self, probs: np.ndarray, topk: int | None) -> list[list[dict]]:
        """Per image, ``{"label", "probability"}`` most likely first: ``topk`` of them, or for a multi-label
        model without ``topk``, every label at or over its threshold.

        Example: ``model.top(probs, 1)`` → ``[[{"label": "pug", "probability": 0.97}], …]``.
        """
        rows = torch.from_numpy(probs)
        if topk is None and self.multi_label:
            thresholds = torch.tensor(self.thresholds, dtype=rows.dtype)
            k = len(self.classes)
        else:
            thresholds, k = None, min(topk or DEFAULT_TOPK, len(self.classes))
        values, indices = rows.topk(k, dim=1)  # as Predictor.predict orders them, ties included
        out = []
        for vs, ix in zip(values.tolist(), indices.tolist()):
            out.append([{"label": self.classes[i], "probability": p} for p, i in zip(vs, ix)
                        if thresholds is None or p >= thresholds[i]])
        return out

    def card(self) -> dict:
        """What the page and ``/metadata`` show: classes, architecture, input, validation metrics, versions.

        Example: ``model.card()["input"]`` → ``{"size": 64, "presize": 96, "pixels": [-1, 96, 96, 3]}``.
        """
        meta = self.predictor.meta
        summary = meta.get("summary") or {}
        numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        # How good the model is comes first (error rate, accuracy, losses, F1 …), then counts, times and settings.
        metrics = dict(sorted(numbers.items(), key=lambda kv: not _QUALITY.search(kv[0])))
        from petclf import __version__  # noqa: PLC0415 - the package's own version, set before its parts load

        return {
            "name": self.name,
            "classes": list(self.classes),
            "multi_label": self.multi_label,
            "thresholds": self.thresholds,
            "temperature": None if self.multi_label else self.predictor.temperature,
            "unknown": None if not self.has_unknown else {
                "score": self.predictor.detector.score.kind, "threshold": self.predictor.unknown_threshold,
                "accept": self.predictor.unknown_accept},
            "arch": (meta.get("arch") or {}).get("name"),
            "input": {"size": self.predictor.pipeline.size, "presize": self.presize,
                      "pixels": [-1, self.presize, self.presize, 3]},
            "metrics": metrics,
            "trained_with": meta.get("versions") or {},
            "serving": {"petclf": __version__, "torch": torch.__version__, "device": str(self.predictor.device),
                        "precision": self.predictor.precision, "backend": self.predictor.backend,
                        "streams": self.predictor.streams},
        }


def model_names(model_dirs: Sequence[str | Path] | Mapping[str, str | Path]) -> dict[str, Path]:
    """Name → directory: a mapping as given, else each ``DIR`` named after its folder, or ``DIR=NAME``.

    Example: ``model_names(["runs/pets/model", "runs/cars/model=cars"])`` → ``{"model": …, "cars": …}``.
    """
    if isinstance(model_dirs, Mapping):
        pairs = [(str(name), Path(directory)) for name, directory in model_dirs.items()]
    elif isinstance(model_dirs, (str, Path)):
        raise UsageError(f"model_dirs must be a list of model directories. Received one path: {str(model_dirs)!r}; "
                         f"pass [{str(model_dirs)!r}].")
    else:
        pairs = [_split_name(str(item)) for item in model_dirs]
    if not pairs:
        raise UsageError("no model to serve: pass at least one model directory (the model/ folder `petclf train` "
                         "wrote).")
    names: dict[str, Path] = {}
    for name, directory in pairs:
        if not NAME_PATTERN.fullmatch(name):
            raise UsageError(f"{printable(name)!r} cannot be a model name in URLs (from {printable(directory)}): use "
                             "letters, digits, '_', '.' and '-', at most 64; name it with DIR=NAME, e.g. "
                             f"{printable(directory)}=pets.")
        if name in names:
            raise UsageError(f"two models would be served as {name!r} ({printable(names[name])} and "
                             f"{printable(directory)}): name them with DIR=NAME, e.g. {printable(directory)}=other.")
        names[name] = directory
    return names


def _split_name(text: str) -> tuple[str, Path]:
    directory, sep, name = text.rpartition("=")
    # DIR=NAME, also when NAME is not a usable name (model_names says why): the '=' in the last part of a path
    # that does not exist, so a folder 'a=b' that exists is that folder.
    if sep and "=" in Path(text).name and not Path(text).exists():
        return name, Path(directory)
    path = Path(text)
    return path.resolve().name if path.name in ("", ".", "..") else path.name, path


def load_models(model_dirs: Sequence[str | Path] | Mapping[str, str | Path], *,
                options: ServeOptions) -> dict[str, ServedModel]:
    """Every model directory loaded and warmed up, by name (see ``model_names``); errors name the directory.

    Example: ``load_models(["runs/pets/model"], options=ServeOptions())["model"].classes``.
    """
    models = {name: ServedModel.load(name, directory, options=options)
              for name, directory in model_names(model_dirs).items()}
    if options.unknown_accept is not None and not any(model.has_unknown for model in models.values()):
        # Only models with a detector take it; with none, the setting would be ignored without a word.
        raise UsageError(f"unknown_accept={options.unknown_accept:g} moves the 'unknown' threshold of a single-label "
                         f"model trained with an 'unknown' detector (petclf train writes one); none of "
                         f"{', '.join(printable(str(m.directory)) for m in models.values())} has one: leave it out, "
                         "or train the model again with this petclf.")
    return models
