"""fastai's pickle format (``export.pkl``), written for ``load_learner`` users and read only by explicit consent.

A pickle runs code when it is loaded. fastai itself is imported only when one of these is
called, so the rest of the runtime stays free of it. ``PickledPredictor`` predicts with such a file as
``Predictor`` does with a model directory, for ``petclf predict --trust-pickle``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from PIL import Image

from petclf.core import log
from petclf.core.errors import UsageError
from petclf.data.images import READ_ERRORS, ImageLike, cannot_read
from petclf.runtime.predict import DEFAULT_TOPK, Answer, ReadBatch, top_classes

if TYPE_CHECKING:
    from fastai.learner import Learner

__all__ = ["PickledPredictor", "export_fastai", "load_pickled_learner"]


def export_fastai(learn: "Learner", path: str | Path) -> Path:
    """Write fastai's ``export.pkl`` (a pickle of the whole Learner) for users of ``load_learner``.

    Prefer ``save_model``: a pickle runs code when loaded and breaks across library versions.

    Example: ``export_fastai(learn, "runs/pets/export.pkl")``.
    """
    path = Path(path).resolve()
    # petclf's own callbacks stay out, so the file loads with fastai alone.
    ours = [cb for cb in learn.cbs if type(cb).__module__.startswith("petclf.")]
    with learn.removed_cbs(ours):
        learn.export(path)
    return path


def load_pickled_learner(path: str | Path, *, trust: bool = False) -> "Learner":
    """Load a fastai ``export.pkl``; refuses unless ``trust=True`` because unpickling runs code from the file.

    Example: ``load_pickled_learner("export.pkl", trust=True)`` for a file you made yourself.
    """
    path = Path(path)
    if not trust:
        raise UsageError(
            f"{path} is a pickle: loading it runs whatever code its author put inside, so petclf will not load "
            "it unless you say you trust it (trust=True / --trust-pickle). For files from others ask for a petclf "
            "model directory (model.safetensors + petclf.json), which holds only tensors and JSON."
        )
    if not path.is_file():
        raise UsageError(f"{path} does not exist.")
    from fastai.learner import load_learner  # noqa: PLC0415

    log.warn(f"unpickling {path} because trust was given")
    return load_learner(path, cpu=not torch.cuda.is_available())


class PickledPredictor:
    """fastai's own ``Learner.predict`` for an ``export.pkl`` the user chose to trust, one image at a time, behind
    the part of ``Predictor``'s interface that ``petclf predict`` uses (``classes``, ``multi_label``,
    ``detector``, ``iter_readable``, ``answers``, ``decide``); a single-label learner without an "unknown"
    detector. Creating one unpickles the file: only for files you trust.

    Example: ``[b.items for b in PickledPredictor("export.pkl", trust=True).iter_readable(["cat.jpg"])]``.
    """

    def __init__(self, path: str | Path, *, trust: bool = False) -> None:
        import fastai.callback.progress  # noqa: F401, PLC0415 - Learner.no_bar, used here

        self.learn = load_pickled_learner(path, trust=trust)  # refuses (exit 2) unless the caller trusts the file
        self.classes = tuple(self.learn.dls.vocab)
        self.multi_label = False
        self.detector = None

    def answers(self, logits: torch.Tensor, ood: torch.Tensor | None, *, topk: int | None = None) -> list[Answer]:
        """As ``Predictor.answers``; a pickled learner has no "unknown" detector."""
        return [Answer(top, None, False) for top in self.decide(logits, topk=topk)]

    def decide(self, logits: torch.Tensor, *, topk: int | None = None) -> list[list[tuple[str, float]]]:
        """As ``Predictor.decide`` for a single-label fastai learner."""
        return top_classes(logits.softmax(dim=1), self.classes, DEFAULT_TOPK if topk is None else topk)

    def iter_readable(self, images: Sequence[ImageLike], *, bs: int = 64) -> Iterator[ReadBatch]:
        """As ``Predictor.iter_readable``; the scores are log-probabilities, so their softmax is fastai's output."""
        for start in range(0, len(images), bs):
            items, rows, failed = [], [], []
            for image in images[start:start + bs]:
                try:
                    with self.learn.no_bar():
                        probs = self.learn.predict(Path(image) if not isinstance(image, Image.Image) else image)[2]
                except READ_ERRORS as err:
                    failed.append((image, cannot_read(image, err)))
                    continue
                items.append(image)
                rows.append(probs.float().clamp_min(1e-12).log())
            yield ReadBatch(items, torch.stack(rows) if rows else torch.zeros(0, len(self.classes)), failed)
