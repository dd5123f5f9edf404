"""Atomic file writes: a temporary sibling unique to the writer, fsync, then rename, so readers never see half a
file and two writers never remove each other's temporary file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from mrbench.runlock import temporary_name


def temporary_path(path: Path) -> Path:
    """A sibling temporary name unique to this writer (:func:`mrbench.runlock.temporary_name`): two processes
    writing one file never rename (or remove) each other's temporary file. Leftovers of killed runs are removed
    when the run folder is locked again; nothing else is."""
    return path.with_name(temporary_name(path.name))


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """The one way MRBench writes a shard file: yields a temporary sibling to write; once the block ends without
    an error it is synced and renamed onto ``path`` (readers never see half a file), otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_text_if_changed(path: Path, text: str) -> bool:
    """Atomically write ``text`` unless ``path`` already holds exactly it (a finished rerun touches nothing)."""
    path = Path(path)
    data = text.encode()
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True
