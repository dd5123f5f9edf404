"""Terminal display shared by the command line and the demo: rich progress bars (rate and ETA) and the eval progress
callbacks (the curation summary tables are application code: :mod:`mrbench.app.summary`)."""

from __future__ import annotations

import logging
from typing import Any, Callable


ProgressFactory = Callable[[str, int], Callable[[int], None]]


class Bar:
    """One bar of a :func:`progress_display`: ``bar(n)`` advances it by ``n`` items; :meth:`show` sets it from live
    counts (items done, of which failed) while work runs; :meth:`start` says from where the rate is measured."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def __call__(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def start(self, done: int = 0) -> None:
        """Items already done before this run (resumed shards): shown, but not counted in the rate and ETA."""
        import time

        self.progress.update(self.task, completed=done, rate_from=(done, time.monotonic()))

    def show(self, completed: int, failed: int | None = None) -> None:
        """``completed`` items done; ``failed`` of them failed (None: the step does not count failures)."""
        if failed is None:
            self.progress.update(self.task, completed=completed)
        else:
            self.progress.update(self.task, completed=completed, ok=completed - failed, failed=failed)


def _rate(task: Any) -> float | None:
    """Items per second since the bar started counting (:meth:`Bar.start`; else since it was created): the average
    over the whole run, not rich's recent-window speed, which overstates a run whose first item took longest."""
    import time

    done0, t0 = task.fields.get("rate_from") or (0, None)
    if t0 is None:
        if not task.elapsed:
            return None
        return task.completed / task.elapsed if task.completed else None
    end = task.start_time + task.finished_time if task.finished_time is not None and task.start_time else time.monotonic()
    elapsed = end - t0
    return (task.completed - done0) / elapsed if task.completed > done0 and elapsed > 0 else None


def progress_display(disable: bool | None = None) -> tuple[Any, ProgressFactory]:
    """A rich progress display (items, ok / failed counts, rate and ETA) and a factory of per-step bars.

    Args:
        disable: Show no bars; None: none when logging is set to errors only (what ``mrbench -q`` sets).

    Returns:
        ``(progress, factory)``: use ``progress`` as a context manager; ``factory(step, total)`` adds a bar and
        returns it (a :class:`Bar`: ``bar(n)`` advances it).
    """
    if disable is None:
        disable = logging.getLogger().getEffectiveLevel() >= logging.ERROR
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second (URLs/s, images/s), averaged since the bar started counting."""

        def render(self, task: Any) -> Text:
            rate = _rate(task)
            return Text("" if rate is None else f"{rate:.3g}/s", style="progress.data.speed")

    class EtaColumn(ProgressColumn):
        """Time left at the average rate."""

        def render(self, task: Any) -> Text:
            rate = _rate(task)
            if task.total is None or rate is None or task.finished:
                return Text("eta -:--:--" if not task.finished else "", style="progress.remaining")
            left = int((task.total - task.completed) / rate)
            return Text(f"eta {left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}", style="progress.remaining")

    class CountsColumn(ProgressColumn):
        """ok / failed counts where the step reports them."""

        def render(self, task: Any) -> Text:
            if "failed" not in task.fields:
                return Text("")
            failed = task.fields["failed"]
            return Text(f"{task.fields['ok']} ok, {failed} failed", style="red" if failed else "green")

    progress = Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), CountsColumn(),
        RateColumn(), TimeElapsedColumn(), EtaColumn(), disable=disable,
    )

    def factory(name: str, total: int) -> Callable[[int], None]:
        return Bar(progress, progress.add_task(name, total=total))

    return progress, factory


class bars_cleared_on_error:  # noqa: N801 - used like a function around a display
    """``with bars_cleared_on_error(progress):`` shows ``progress`` like ``with progress:``, but when the block raises
    its bars are removed before the display stops, so the error is not preceded by a stale bar."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress

    def __getattr__(self, name: str) -> Any:
        return getattr(self.progress, name)

    def __enter__(self) -> Any:
        return self.progress.__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            for task in list(self.progress.task_ids):
                self.progress.remove_task(task)
        return self.progress.__exit__(exc_type, exc, tb)


def eval_progress(progress: Any, label: str) -> tuple[Callable[[int, int], None], Callable[[str], None]]:
    """``(progress, phase)`` callbacks of :func:`~mrbench.evaluation.runner.run_eval` driving one bar of a rich
    ``progress`` display: the phase in the description (loading / preparing / generating), images done of total
    with rate and ETA."""
    task = progress.add_task(f"{label}: loading", total=None)
    bar, started = Bar(progress, task), []

    def report(done: int, total: int) -> None:
        if not started:  # the first report: generation starts (the rate leaves loading and resumed rows out)
            started.append(True)
            progress.update(task, total=total)
            bar.start(done)
        progress.update(task, completed=done)

    def phase(name: str) -> None:
        progress.update(task, description=f"{label}: {name}")

    return report, phase
