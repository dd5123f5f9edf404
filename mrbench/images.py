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


def orientation_of(source: bytes | IO[bytes]) -> tuple[int | None, tuple[int, int]]:
    """``(EXIF orientation or None, stored (width, height))`` of encoded image bytes, from the header only."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    with Image.open(source) as im:
        try:
            orientation = im.getexif().get(EXIF_ORIENTATION)
        except Exception:  # noqa: BLE001 (a broken EXIF block is ignored, as exif_transpose ignores it)
            orientation = None
        return orientation, im.size


def box_to_stored_frame(box: list[float] | tuple[float, ...], orientation: int | None,
                        stored_size: tuple[int, int]) -> list[float]:
    """A box ``[x1, y1, x2, y2]`` measured on the oriented image (:func:`load_image`) in the pixels of the stored,
    unrotated bytes (what ``PIL.Image.open`` gives without ``exif_transpose``: the frame a loader that never reads
    EXIF crops in). ``stored_size`` is the stored image's (width, height)."""
    w, h = stored_size
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    # oriented (x, y) -> stored (u, v), inverting the transpose exif_transpose applies for each orientation value
    inverse = {
        2: lambda x, y: (w - x, y), 3: lambda x, y: (w - x, h - y), 4: lambda x, y: (x, h - y),
        5: lambda x, y: (y, x), 6: lambda x, y: (y, h - x), 7: lambda x, y: (w - y, h - x), 8: lambda x, y: (w - y, x),
    }.get(orientation or 1)
    if inverse is None:
        return [x1, y1, x2, y2]
    corners = [inverse(x, y) for x in (x1, x2) for y in (y1, y2)]
    us, vs = [c[0] for c in corners], [c[1] for c in corners]
    return [min(us), min(vs), max(us), max(vs)]
