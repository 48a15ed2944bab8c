"""Networks as petclf builds them, in plain torch: a body cut from a backbone, and fastai's default head.

Training and loading both build through here, so a saved model directory rebuilds with the
same parameter names it was trained with (``0.…`` the body, ``1.…`` the head) without fastai.
The head is the one fastai's ``create_head`` makes: concatenated max and average pooling,
then BatchNorm, dropout and a linear layer twice, initialised as fastai's ``add_head`` does.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
import torchvision
from torch import nn

from petclf.core.errors import UsageError

__all__ = ["ConcatPool2d", "TimmBody", "arch_builder", "build_network", "classifier_head", "cut_body",
           "network_from_backbone", "register_arch", "registered_archs", "timm_network", "torchvision_cut"]

# Where fastai cuts these torchvision backbones (its model_meta); others are cut before their last pooling layer.
_CUTS = {**{f"resnet{n}": -2 for n in (18, 34, 50, 101, 152)}, "squeezenet1_0": -1, "squeezenet1_1": -1,
         **{f"densenet{n}": -1 for n in (121, 161, 169, 201)}, **{f"vgg{n}_bn": -2 for n in (11, 13, 16, 19)},
         "alexnet": -2}

_REGISTRY: dict[str, Callable[[], nn.Module]] = {}


def register_arch(name: str, builder: Callable[[], nn.Module], *, replace: bool = False) -> None:
    """Make ``builder`` (a callable returning a backbone, as ``arch=`` takes) known by ``name``.

    A model trained with ``arch=name`` then records the name, and its model directory loads
    in any process that registered the same name, without passing ``arch=`` again.

    Example::

        register_arch("tiny_cnn", lambda: nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1)))
        learn = quick_learner("pets/images", arch="tiny_cnn", pretrained=False)
    """
    if not isinstance(name, str) or not name or not callable(builder):
        raise UsageError(f"register_arch needs a name and a callable. Received: {name!r}, {builder!r}.")
    if name in _REGISTRY and not replace and _REGISTRY[name] is not builder:
        raise UsageError(f"an architecture named {name!r} is registered already; pass replace=True to change it.")
    _REGISTRY[name] = builder


def registered_archs() -> tuple[str, ...]:
    """The names given to ``register_arch`` in this process."""
    return tuple(sorted(_REGISTRY))


def arch_builder(name: str) -> Callable[[], nn.Module] | None:
    """The builder registered as ``name``, or None."""
    return _REGISTRY.get(name)


class ConcatPool2d(nn.Module):
    """Max and average pooling to 1×1, side by side (fastai's ``AdaptiveConcatPool2d``): twice the features."""

    def __init__(self) -> None:
        super().__init__()
        self.ap, self.mp = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mp(x), self.ap(x)], 1)


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


