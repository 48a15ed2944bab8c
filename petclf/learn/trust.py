"""After training: the temperature that calibrates a single-label model, and its "unknown" detector."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from fastai.learner import Learner

from petclf.core import log
from petclf.core.errors import UsageError
from petclf.core.defaults import DEFAULT_OOD_SCORE, OOD_FIT_IMAGES
from petclf.evaluate.interpretation import Interpretation
from petclf.learn.distributed import bare
from petclf.learn.learner import run_settings, run_settings_callback
from petclf.runtime.ood import features_at, split_network
from petclf.runtime.temperature import fit_temperature
from petclf.runtime.trust import Unknown, fit_unknown

__all__ = ["Trust", "fit_trust"]


@dataclass(frozen=True)
class Trust:
    """A single-label model's calibration temperature and "unknown" detector, as ``save_model`` stores them."""

    temperature: float
    unknown: Unknown | None = field(default=None, repr=False)


def fit_trust(learn: Learner, valid: Interpretation, *, accept: float, kind: str = DEFAULT_OOD_SCORE,
              seed: int = 0) -> Trust:
    """Fit the temperature on the validation split's probabilities and the OOD score ``kind`` on the training
    split (at most ``OOD_FIT_IMAGES`` images, eval transforms), its threshold at ``accept`` of validation images.

    Example: ``fit_trust(learn, interps[0], accept=0.95).temperature`` → ``1.4``.
    """
    # Log-probabilities are logits up to a per-row constant, which softmax ignores.
    temperature = fit_temperature(np.log(np.clip(valid.probs, 1e-12, 1.0)), valid.targets)
    spec = run_settings(learn)
    frame = run_settings_callback(learn).dataset.frame
    train = frame[frame.split == "train"]
    if len(train) > OOD_FIT_IMAGES:
        train = train.sample(OOD_FIT_IMAGES, random_state=seed)
    index = {name: k for k, name in enumerate(spec.classes)}
    model = copy.deepcopy(bare(learn.model)).float()
    try:
        split_network(model, at=features_at(kind))
    except UsageError:  # a whole custom network (arch=an nn.Module) need not end in a Linear layer
        log.info(f"calibration: temperature {temperature:.3f}; no 'unknown' detector (the network does not end "
                 "in a linear layer)")
        return Trust(temperature=temperature)
    unknown = fit_unknown(model, spec.pipeline, kind=kind, accept=accept,
                          train=(list(train.path), [index[label] for label in train.label]),
                          valid=list(valid.items) or list(frame[frame.split == "valid"].path),
                          bs=learn.dls.valid.bs, device=learn.dls.device)
    log.info(f"calibration: temperature {temperature:.3f}; 'unknown' above {kind} score {unknown.threshold:.4g} "
             f"({accept:.0%} of validation images known)")
    return Trust(temperature=temperature, unknown=unknown)
