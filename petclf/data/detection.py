"""Which layout a folder is in: split folders, class folders or one flat folder of named files (or the Pets
archive), and refusing class folders that hold photos, masks or annotations of one dataset instead."""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from petclf.core import log
from petclf.core.errors import DataError
from petclf.data.images import IMAGE_EXTENSIONS
from petclf.data.label_pattern import DEFAULT_LABEL_PAT
from petclf.data.listing import Listing, class_dirs, existing_dir, has_image, list_images
from petclf.data.table import is_table

__all__ = ["VALID_NAMES", "FoundLayout", "detect_folder", "detect_layout", "explicit_folder", "refuse_non_classes"]

#: Names of the validation folder in the folders layout, in the order they are looked for.
VALID_NAMES = ("valid", "val")


@dataclass(frozen=True)
class FoundLayout:
    """A detected layout and the folder it applies to (``images/`` of the Pets archive)."""

    layout: str
    root: Path
    listing: Listing | None = None  # the files of ``root`` when detection already listed them


#: Folder names that hold photos rather than name a class (compared in lower case).
_IMAGE_FOLDER_NAMES = frozenset({
    "images", "image", "imgs", "img", "photos", "photo", "pictures", "pics", "jpg", "jpeg", "jpegimages",
    "train_images", "valid_images", "val_images", "test_images",
})
#: Folder names that hold masks or annotations rather than name a class (compared in lower case).
_ANNOTATION_FOLDER_NAMES = frozenset({
    "annotations", "annotation", "masks", "trimaps", "segmentation", "segmentations", "labels", "xmls",
})
# One kind of file under several extensions.
_SAME_KIND = {".jpeg": ".jpg", ".tif": ".tiff"}


def _pets_style(names: Sequence[str]) -> bool:
    """True when most ``names`` read as ``<label>_<n>.<ext>`` with two labels or more (the pets layout)."""
    pattern = re.compile(DEFAULT_LABEL_PAT)
    labels = [m.group(1) for m in map(pattern.match, names) if m]
    return 2 * len(labels) > len(names) and len(set(labels)) >= 2


def _pets_archive(root: Path) -> FoundLayout | None:
    """The pets layout of ``root/images`` when ``root`` is the Oxford-IIIT Pet archive, else None."""
    images = root / "images"
    if not (images.is_dir() and (root / "annotations").is_dir()):
        return None
    # Listed once: the same listing then feeds the pets frame.
    listing = list_images(images, recurse=False)
    if not _pets_style([f.name for f in listing[0]]):
        return None
    log.info(f"{root} looks like the Oxford-IIIT Pet archive: reading labels from the file names in "
             f"{images} (annotations/ is not used).")
    return FoundLayout("pets", images, listing)


def detect_folder(path: Path) -> FoundLayout:
    """The layout of the existing folder ``path`` (see ``detect_layout``)."""
    if (path / "train").is_dir() and any((path / v).is_dir() for v in (*VALID_NAMES, "test")):
        return FoundLayout("folders", path)
    if has_image(path, recurse=False):
        return FoundLayout("pets", path)
    archive = _pets_archive(path)
    if archive is not None:
        return archive
    if any(has_image(d, recurse=True) for d in class_dirs(path)):
        return FoundLayout("classes", path)
    raise DataError(
        f"no images found in {path}: expected image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
        "named <label>_<n>.jpg, one sub-folder per class, or train/ and valid/ split folders."
    )


def detect_layout(path: Path) -> str:
    """Name the layout of ``path``: 'csv' (a table file), 'folders', 'classes' or 'pets'.

    The Oxford-IIIT Pet archive (``images/`` beside ``annotations/``) is 'pets': its ``images/``
    folder is what ``find_dataset`` reads.

    Example: ``detect_layout(Path("caltech10"))`` → ``'folders'`` when it has train/ and valid/.
    """
    return "csv" if is_table(path) else detect_folder(existing_dir(path)).layout


def refuse_non_classes(root: Path, frame: pd.DataFrame) -> None:
    """Refuse class folders that look like photo, mask or annotation folders of one dataset.

    Works from the listing in ``frame`` (``path``, ``label``), so big folders are not walked again.
    """
    direct: dict[str, list[str]] = {}
    kinds: dict[str, Counter] = {}
    stems: dict[str, set[str]] = {}
    for path, label in zip(frame.path, frame.label):
        folder, name = os.path.split(path)
        stem, ext = os.path.splitext(name)
        if folder == str(root / label):
            direct.setdefault(label, []).append(name)
        ext = ext.lower()
        kinds.setdefault(label, Counter())[_SAME_KIND.get(ext, ext)] += 1
        stems.setdefault(label, set()).add(stem)
    override = "or pass layout='classes' / --layout classes if it really is a class"
    for label in sorted(kinds):
        folder = root / label
        if label.lower() in _ANNOTATION_FOLDER_NAMES:
            raise DataError(f"{folder} looks like masks or annotations, not a class of images: point petclf at "
                            f"the folder of photos, {override}.")
        if label.lower() in _IMAGE_FOLDER_NAMES and _pets_style(direct.get(label, [])):
            raise DataError(f"{folder} looks like a folder of photos named <label>_<n>.jpg, not a class: point "
                            f"petclf at {folder} (it is in the pets layout), {override}.")
    dominant = {label: counts.most_common(1)[0][0] for label, counts in kinds.items()}
    if len(set(dominant.values())) < 2:
        return  # one kind of file throughout: shared stems (cat/1.jpg, dog/1.jpg) are fine
    stems_of_kind: dict[str, set[str]] = {}
    for label, kind in dominant.items():
        stems_of_kind.setdefault(kind, set()).update(stems[label])
    # Per kind once, not per class: a dataset can have hundreds of classes.
    of_other_kinds = {kind: set().union(*(s for other, s in stems_of_kind.items() if other != kind))
                      for kind in stems_of_kind}
    for label in sorted(kinds):
        if 2 * len(stems[label] & of_other_kinds[dominant[label]]) <= len(stems[label]):
            continue
        partner = max((other for other in sorted(kinds) if dominant[other] != dominant[label]),
                      key=lambda other: len(stems[label] & stems[other]))
        shared = len(stems[label] & stems[partner])
        raise DataError(
            f"class folders {root / label} ({dominant[label]}) and {root / partner} ({dominant[partner]}) hold "
            f"{shared} files of the same names but of different kinds: they look like masks or annotations "
            "beside photos, not classes. Point petclf at the folder of photos, or pass layout='classes' / "
            "--layout classes if they really are classes."
        )


def explicit_folder(root: Path, layout: str) -> FoundLayout:
    """The folder that an explicitly chosen ``layout`` reads."""
    if layout == "pets" and not has_image(root, recurse=False):
        # A model trained on the Pets archive stores layout 'pets' for it; evaluation passes it back.
        archive = _pets_archive(root)
        if archive is not None:
            return archive
    return FoundLayout(layout, root)
