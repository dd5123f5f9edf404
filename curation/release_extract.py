"""``mrbench release extract-images``: a verified release's images as files (``OUT/images/<id>.<ext>``) beside
its EasyRef JSON. A shared release is untrusted input: nothing is written through a symlink or outside ``OUT``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow.parquet as pq

from mrbench.curation.release_format import (
    IMAGE_EXTENSION, RELEASE_ID, ReleaseError, UnsafeOutputError, image_bytes, release_data_files,
)
from mrbench.curation.release_verify import check_release

def default_images_dir(release_dir: str | Path) -> Path:
    """Where ``extract-images`` writes by default: ``<release>-easyref`` next to the release, never inside it
    (files inside would make the release fail ``verify``)."""
    release_dir = Path(release_dir).resolve()
    return release_dir.parent / f"{release_dir.name}-easyref"


def extract_images(release_dir: str | Path, out: str | Path | None = None) -> tuple[Path, int]:
    """Write every image of a verified release as ``OUT/images/<id>.<format>`` and copy its EasyRef JSON to
    ``OUT`` (whose ``images/...`` paths then resolve). A shared release is untrusted input: it is verified first,
    every id must have the release id format and every format be a bare extension, and files are created only
    inside ``OUT/images`` (no symlink followed).

    Returns:
        The images folder and the number of images written.

    Raises:
        ReleaseError: the release fails verification, holds a bad id or format, or ``out`` is inside it.
    """
    release_dir = Path(release_dir)
    report = check_release(release_dir)
    if not report.ok:
        raise ReleaseError(f"{release_dir} failed verification; nothing extracted:\n" +
                           "\n".join(f"  {p}" for p in report.problems[:20]) + "\n" + report.summary())
    root = release_dir.resolve()
    given = Path(out).absolute() if out is not None else default_images_dir(release_dir)
    for p in (given, given / "images"):  # checked before anything is written (mkdir would follow them)
        if p.is_symlink():
            raise UnsafeOutputError(f"{p} is a symlink; refusing to write through it (remove it or choose another --out)")
    out_dir = given.resolve()
    if out_dir == root or root in out_dir.parents:
        raise UnsafeOutputError(f"--out {out_dir} is inside the release {root}; choose a folder outside it")
    data_files = release_data_files(root)
    bad: list[str] = []
    for f in data_files:  # ids and formats first: a bad release writes nothing
        for batch in pq.ParquetFile(f).iter_batches(columns=["id", "format"], batch_size=8192):
            for rid, fmt in zip(*(batch.column(c).to_pylist() for c in ("id", "format"))):
                if not isinstance(rid, str) or not RELEASE_ID.fullmatch(rid):
                    bad.append(f"{f.name}: id {rid!r} is not a release id (16 hex digits)")
                elif fmt and not IMAGE_EXTENSION.fullmatch(fmt):
                    bad.append(f"{f.name}: id {rid}: format {fmt!r} is not an image extension")
    if bad:
        raise ReleaseError(f"{release_dir}: {len(bad)} row(s) with a bad id or format; nothing extracted:\n" +
                           "\n".join(f"  {b}" for b in bad[:20]))
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    dir_fd = _open_dir(images)
    n = 0
    try:
        for f in data_files:
            for batch in pq.ParquetFile(f).iter_batches(columns=["id", "format", "image"], batch_size=256):
                cols = [batch.column(c).to_pylist() for c in ("id", "format")] + [image_bytes(batch.column("image"))]
                for rid, fmt, data in zip(*cols):
                    _write_in(dir_fd, f"{rid}.{fmt or 'jpg'}", data or b"")
                    n += 1
        out_fd = _open_dir(out_dir)
        try:
            for js in sorted((root / "easyref").glob("*.json")) if (root / "easyref").is_dir() else []:
                _write_in(out_fd, js.name, js.read_bytes())
        finally:
            os.close(out_fd)
    finally:
        os.close(dir_fd)
    return images, n


def _open_dir(path: Path) -> int:
    """Open a folder to write in; a symlink in its place is refused (not followed)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) and path.is_symlink():
            raise UnsafeOutputError(f"{path} is a symlink; refusing to write through it") from None
        raise


def _write_in(dir_fd: int, name: str, data: bytes) -> None:
    """Create or replace file ``name`` directly in the open folder ``dir_fd``, never through a symlink."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeOutputError(f"{name} in the output folder is a symlink; refusing to write through it") from None
        raise
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
