"""How well a single-label model's probabilities are calibrated, before and after its temperature: the expected
calibration error (ECE, 15 bins), the ECE that chance alone gives a perfectly calibrated model on as many images,
and a reliability diagram."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from petclf.core.defaults import ECE_BINS, ECE_CHANCE_DRAWS
from petclf.core.errors import UsageError, require_positive
from petclf.runtime.temperature import confidence_bins, expected_calibration_error, reliability

__all__ = ["ECE_KEYS", "calibration_metrics", "ece_by_chance", "plot_reliability", "rescale"]

#: The figures of ``calibration_metrics`` that summary.json and metrics.json carry.
ECE_KEYS = ("ece_before", "ece_after", "ece_chance_p95")


def rescale(probs: np.ndarray, factor: float) -> np.ndarray:
    """``softmax(log(probs) * factor)``: probabilities at another temperature (``factor`` = old T / new T).

    Example: ``rescale(raw_probs, 1 / temperature)`` → the calibrated probabilities.
    """
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) * factor
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def ece_by_chance(probs: np.ndarray, *, bins: int = ECE_BINS, draws: int = ECE_CHANCE_DRAWS,
                  seed: int = 0) -> tuple[float, float]:
    """(mean, 95th percentile) of the ECE a perfectly calibrated model with these confidences shows on this many images.

    Each draw makes the top class right with exactly its stated probability (so the model is calibrated
    by construction) and measures the ECE; what remains is the sampling noise of the bins. An observed
    ECE below the 95th percentile cannot be told from perfect calibration on this data.

    Example: ``ece_by_chance(valid_probs)`` → ``(0.036, 0.048)`` for a flowers5 model's 864 validation photos.
    """
    require_positive(bins=bins, draws=draws)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise UsageError(f"expected (images, classes) probabilities. Received an array of shape {probs.shape}.")
    confidence = probs.max(axis=1)
    if not len(confidence):
        return float("nan"), float("nan")
    index = confidence_bins(confidence, bins)  # the bins of ``reliability``
    members = np.zeros((len(confidence), bins))
    members[np.arange(len(confidence)), index] = 1.0
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // len(confidence))  # bounded memory on large validation sets
    eces = []
    for start in range(0, draws, chunk):
        right = rng.random((min(chunk, draws - start), len(confidence))) < confidence
        eces.append(np.abs((right - confidence) @ members).sum(axis=1) / len(confidence))
    eces = np.concatenate(eces)
    return float(eces.mean()), float(np.quantile(eces, 0.95))


def calibration_metrics(probs: np.ndarray, targets: np.ndarray, *, temperature: float,
                        calibrated: bool = False) -> dict:
    """ECE and reliability bins before and after dividing the logits by ``temperature``; ``probs`` are the raw
    probabilities, or with ``calibrated`` the ones already at that temperature (a saved model's ``Predictor``).

    Example: ``calibration_metrics(interp.probs, interp.targets, temperature=1.6)["ece_after"]`` → ``0.021``.
    """
    before = rescale(probs, temperature) if calibrated else np.asarray(probs, dtype=np.float64)
    after = np.asarray(probs, dtype=np.float64) if calibrated else rescale(probs, 1.0 / temperature)
    _, chance_95 = ece_by_chance(after)
    return {"temperature": float(temperature),
            "ece_before": round(expected_calibration_error(before, targets), 6),
            "ece_after": round(expected_calibration_error(after, targets), 6),
            "ece_chance_p95": round(chance_95, 6),
            "reliability_before": reliability(before, targets), "reliability_after": reliability(after, targets)}


def plot_reliability(figures: dict, *, title: str = "") -> Figure:
    """The reliability diagram of ``calibration_metrics``' output: accuracy against confidence per bin, before and
    after the temperature, with the diagonal of perfect calibration."""
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    width = 1.0 / ECE_BINS
    for key, label, colour, shift in (("reliability_before", f"before (ECE {figures['ece_before']:.3f})", "#d95f02", 0),
                                      ("reliability_after", f"after T={figures['temperature']:.2f} "
                                                            f"(ECE {figures['ece_after']:.3f})", "#1b9e77", 0.5)):
        rows = [r for r in figures[key] if r["count"]]
        ax.bar([r["low"] + width * shift / 2 + width / 4 for r in rows], [r["accuracy"] for r in rows],
               width=width / 2, align="edge", color=colour, alpha=0.8, label=label)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
           title=title or "Reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    return fig
