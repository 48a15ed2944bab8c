"""``petclf explain``: heat-map overlays, raw maps and an index for image files and folders (the job around
``Explainer``: finding the files, naming and writing the outputs)."""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from petclf.core.atomic import atomic_path
from petclf.core.destinations import output_dir
from petclf.core.errors import UsageError, require_positive
from petclf.core.safe_text import csv_cell, printable
from petclf.data.listing import expand_images
from petclf.runtime.explain import Explainer

__all__ = ["INDEX_FILE", "explain_files"]

#: The table ``explain_files`` writes beside the overlays.
INDEX_FILE = "index.csv"


def _safe_stem(path: Path) -> str:
    # File names come from strangers: only letters, digits, '_', '-' and '.' reach the output folder's names.
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._")[:80] or "image"


def explain_files(model_dir: str | Path, images: Sequence[str | Path], *, out: str | Path, label: str | None = None,
                  topk: int | None = None, device: str | torch.device | None = None) -> Path:
    """Write a heat-map overlay (PNG) and its raw Grad-CAM map (``.npy``, float32) per image and class into
    ``out``, and ``index.csv`` naming the image, class and probability of each; return the index's path.

    Folders among ``images`` stand for the images inside them. Each image is explained for ``label``, else
    for its ``topk`` most likely classes, else for its predicted class, or for a multi-label model every label
    over its threshold (the most likely label when none is; see ``Explainer.explain``). Images that cannot be
    read are named in a UsageError once the others are written.

    Example: ``explain_files("runs/pets/model", ["cat.jpg"], out="why", topk=2)`` → ``why/index.csv``.
    """
    if topk is not None:
        require_positive(topk=topk)
    files = expand_images(images)
    if not files:
        raise UsageError(f"no image files found in {printable(', '.join(map(str, images)))}.")
    explainer = Explainer(model_dir, device=device)
    if label is not None:
        explainer.class_index(label)  # an unknown class is refused before any work
    folder = output_dir(out, what="the heat maps")
    rows, failed, used = [], [], set()
    for file in files:
        try:
            explanations = explainer.explain(file, label=label, topk=topk)
        except UsageError as err:
            failed.append(str(err).rstrip("."))
            continue
        stem = _safe_stem(file)
        while stem in used:  # two files of one name in different folders
            stem += "_"
        used.add(stem)
        for rank, explanation in enumerate(explanations, start=1):
            name = f"{stem}.top{rank}" if label is None else stem
            (folder / f"{name}.png").write_bytes(explanation.png())
            np.save(folder / f"{name}.npy", explanation.heatmap.astype(np.float32), allow_pickle=False)
            rows.append((str(file), explanation.label, f"{explanation.probability:.6f}", f"{name}.png",
                         f"{name}.npy"))
            print(f"{printable(str(file))}: {printable(explanation.label)} {explanation.probability:.1%} "
                  f"-> {printable(str(folder / name))}.png")
    index = folder / INDEX_FILE
    with atomic_path(index) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "class", "probability", "overlay", "heatmap"])
        writer.writerows([csv_cell(v) for v in row] for row in rows)
    if failed:
        raise UsageError(f"{len(failed)} of {len(files)} images could not be read: {'; '.join(failed[:5])}"
                         f"{' …' if len(failed) > 5 else ''}. The heat maps of the others are in {folder}.")
    return index
