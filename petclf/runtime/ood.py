"""Out-of-distribution scores: how unlike the training images an image is (higher = less like them).

Minimal version with the shared interface (maximum softmax probability and energy only); the
measured choice among more scores replaces it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from petclf.core.errors import ModelFileError, UsageError

__all__ = ["OOD_KINDS", "OODScore", "fit_ood_score", "load_ood_score", "split_network", "threshold_at_acceptance"]

OOD_KINDS: tuple[str, ...] = ("msp", "energy")


class OODScore(nn.Module):
    """An OOD score of (features, logits); ``msp``: 1 − the largest softmax probability; ``energy``: −logsumexp.

    Example: ``OODScore("energy")(features, logits)`` → an (N,) tensor.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in OOD_KINDS:
            raise UsageError(f"unknown OOD score {kind!r}: expected one of {', '.join(OOD_KINDS)}.")
        self.kind = kind

    def forward(self, features: Tensor, logits: Tensor) -> Tensor:
        logits = logits.float()
        if self.kind == "msp":
            return 1.0 - logits.softmax(dim=1).amax(dim=1)
        return -torch.logsumexp(logits, dim=1)

    def tensors(self) -> dict[str, Tensor]:
        """What a model directory stores for this score (nothing for msp and energy)."""
        return {}


def fit_ood_score(kind: str, *, features: Tensor, logits: Tensor, labels: Tensor) -> OODScore:
    """The score ``kind`` fitted on the training split's features and logits (msp and energy need no fit).

    Example: ``fit_ood_score("energy", features=f, logits=z, labels=y)``.
    """
    return OODScore(kind)


def load_ood_score(kind: str, tensors: dict[str, Tensor], *, feature_dim: int, classes: int) -> OODScore:
    """The score ``kind`` rebuilt from stored ``tensors``, checked against the network's shapes.

    Example: ``load_ood_score("energy", {}, feature_dim=512, classes=10)``.
    """
    if kind not in OOD_KINDS:
        raise ModelFileError(f"the model's OOD score {kind!r} is not one this petclf knows ({', '.join(OOD_KINDS)}).")
    if tensors:
        raise ModelFileError(f"the OOD score {kind!r} takes no tensors, but the model directory holds "
                             f"{', '.join(sorted(tensors))}; the model directory is damaged.")
    return OODScore(kind)


def split_network(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(everything up to the input of the final ``nn.Linear``, that Linear) of a petclf network.

    Example: ``body, linear = split_network(load_model(d).model)``; ``linear(body(x))`` equals ``model(x)``.
    """
    if not (isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[1], nn.Sequential)
            and len(model[1]) and isinstance(model[1][-1], nn.Linear)):
        raise UsageError("expected a petclf network (Sequential(body, head) with a head ending in nn.Linear).")
    body, head = model[0], model[1]
    return nn.Sequential(body, *head[:-1]), head[-1]


def threshold_at_acceptance(scores: Tensor, accept: float) -> float:
    """The score under which ``accept`` of the in-distribution ``scores`` fall (their ``accept`` quantile).

    Example: ``threshold_at_acceptance(valid_scores, 0.95)``.
    """
    if not 0.0 < accept <= 1.0:
        raise UsageError(f"accept must be in (0, 1]. Received: {accept}.")
    return float(torch.quantile(scores.double().flatten(), accept))
