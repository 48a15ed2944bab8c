"""Images that do not belong: far from the other images in embedding space, near-constant (blank), or tiny."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from petclf.audit.fingerprints import Fingerprints

__all__ = ["OutlierSettings", "find_outliers"]


@dataclass(frozen=True)
class OutlierSettings:
    """When an image is flagged as an outlier."""

    # Robust z-score (median, MAD) of the mean cosine distance to the 10 nearest other images; lower flags more.
    # 3.0: on flowers5 with 20 foreign photos, 13 of them flagged and 1 of 3,453 flowers (BENCHMARKS.md, "trust").
    max_z: float = 3.0
    min_std: float = 3.0  # grey-level spread (0..255) under which an image counts as blank
    min_side: int = 16  # pixels; a smaller image carries too little to classify


def _robust_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    mad = np.median(np.abs(values - median)) * 1.4826
    return (values - median) / max(mad, 1e-9)


def find_outliers(frame: pd.DataFrame, prints: Fingerprints, distances: np.ndarray,
                  settings: OutlierSettings = OutlierSettings()) -> pd.DataFrame:
    """One row per flagged image: ``row``, ``path``, ``split``, ``label``, ``reason`` ('far', 'blank', 'tiny'),
    ``score`` (far: the robust z-score; blank: 1 − spread/min_std; tiny: 1 − side/min_side), ``detail``.

    Example: ``find_outliers(dataset.frame, fingerprint_files(paths), oof.distances)``.
    """
    z = _robust_z(distances) if len(distances) else distances
    rows = []
    for k in range(len(frame)):
        side = int(min(prints.width[k], prints.height[k]))
        if prints.readable[k] and side < settings.min_side:
            rows.append((k, "tiny", 1.0 - side / settings.min_side, f"{prints.width[k]}×{prints.height[k]} px"))
        elif prints.readable[k] and prints.std[k] < settings.min_std:
            rows.append((k, "blank", 1.0 - prints.std[k] / settings.min_std, f"grey spread {prints.std[k]:.1f}"))
        elif z[k] > settings.max_z:
            rows.append((k, "far", float(z[k]),
                         f"mean distance {distances[k]:.3f} to its nearest images (z {z[k]:.1f})"))
    out = pd.DataFrame(rows, columns=["row", "reason", "score", "detail"])
    out.insert(1, "path", frame.path.to_numpy()[out.row.to_numpy(dtype=int)])
    out.insert(2, "split", frame.split.to_numpy()[out.row.to_numpy(dtype=int)])
    out.insert(3, "label", frame.label.to_numpy()[out.row.to_numpy(dtype=int)])
    return out.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
