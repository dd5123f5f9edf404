"""Embed or detect over image files and folders, streaming rows into a parquet file (errors are rows, not crashes).

Used by ``mrbench embed`` and ``mrbench detect``. Folders are walked recursively in sorted order and only files with
an image extension are taken; files named explicitly are always tried, so an unreadable one yields a row with
``status`` = ``unreadable_image`` (or ``not_found``) and the reason in ``error_message``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mrbench.backends.base import Detector, FaceEncoder, ImageEncoder
from mrbench.backends.torch_common import batched  # torch is loaded anyway: a backend is built first
from mrbench.images import load_image
from mrbench.log import get_logger, warn_once
from mrbench.records import STATUS_OK
from mrbench.stats import CappedCounter

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
STATUS_NOT_FOUND = "not_found"
STATUS_UNREADABLE = "unreadable_image"

logger = get_logger("backends.files")

EMBED_SCHEMA = pa.schema([
    ("path", pa.string()), ("encoder", pa.string()), ("embedding", pa.list_(pa.float32())),
    ("status", pa.string()), ("error_message", pa.string()),
])
FACE_FIELDS = [("num_faces", pa.int32()), ("face_box", pa.list_(pa.float32())), ("face_score", pa.float32())]
DETECT_SCHEMA = pa.schema([
    ("path", pa.string()), ("detector", pa.string()), ("boxes", pa.list_(pa.list_(pa.float32()))),
    ("scores", pa.list_(pa.float32())), ("labels", pa.list_(pa.string())),
    ("status", pa.string()), ("error_message", pa.string()),
])


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted, image extensions only) into a list of files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(p)  # a missing or unreadable file still gets its row
    return out


def read_image(path: Path) -> tuple[Image.Image | None, str, str | None]:
    """Decode ``path`` fully: ``(image, "ok", None)`` or ``(None, reason, message)``."""
    if not path.is_file():
        return None, STATUS_NOT_FOUND, f"no such file: {path}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # decoded now so truncated files fail here, not inside a backend; EXIF orientation applied (mrbench.images)
            return load_image(path, mode=None), STATUS_OK, None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return None, STATUS_UNREADABLE, f"{type(e).__name__}: {e}"


def _write_rows(out: Path, schema: pa.Schema, info: dict[str, Any],
                rows_iter: Iterator[list[dict[str, Any]]]) -> dict[str, int]:
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = schema.with_metadata({"mrbench.backend": json.dumps(info)})
    tmp = out.with_name(out.name + ".partial")
    counts = CappedCounter()
    with pq.ParquetWriter(tmp, schema) as writer:
        for rows in rows_iter:
            for r in rows:
                counts.add(r["status"])
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    tmp.replace(out)  # the output appears complete or not at all
    return dict(counts.counts)


def _read_chunk(chunk: Sequence[Path]) -> list[tuple[Path, Image.Image | None, str, str | None]]:
    got = []
    for path in chunk:
        image, status, message = read_image(path)
        if status != STATUS_OK:
            warn_once(logger, f"read:{status}", f"{status}: {message} (further ones are counted, not logged)")
        got.append((path, image, status, message))
    return got


def embed_to_parquet(encoder: ImageEncoder | FaceEncoder, name: str, paths: Iterable[str | Path], out: Path, *,
                     chunk_size: int = 256, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Embed every image under ``paths`` into ``out`` (one row per image); returns rows per status.

    Face encoders add ``num_faces``, ``face_box`` (largest face, x1 y1 x2 y2) and ``face_score``; their
    ``embedding`` is null when no face is found.
    """
    files = find_images(paths)
    is_face = isinstance(encoder, FaceEncoder)
    schema = pa.schema(list(EMBED_SCHEMA) + ([pa.field(n, t) for n, t in FACE_FIELDS] if is_face else []))

    def rows() -> Iterator[list[dict[str, Any]]]:
        for chunk in batched(files, chunk_size):
            got = _read_chunk(chunk)
            ok = [im for _, im, status, _ in got if status == STATUS_OK]
            if is_face:
                results = iter(encoder.faces(ok))  # type: ignore[union-attr]
            else:
                vectors = iter(encoder.embed_images(ok) if ok else np.zeros((0, encoder.dim), np.float32))  # type: ignore[union-attr]
            batch = []
            for path, _, status, message in got:
                row: dict[str, Any] = {"path": str(path), "encoder": name, "embedding": None, "status": status,
                                       "error_message": message}
                if status == STATUS_OK and is_face:
                    face = next(results)
                    row.update(num_faces=face.num_faces, face_box=list(face.box) if face.box else None,
                               face_score=face.score,
                               embedding=None if face.embedding is None else face.embedding.astype(np.float32).tolist())
                elif status == STATUS_OK:
                    row["embedding"] = next(vectors).tolist()
                elif is_face:
                    row.update(num_faces=None, face_box=None, face_score=None)
                batch.append(row)
            if progress:
                progress(len(chunk))
            yield batch

    return _write_rows(out, schema, {"kind": "embed", "registry_name": name, **encoder.info.to_dict()}, rows())


def detect_to_parquet(detector: Detector, name: str, paths: Iterable[str | Path], out: Path, *,
                      chunk_size: int = 256, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Detect objects in every image under ``paths`` into ``out`` (one row per image); returns rows per status."""
    files = find_images(paths)

    def rows() -> Iterator[list[dict[str, Any]]]:
        for chunk in batched(files, chunk_size):
            got = _read_chunk(chunk)
            dets = iter(detector.detect([im for _, im, status, _ in got if status == STATUS_OK]))
            batch = []
            for path, _, status, message in got:
                row: dict[str, Any] = {"path": str(path), "detector": name, "boxes": None, "scores": None,
                                       "labels": None, "status": status, "error_message": message}
                if status == STATUS_OK:
                    d = next(dets)
                    row.update(boxes=d.boxes.astype(np.float32).tolist(), scores=d.scores.astype(np.float32).tolist(),
                               labels=list(d.labels))
                batch.append(row)
            if progress:
                progress(len(chunk))
            yield batch

    return _write_rows(out, DETECT_SCHEMA, {"kind": "detect", "registry_name": name, **detector.info.to_dict()}, rows())
