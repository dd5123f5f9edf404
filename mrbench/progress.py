"""Live progress inside shards: a worker counts the items of the shard it runs (ok / failed) and leaves the counts in
a small per-shard file; the driver reads those files while the shards run and moves its bar between completions.

A file (not a queue) works the same for every executor: local processes and Ray tasks on other machines write
beside the shard's output, on the storage the run folder lives on. Writes are throttled (one atomic replace every
``interval`` seconds at most), so counting costs a clock read per item.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence


class ShardProgress:
    """Counts of one running shard, written to ``path`` at most every ``interval`` seconds.

    Args:
        path: The shard's progress file (:meth:`mrbench.shards.ShardSet.progress_path`); None counts without writing.
        interval: Seconds between writes.
    """

    def __init__(self, path: Path | None = None, interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self.items = self.failed = 0
        self._last = 0.0

    def add(self, n: int = 1, failed: int = 0) -> None:
        """``n`` more items processed, ``failed`` of them failed."""
        self.items += n
        self.failed += failed
        if self.path is not None and time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.path is None:
            return
        self._last = time.monotonic()
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"items": self.items, "failed": self.failed}))
            os.replace(tmp, self.path)
        except OSError:  # progress is a display aid: a full disk must not fail the shard here
            with contextlib.suppress(OSError):
                tmp.unlink()


_NOWHERE = ShardProgress()
_current: ShardProgress = _NOWHERE


def shard_progress() -> ShardProgress:
    """The progress counter of the shard this process is running (one that writes nowhere outside a shard)."""
    return _current


@contextlib.contextmanager
def reporting(path: Path) -> Iterator[ShardProgress]:
    """Count the shard run inside the block into ``path``; its final counts are written when the block ends (the
    driver reads them, then removes the file: :class:`LiveShardProgress`)."""
    global _current
    progress = ShardProgress(path)
    _current = progress
    try:
        yield progress
    finally:
        _current = _NOWHERE
        if progress.items:
            progress.flush()


def read_progress(path: Path) -> tuple[int, int]:
    """``(items, failed)`` of a running shard from its progress file; (0, 0) when it has written none yet."""
    try:
        data = json.loads(path.read_text())
        return int(data["items"]), int(data["failed"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0


class LiveShardProgress:
    """The driver's side: moves ``bar`` while the shards of a step run, from their progress files, between the
    completions the executor reports; removes the files when the step's shards have run.

    A bar with a ``show(completed, failed)`` method (:class:`mrbench.console.Bar`) is set from the files every
    ``interval`` seconds and shows ok / failed counts once a shard reports them; a plain ``advance(n)`` callable is
    advanced per finished shard, as before.

    Args:
        bar: The step's bar, or None (no display: the files are only cleaned up).
        shards: The step's :class:`~mrbench.shards.ShardSet` (markers and progress files).
        weights: Items per shard (what a finished shard counts for).
        done: Which shards were complete before this run (resumed: counted at once, left out of the rate).
    """

    def __init__(self, bar: Callable[[int], None] | None, shards: Any, weights: Sequence[int], done: Sequence[bool],
                 interval: float = 0.5) -> None:
        self.bar, self.shards, self.weights, self.interval = bar, shards, list(weights), interval
        self.live = bar is not None and hasattr(bar, "show")
        self.finished = {i for i, d in enumerate(done) if d}
        self.base = sum(self.weights[i] for i in self.finished)
        self.failed_finished = 0
        self.reported = False  # a shard of this step has written counts
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if bar is not None:
            start = getattr(bar, "start", None)
            start(self.base) if start else bar(self.base)

    def __enter__(self) -> "LiveShardProgress":
        if self.live and len(self.finished) < len(self.weights):
            self._thread = threading.Thread(target=self._poll, name="shard-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc[0] is None:
            self.refresh()
        for i in range(len(self.weights)):
            with contextlib.suppress(OSError):
                self.shards.progress_path(i).unlink()

    def shard_done(self, n: int) -> None:
        """The executor's per-shard callback (``n``: the finished shard's weight)."""
        if self.live:
            self.refresh()
        elif self.bar is not None:
            self.bar(n)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def refresh(self) -> None:
        """Set the bar from the markers and progress files now."""
        with self._lock:
            running_items = running_failed = 0
            for i in range(len(self.weights)):
                if i in self.finished:
                    continue
                items, failed = read_progress(self.shards.progress_path(i))
                self.reported = self.reported or items > 0
                if self.shards.is_done(i):  # its final counts were written before its marker
                    self.finished.add(i)
                    self.base += self.weights[i]
                    self.failed_finished += failed
                else:
                    running_items += min(items, self.weights[i])
                    running_failed += failed
            if self.live:
                failed = self.failed_finished + running_failed
                self.bar.show(self.base + running_items, failed if self.reported else None)  # type: ignore[union-attr]
