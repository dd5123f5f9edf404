"""Image decoding shared by curation and evaluation: one EXIF-orientation policy.

Policy: an image is what a browser displays. EXIF orientation (tag 274, values 2-8) is applied whenever pixels are
decoded (:func:`load_image`: embeddings, faces, detections, evaluation), and the width and height recorded for an
image (:func:`display_size`: the curation dims and the resolution/aspect filters) are those of the oriented image.
Stored bytes are never rotated: a release keeps the publisher's bytes, orientation tag included.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}  # transpose, rotate 270, transverse, rotate 90


def display_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``im`` once its EXIF orientation is applied (no pixels are decoded)."""
    w, h = im.size
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 (a broken EXIF block is ignored, as exif_transpose ignores it)
        orientation = None
    return (h, w) if orientation in _SWAPS_SIDES else (w, h)


def load_image(source: bytes | str | Path | IO[bytes], mode: str | None = "RGB") -> Image.Image:
    """Decode ``source`` fully, apply its EXIF orientation, convert to ``mode`` (None keeps the decoded mode).

    Raises:
        OSError, ValueError, SyntaxError: the data is not a decodable image (PIL's own errors).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    with Image.open(source) as im:
        im.load()
        out = ImageOps.exif_transpose(im)  # a new image (a copy when there is nothing to turn)
    return out.convert(mode) if mode is not None and out.mode != mode else out
