"""Logging helpers: one logger namespace, and warn-once for repeated conditions."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

_warned: set[str] = set()


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("mrbench") else f"mrbench.{name}")


def warn_once(logger: logging.Logger, key: str, message: str) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def setup_logging(level: str = "INFO") -> None:
    try:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    except ImportError:  # rich is a dependency; this keeps logging usable in stripped environments
        handler = logging.StreamHandler()
        fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)


def unfinished_attempt(path: Path) -> str | None:
    """The start line of a shard's earlier attempt that ended without an outcome (no ``done`` or ``failed:`` line:
    its worker process or node was lost, or the run was killed), from the log that attempt left; None otherwise."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    starts = [line for line in lines if line.endswith(": start") or ": start (" in line]
    ended = any(": done" in line or ": failed: " in line for line in lines)
    return starts[-1] if starts and not ended else None


@contextlib.contextmanager
def shard_log(path: Path, title: str) -> Iterator[Callable[[str], None]]:
    """Write one shard's log to ``path`` (rewritten when the shard is redone): a start line, every WARNING or worse
    of the ``mrbench`` loggers while the shard runs (its worker process runs one shard at a time), and the outcome,
    ``failed: ...`` when the work raised. Yields a function that appends a line of its own (e.g. the shard's counters).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = lambda: time.strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731
    with open(path, "w", encoding="utf-8") as f:
        handler = logging.StreamHandler(f)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
        logger = logging.getLogger("mrbench")
        logger.addHandler(handler)

        def note(line: str) -> None:
            handler.flush()
            f.write(f"{stamp()} {line}\n")
            f.flush()  # on disk at once: a process killed mid-shard leaves its start line (a retry names it)

        note(f"{title}: start (host {socket.gethostname()}, pid {os.getpid()})")
        try:
            yield note
        except BaseException as e:
            note(f"{title}: failed: {type(e).__name__}: {e}")
            raise
        finally:
            logger.removeHandler(handler)
            handler.flush()
