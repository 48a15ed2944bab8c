"""How well a single-label model's probabilities are calibrated, before and after its temperature: the expected
calibration error (ECE, 15 bins) and a reliability diagram."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from petclf.core.defaults import ECE_BINS
from petclf.runtime.temperature import expected_calibration_error, reliability

__all__ = ["calibration_metrics", "plot_reliability", "rescale"]


def rescale(probs: np.ndarray, factor: float) -> np.ndarray:
    """``softmax(log(probs) * factor)``: probabilities at another temperature (``factor`` = old T / new T).

    Example: ``rescale(raw_probs, 1 / temperature)`` → the calibrated probabilities.
    """
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) * factor
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def calibration_metrics(probs: np.ndarray, targets: np.ndarray, *, temperature: float,
                        calibrated: bool = False) -> dict:
    """ECE and reliability bins before and after dividing the logits by ``temperature``; ``probs`` are the raw
    probabilities, or with ``calibrated`` the ones already at that temperature (a saved model's ``Predictor``).

    Example: ``calibration_metrics(interp.probs, interp.targets, temperature=1.6)["ece_after"]`` → ``0.021``.
    """
    before = rescale(probs, temperature) if calibrated else np.asarray(probs, dtype=np.float64)
    after = np.asarray(probs, dtype=np.float64) if calibrated else rescale(probs, 1.0 / temperature)
    return {"temperature": float(temperature),
            "ece_before": round(expected_calibration_error(before, targets), 6),
            "ece_after": round(expected_calibration_error(after, targets), 6),
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
