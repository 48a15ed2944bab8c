"""Listing a folder's files: candidate images, and why everything else is passed over."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

from petclf.core.errors import DataError
from petclf.data.images import IMAGE_EXTENSIONS

__all__ = ["Listing", "class_dirs", "existing_dir", "expand_images", "has_image", "list_images"]

_JUNK_NAMES = {".DS_Store": "macOS folder metadata (.DS_Store)", "Thumbs.db": "Windows thumbnail cache (Thumbs.db)",
               "desktop.ini": "Windows folder settings (desktop.ini)"}


#: Candidate images and (path, reason) for every other file of a folder.
Listing = tuple[list[Path], list[tuple[str, str]]]


def _why_not_image(path: Path) -> str | None:
    """None for a candidate image file; otherwise why the file is passed over."""
    if path.name in _JUNK_NAMES:
        return _JUNK_NAMES[path.name]
    if path.name.startswith("._"):
        return "macOS AppleDouble metadata (._ file)"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file ({path.suffix or 'no extension'})"
    if path.is_symlink():
        # Settled here, at listing time: a link has no stamp for the scan cache to key on.
        try:
            path.stat()
        except FileNotFoundError:
            return "broken symlink"
        except OSError:
            return "symlink loop"
    return None


def _entries(folder: Path, *, recurse: bool) -> Iterator[tuple[Path, str | None]]:
    """Each file with why it is passed over (None: a candidate image); symlinked folders are not followed."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recurse else []
        for name in sorted(filenames):
            path = Path(dirpath) / name
            yield path, _why_not_image(path)
        if not recurse:
            break


def list_images(folder: Path, *, recurse: bool) -> Listing:
    """Candidate images and (path, reason) for everything else.

    Example: ``images, skipped = list_images(Path("pets/images"), recurse=False)``.
    """
    images, skipped = [], []
    for path, reason in _entries(folder, recurse=recurse):
        (skipped.append((str(path), reason)) if reason else images.append(path))
    return images, skipped


def has_image(folder: Path, *, recurse: bool) -> bool:
    """True at the first candidate image (layout detection needs no full listing)."""
    return any(reason is None for _, reason in _entries(folder, recurse=recurse))


def class_dirs(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that may name a class (hidden ones left out)."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def existing_dir(path: Path | str) -> Path:
    """``path`` as a Path when it is an existing folder; otherwise a DataError that says what it is."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data folder {path} does not exist: check the path.")
    if not path.is_dir():
        raise DataError(f"{path} is a file: expected a folder of images, or a table of file names and labels "
                        f"ending in {', '.join(sorted({'.csv', '.tsv'}))}.")
    return path


def expand_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders replaced by the image files inside them (sorted, recursive)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            files.append(item)
    return files