def _batchnorm(features: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(features)
    with torch.no_grad():  # fastai's BatchNorm starts with a small positive bias
        bn.bias.fill_(1e-3)
        bn.weight.fill_(1.0)
    return bn


def classifier_head(n_features: int, n_out: int, *, pool: bool = True) -> nn.Sequential:
    """fastai's default head for ``n_features`` body channels and ``n_out`` classes (parameter names included).

    Example: ``classifier_head(512, 10)[-1]`` → ``Linear(in_features=512, out_features=10, bias=False)``.
    """
    width = n_features * 2 if pool else n_features
    layers: list[nn.Module] = [ConcatPool2d(), _Flatten()] if pool else []
    layers += [_batchnorm(width), nn.Dropout(0.25), nn.Linear(width, 512, bias=False), nn.ReLU(inplace=True),
               _batchnorm(512), nn.Dropout(0.5), nn.Linear(512, n_out, bias=False)]
    head = nn.Sequential(*layers)
    for layer in head:  # as fastai's add_head: kaiming-normal weights for the linear layers
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
    return head


def _has_pool(module: nn.Module) -> bool:
    return bool(re.search(r"Pool[123]d$", type(module).__name__)) or any(_has_pool(c) for c in module.children())


def cut_body(backbone: nn.Module, cut: int | None = None) -> nn.Sequential:
    """The backbone's children up to ``cut``, or (None) up to the last one that pools: the body, without classifier.

    Example: ``cut_body(torchvision.models.resnet18(), -2)`` ends with ``layer4``.
    """
    children = list(backbone.children())
    if cut is None:
        cut = next((i for i in reversed(range(len(children))) if _has_pool(children[i])), None)
        if cut is None:
            raise UsageError(f"cannot find where to cut {type(backbone).__name__}: it has no pooling layer. "
                             "Pass an nn.Module to use it whole as the classifier.")
    return nn.Sequential(*children[:cut])


def _num_features(body: nn.Module) -> int:
    """Channels the body puts out, from one small dummy input (larger ones for bodies that need them)."""
    param = next(body.parameters())
    size = 32
    while True:
        try:
            # A random input as fastai's num_features_model draws it, so both consume the RNG alike.
            x = param.new_empty(1, 3, size, size).uniform_(-1.0, 1.0)
            with torch.no_grad():
                return int(body.eval()(x).shape[1])
        except Exception:  # noqa: BLE001 - too small for this body: try the next size, as fastai does
            size *= 2
            if size > 2048:
                raise


def network_from_backbone(backbone: nn.Module, n_out: int, *, cut: int | None = None) -> nn.Sequential:
    """``Sequential(body, head)``: the backbone cut at ``cut`` with a new head of ``n_out`` classes.

    Example: ``network_from_backbone(torchvision.models.resnet18(), 10, cut=-2)``.
    """
    body = cut_body(backbone, cut)
    return nn.Sequential(body, classifier_head(_num_features(body), n_out))


class TimmBody(nn.Module):
    """A timm model without classifier as a body (fastai's ``TimmBody``: same parameter names, ``model.…``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.needs_pool = model.default_cfg.get("pool_size", None) is not None
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x) if self.needs_pool else self.model(x)


def timm_network(name: str, n_out: int, *, pretrained: bool = False, **kwargs) -> tuple[nn.Sequential, dict]:
    """timm's ``name`` without its classifier plus petclf's head; returns the network and timm's config.

    Example: ``timm_network("resnet18", 10)[0]``.
    """
    try:
        import timm  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise UsageError(f"the timm model {name!r} needs timm: pip install timm (or petclf[timm]).") from None
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=3, **kwargs)
    body = TimmBody(model)
    return nn.Sequential(body, classifier_head(model.num_features, n_out, pool=body.needs_pool)), model.default_cfg


def torchvision_cut(name: str) -> int | None:
    """Where a torchvision backbone is cut into a body (None: before its last pooling layer)."""
    return _CUTS.get(name)


def build_network(name: str, source: str, n_out: int, *, arch: Callable | nn.Module | None = None) -> nn.Module:
    """The untrained network a model directory describes (``arch.name``, ``arch.source``, ``arch.n_out``).

    ``arch`` is the user's own callable or module, for source 'custom'.

    Example: ``build_network("resnet18", "torchvision", 10)``.
    """
    if source == "custom":
        if arch is None:
            raise UsageError("this model holds a custom architecture: pass the same arch= you trained with, or "
                             "register it with petclf.register_arch(name, builder) and train with arch=name.")
        return arch if isinstance(arch, nn.Module) else network_from_backbone(arch(), n_out)
    if source == "registered":
        builder = arch_builder(name)
        if builder is None:
            raise UsageError(f"this model was trained with the registered architecture {name!r}: call "
                             f"petclf.register_arch({name!r}, builder) before loading it.")
        return network_from_backbone(builder(), n_out)
    if source == "timm":
        return timm_network(name, n_out)[0]
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise UsageError(f"{name!r} is not a torchvision model here (torchvision {torchvision.__version__}).") from None
    return network_from_backbone(builder(weights=None), n_out, cut=torchvision_cut(name))
