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


class ImageTooLargeError(ValueError):
    """An image declares more pixels than allowed (a decompression bomb, or simply too big to decode here)."""


def declared_size(source: bytes | str | Path | IO[bytes]) -> tuple[int, int]:
    """``(width, height)`` an image declares in its header (no pixels decoded).

    Raises:
        ImageTooLargeError: the image is so large that PIL refuses to open it at all.
        OSError, ValueError, SyntaxError: the data is not an image.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as im:
            return im.size
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(str(e)) from None


def load_image(source: bytes | str | Path | IO[bytes], mode: str | None = "RGB",
               max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` fully, apply its EXIF orientation, convert to ``mode`` (None keeps the decoded mode).

    Args:
        max_pixels: Refuse an image declaring more pixels, before decoding it.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels (or more than PIL opens at all).
        OSError, ValueError, SyntaxError: the data is not a decodable image (PIL's own errors).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        im = Image.open(source)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(str(e)) from None
    with im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLargeError(f"{w}x{h} pixels > max_image_pixels {max_pixels}")
        im.load()
        out = ImageOps.exif_transpose(im)  # a new image (a copy when there is nothing to turn)
    return out.convert(mode) if mode is not None and out.mode != mode else out
