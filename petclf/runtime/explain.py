"""Why a model answered as it did: class activation heat maps (Grad-CAM), without fastai.

Grad-CAM (Selvaraju et al. 2017) weighs the last feature map of the network's body by the mean
gradient of one class's score over it: where the map is hot, the features that raise that class
are. It comes from captum's ``LayerGradCam`` rather than hand-written hooks. captum, not
pytorch-grad-cam: both work on petclf's networks without fastai, but after torch ``import captum.attr``
loads 266 more modules (0.7 s on a busy 2-core machine) where ``import pytorch_grad_cam`` loads 1,450
(2.3 s: scikit-learn, SciPy, OpenCV) for the same Grad-CAM. Its successors (Grad-CAM++, Layer-CAM, HiResCAM) differ from
it mostly below the last block; on a body's last feature map, which is a few cells wide, plain
Grad-CAM is the usual choice and the one people know from fastai's and Keras' lessons.

The explainer builds its own float32 copy of the network from the model directory: ``Predictor``
fuses BatchNorm into the convolutions and may cast the weights to bfloat16, which is right for
prediction and wrong for gradients. Images are read and preprocessed exactly as ``Predictor`` does
(``Presizer``, then ``PixelClassifier``); the flip TTA a model may predict with is not applied (the
map explains one view), so a probability here can differ slightly from ``predict``'s.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from petclf.core.defaults import DEFAULT_THRESHOLD, MULTI_LABEL
from petclf.core.errors import UsageError, require_positive
from petclf.core.safe_text import printable
from petclf.data.images import ImageLike, Presizer
from petclf.data.pipeline import Pipeline
from petclf.runtime.device import pick_device
from petclf.runtime.modeldir import load_model
from petclf.runtime.preprocess import PixelClassifier

__all__ = ["EXPLAIN_EXTRA", "Explainer", "Explanation", "explain_available", "feature_layer"]

#: The optional dependencies heat maps need: ``pip install 'petclf[explain]'``.
EXPLAIN_EXTRA = "explain"
#: Share of the heat map's colour in an overlay (the rest is the image).
OVERLAY_ALPHA = 0.45


def explain_available() -> bool:
    """Whether captum, which computes the heat maps, can be imported here.

    Example: ``explain_available()`` → ``True`` once ``pip install 'petclf[explain]'`` ran.
    """
    try:
        import captum.attr  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        return False
    return True


def _layer_gradcam():
    try:
        from captum.attr import LayerGradCam  # noqa: PLC0415 - optional dependency, loaded on first use
    except ImportError:
        raise UsageError(f"heat maps need captum, which is not installed: pip install 'petclf[{EXPLAIN_EXTRA}]' "
                         "(or pip install captum).") from None
    return LayerGradCam


@dataclass(frozen=True)
class Explanation:
    """One image's heat map for one class: the class, its probability, the map and the pixels it lies on.

    ``heatmap`` is Grad-CAM on the feature grid of the network's last feature map, ReLU applied (≥ 0,
    not rescaled); ``pixels`` the (presize, presize, 3) image the network was given, before resampling.
    """

    label: str
    probability: float
    heatmap: np.ndarray = field(repr=False)
    pixels: np.ndarray = field(repr=False)

    def upsampled(self) -> np.ndarray:
        """The heat map on the image's pixels, scaled to 0..1 (all 0 where nothing raised the class's score).

        Example: ``explanation.upsampled().shape`` → ``(96, 96)`` for a model read at 96 px.
        """
        grid = torch.from_numpy(np.ascontiguousarray(self.heatmap, dtype=np.float32))[None, None]
        side = self.pixels.shape[:2]
        # The network saw the presized square resampled to its size, so the grid spans the whole square.
        big = F.interpolate(grid, size=side, mode="bilinear", align_corners=False)[0, 0].clamp_min(0)
        top = float(big.max())
        return (big / top).numpy() if top > 0 else np.zeros(side, dtype=np.float32)

    def overlay(self, *, alpha: float = OVERLAY_ALPHA, cmap: str = "jet") -> np.ndarray:
        """(presize, presize, 3) uint8: the heat map in ``cmap``'s colours blended over the image.

        Example: ``Image.fromarray(explanation.overlay()).save("why.png")``.
        """
        from matplotlib import colormaps  # noqa: PLC0415 - only when drawing

        colours = colormaps[cmap](self.upsampled())[..., :3] * 255.0
        blended = (1 - alpha) * self.pixels.astype(np.float32) + alpha * colours
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)

    def png(self, **options) -> bytes:
        """The overlay as PNG bytes (``overlay``'s options).

        Example: ``Path("why.png").write_bytes(explanation.png())``.
        """
        buf = io.BytesIO()
        Image.fromarray(self.overlay(**options)).save(buf, format="PNG")
        return buf.getvalue()


def feature_layer(model: nn.Module, size: int) -> nn.Module:
    """The module whose output is the network's last feature map with more than one cell at ``size`` px.

    In petclf's ``Sequential(body, head)`` networks that is the body (its output is the last conv
    block's), for torchvision and timm bodies alike; a network of another shape gets its last
    spatial layer. Found by one forward pass of a blank image, since timm bodies run their blocks
    from ``forward_features`` rather than in the order of their children.

    Example: ``feature_layer(build_network("resnet18", "torchvision", 2), 64)`` → the body (``net[0]``).
    """
    finished: list[nn.Module] = []

    def record(module: nn.Module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            finished.append(module)

    # Forward hooks fire as modules finish: a container after its last child, so the outermost module that ends
    # with the last feature map comes last.
    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(1, 3, size, size, device=param.device if param is not None else "cpu")
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise UsageError(f"cannot draw a heat map for {type(model).__name__} at {size} px: no layer gives a feature "
                         "map of more than one cell. Train at a larger --size.")
    return finished[-1]


class Explainer:
    """Grad-CAM heat maps of a petclf model directory, one image at a time, in float32 without fastai.

    Example::

        why = Explainer("runs/pets/model")
        top = why.explain("my_cat.jpg")[0]     # the predicted class
        top.label, top.probability            # ('Bengal', 0.91)
        Path("why.png").write_bytes(top.png())
        why.explain("my_cat.jpg", label="Egyptian_Mau")   # another class
        Explainer("runs/planet/model").explain("tile.jpg")   # multi-label: a map per label over its threshold
    """

    def __init__(self, model_dir: str | Path, *, device: str | torch.device | None = None,
                 arch: Callable | nn.Module | None = None) -> None:
        """``model_dir`` as ``Predictor`` takes it; ``arch`` only for custom architectures.
        Example: ``Explainer("runs/pets/model", device="cpu")``."""
        _layer_gradcam()  # say what is missing before loading a model
        loaded = load_model(model_dir, arch=arch)
        multi_label = loaded.meta.get("task") == MULTI_LABEL
        self._setup(loaded.model, loaded.classes, loaded.pipeline, device=device, multi_label=multi_label,
                    thresholds=loaded.meta.get("thresholds") if multi_label else None,
                    temperature=loaded.temperature)

    @classmethod
    def from_network(cls, model: nn.Module, classes: Sequence[str], pipeline: Pipeline, *,
                     device: str | torch.device | None = None, multi_label: bool = False,
                     thresholds: Sequence[float] | None = None, temperature: float = 1.0) -> "Explainer":
        """An explainer for a float32 network in memory (used as it is, not copied); a ``multi_label`` network's
        labels are predicted at ``thresholds`` (one per class; default 0.5), as ``Predictor`` predicts them; a
        single-label network's probabilities are ``softmax(logits / temperature)``, as a saved model's are.

        Example: ``Explainer.from_network(net, ["cat", "dog"], make_pipeline(size=64))``.
        """
        _layer_gradcam()
        explainer = cls.__new__(cls)
        explainer._setup(model, classes, pipeline, device=device, multi_label=multi_label, thresholds=thresholds,
                         temperature=temperature)
        return explainer

    def _setup(self, model: nn.Module, classes: Sequence[str], pipeline: Pipeline, *, device,
               multi_label: bool, thresholds: Sequence[float] | None = None, temperature: float = 1.0) -> None:
        self.device = pick_device(device)
        self.temperature = float(temperature)  # the probabilities shown are those Predictor answers
        self.classes, self.pipeline, self.multi_label = tuple(classes), pipeline, bool(multi_label)
        if thresholds is not None and len(thresholds) != len(self.classes):
            raise UsageError(f"expected one threshold per class ({len(self.classes)}). Received {len(thresholds)}.")
        #: A multi-label model's decision thresholds, one per class (None for a single-label model).
        self.thresholds = (tuple(float(t) for t in thresholds) if thresholds is not None
                           else (DEFAULT_THRESHOLD,) * len(self.classes)) if self.multi_label else None
        # Channels-last, as PixelClassifier hands it the image: a forward and backward pass costs about half as
        # much on a CPU as in the default layout (FACTS.md: tf_efficientnet_lite0 72 vs 128 ms per image).
        self.net = PixelClassifier(model.float().to(memory_format=torch.channels_last), pipeline).to(self.device).eval()
        self.layer = feature_layer(model, pipeline.size)
        self._cam = _layer_gradcam()(self.net, self.layer)
        self._presize = Presizer(pipeline.presize)

    def read(self, image: ImageLike) -> np.ndarray:
        """(presize, presize, 3) uint8: ``image`` read as ``Predictor`` reads it; UsageError when it cannot be.

        Example: ``Explainer(d).read("cat.jpg").shape`` → ``(96, 96, 3)``.
        """
        return self._presize.read(image)

    def explain(self, image: ImageLike, *, label: str | Sequence[str] | None = None,
                topk: int | None = None) -> list[Explanation]:
        """Heat maps of one image, most likely first: for ``label`` (one class or several), else for its ``topk``
        most likely classes; without ``topk``, the predicted class, or for a multi-label model every label at or
        over its threshold (the most likely label when none is).

        Example: ``Explainer(d).explain("cat.jpg", topk=2)`` → two ``Explanation``s.
        """
        return self.explain_pixels(self.read(image), label=label, topk=topk)

    def explain_pixels(self, pixels: np.ndarray, *, label: str | Sequence[str] | None = None,
                       topk: int | None = None) -> list[Explanation]:
        """As ``explain``, for (presize, presize, 3) uint8 pixels already read (``read``, or a server's decoder);
        ``label`` may also be several classes, explained in one pass.

        Example: ``Explainer(d).explain_pixels(np.zeros((96, 96, 3), np.uint8), label=["cat", "dog"])``.
        """
        if topk is not None:
            require_positive(topk=topk)
        presize = self.pipeline.presize
        if pixels.shape != (presize, presize, 3) or pixels.dtype != np.uint8:
            raise UsageError(f"expected ({presize}, {presize}, 3) uint8 pixels. Received {pixels.shape} "
                             f"{pixels.dtype}.")
        x = torch.tensor(pixels, dtype=torch.float32)[None].to(self.device)  # a copy: decoded arrays may be read-only
        if label is None:
            with torch.no_grad():  # the classes to explain are known only once the image is scored
                logits = self.net(x)[0].float()
            targets = self._predicted(logits, topk=topk)
        else:
            targets, logits = [self.class_index(name) for name in ([label] if isinstance(label, str) else label)], None
        scored: list[torch.Tensor] = []
        # The scores come from Grad-CAM's own forward pass when the classes were named: one pass, not two.
        hook = self.net.register_forward_hook(lambda _m, _i, out: scored.append(out.detach()))
        try:
            # One forward and backward pass for every class asked for: the image repeated, one target each.
            maps = self._cam.attribute(x.repeat(len(targets), 1, 1, 1), target=targets, relu_attributions=True)
        finally:
            hook.remove()
        logits = scored[0][0].float() if logits is None else logits
        probs = logits.sigmoid() if self.multi_label else (logits / self.temperature).softmax(0)
        maps = maps.detach().float().sum(1).cpu().numpy()
        return [Explanation(label=self.classes[t], probability=float(probs[t]), heatmap=m, pixels=pixels)
                for t, m in zip(targets, maps)]

    def _predicted(self, logits: torch.Tensor, *, topk: int | None) -> list[int]:
        """The classes to explain when none was named, most likely first (see ``explain``)."""
        if topk is not None or not self.multi_label:
            return logits.topk(min(topk or 1, len(self.classes))).indices.tolist()  # as Predictor orders them
        probs = logits.sigmoid().tolist()
        over = sorted((j for j, p in enumerate(probs) if p >= self.thresholds[j]), key=lambda j: -probs[j])
        # Always one map at least: an image with no label over its threshold still shows where its best one is.
        return over or logits.topk(1).indices.tolist()

    def class_index(self, label: str) -> int:
        """The index of class ``label`` in ``classes``; a UsageError listing the classes when there is none.

        Example: ``Explainer("runs/pets/model").class_index("Bengal")`` → ``1``.
        """
        if label in self.classes:
            return self.classes.index(label)
        shown = ", ".join(map(printable, self.classes[:20])) + (" …" if len(self.classes) > 20 else "")
        raise UsageError(f"the model has no class {printable(str(label))!r}: expected one of {shown}.")
