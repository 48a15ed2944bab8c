"""Uploaded bytes to model input: the same pixels ``Predictor`` reads from a file, under the scan's limits.

Uploads come from anyone who can reach the port, so the decoder only sees formats petclf reads
from folders (no EPS, which Pillow hands to Ghostscript), images over PIL's pixel limit are
refused from their header before a pixel is decoded, and any failure of a decoder on hostile
bytes is a 422 for that request, never an error of the server.
"""
from __future__ import annotations

import contextlib
import io
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from petclf.core.safe_text import one_line
from petclf.data.images import Presizer, draft_for, pixel_problem
from petclf.serve.errors import RequestError

__all__ = ["DECODED_FORMATS", "decode_pixels", "read_image_bytes"]

#: Pillow formats an upload may be in: those of petclf's image files (IMAGE_EXTENSIONS), read by content.
DECODED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG includes phones' MPO files
# Once: registers WebP and TIFF, which Pillow otherwise loads only after the common formats failed.
Image.init()


def decode_pixels(data: bytes, presize: int, *, name: str = "the upload") -> int:
    """How many pixels ``read_image_bytes`` will decode (after a JPEG's reduced-scale draft), from the header only.

    Raises ``RequestError`` (422) as ``read_image_bytes`` does for empty, undecodable or too large images.

    Example: ``decode_pixels(open("cat.jpg", "rb").read(), 96)`` → ``187500`` for a 4000×3000 photo.
    """
    with _opened(data, name) as img:
        draft_for(img, presize)
        return img.width * img.height


def read_image_bytes(data: bytes, presize: int, *, name: str = "the upload") -> np.ndarray:
    """(presize, presize, 3) uint8 pixels of an encoded image, exactly as ``Predictor`` reads the same file.

    Raises ``RequestError`` (422) for empty, undecodable or too large images; ``name`` says which in the reason.

    Example: ``read_image_bytes(open("cat.jpg", "rb").read(), 96).shape`` → ``(96, 96, 3)``.
    """
    with _opened(data, name) as img:
        draft_for(img, presize)  # as read_rgb does for files: the same pixels
        img.load()
        return Presizer(presize)(img)


@contextlib.contextmanager
def _opened(data: bytes, name: str) -> Iterator[Image.Image]:
    """The image in ``data``, opened (header read, nothing decoded); any failure inside is the sender's: a 422."""
    if not data:
        raise RequestError(422, f"{name} is empty: expected the bytes of a JPEG, PNG, GIF, BMP, WebP or TIFF file.")
    try:
        with Image.open(io.BytesIO(data), formats=DECODED_FORMATS) as img:
            problem = pixel_problem(img)
            if problem:
                raise RequestError(422, f"{name} is {problem}: send a smaller image.")
            yield img
    except RequestError:
        raise
    except UnidentifiedImageError:
        raise RequestError(422, f"{name} is not an image petclf reads: expected a JPEG, PNG, GIF, BMP, WebP or TIFF "
                                "file.") from None
    except Image.DecompressionBombError as err:
        raise RequestError(422, f"{name} is too large to decode safely ({one_line(err)}): send a smaller "
                                "image.") from None
    except Exception as err:  # noqa: BLE001 - decoders raise many kinds on hostile bytes; each is the sender's problem
        raise RequestError(422, f"cannot read {name} as an image ({type(err).__name__}: {one_line(err, limit=160)}); "
                                f"expected a JPEG, PNG, GIF, BMP, WebP or TIFF file.") from None
