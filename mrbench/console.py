"""Terminal display shared by the command line and the demo: rich progress bars (rate and ETA), the eval progress
callbacks and the curation summary tables.

Core code: the outer layers are imported inside the functions that need them only.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from mrbench.records import SPLITS

ProgressFactory = Callable[[str, int], Callable[[int], None]]


def progress_display(disable: bool | None = None) -> tuple[Any, ProgressFactory]:
    """A rich progress display (rate and ETA) and a factory of per-step advance callbacks.

    Args:
        disable: Show no bars; None: none when logging is set to errors only (what ``mrbench -q`` sets).

    Returns:
        ``(progress, factory)``: use ``progress`` as a context manager; ``factory(step, total)`` adds a bar and
        returns its ``advance(n)``.
    """
    if disable is None:
        disable = logging.getLogger().getEffectiveLevel() >= logging.ERROR
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second (URLs/s, images/s): rich's own speed column shows only for bars without a total."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None and task.completed and task.elapsed:  # one big step (a shard, a batch): the average
                speed = task.completed / task.elapsed
            return Text("" if speed is None else f"{speed:.3g}/s", style="progress.data.speed")

    progress = Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=disable,
    )

    def factory(name: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(name, total=total)
        return lambda n: progress.advance(task, n)

    return progress, factory


def eval_progress(progress: Any, label: str) -> tuple[Callable[[int, int], None], Callable[[str], None]]:
    """``(progress, phase)`` callbacks of :func:`~mrbench.evaluation.runner.run_eval` driving one bar of a rich
    ``progress`` display: the phase in the description (loading / preparing / generating), images done of total
    with rate and ETA."""
    task = progress.add_task(f"{label}: loading", total=None)

    def report(done: int, total: int) -> None:
        progress.update(task, total=total, completed=done)

    def phase(name: str) -> None:
        progress.update(task, description=f"{label}: {name}")

    return report, phase


def print_summary(summary: dict) -> None:
    """Print the summary of a curation run (rows per status and step, leakage audit, splits, release)."""
    from rich.console import Console
    from rich.table import Table

    from mrbench.curation.pipeline import drop_step, drop_step_order

    console = Console()
    t = Table(title="rows per status and step")
    t.add_column("status")
    t.add_column("step")
    t.add_column("rows", justify="right")
    order = drop_step_order()
    for k, v in sorted(summary["rows_per_status"].items(),
                       key=lambda kv: (kv[0] != "ok", order.index(drop_step(kv[0])), -kv[1], kv[0])):
        t.add_row(k, "release" if k == "ok" else drop_step(k), str(v))
    console.print(t)
    audit = summary.get("leakage_audit")
    if audit is not None:
        a = Table(title="leakage audit (pairs across splits)")
        for c in ("kind", "splits", "pairs"):
            a.add_column(c)
        for key, n in audit["pairs"].items():
            kind, splits = key.split("/", 1)
            a.add_row(kind, splits, str(n))
        if not audit["pairs"]:
            a.add_row("near_duplicate, identity", "all", "0")
        console.print(a)
        console.print(f"leakage audit: {audit['pairs_total']} pairs; {audit['removed_train_images']} training images "
                      f"removed, {audit['dropped_groups']} groups dropped (near-duplicate cosine >= "
                      f"{audit['near_dup_threshold']}, identity cosine >= {audit['identity_threshold']})")
    g = Table(title="splits")
    for c in ("split", "groups", "images"):
        g.add_column(c)
    for s in SPLITS:
        g.add_row(s, str(summary["groups_per_split"].get(s, 0)), str(summary["images_per_split"].get(s, 0)))
    console.print(g)
    console.print(f"release: {summary['release']} ({summary['release_rows']} images)")
    if summary.get("report"):
        console.print(f"report: {summary['report']}")
