"""``mrbench curate --retry-failed RUN_DIR``: download again the rows whose failure a retry can fix, then finish.

What it does to the run folder, in this order (each step is safe to kill; rerunning the command continues):

1. Reads every finished download shard and picks the rows whose status is retryable
   (:data:`curation.netguard.RETRYABLE`: ``timeout``, ``connection_error``, ``http_429``, ``http_5xx``). Shards
   without such rows are not touched (their files keep their bytes).
2. Removes what was computed from the shards that have such rows, so no stale result survives: ``embed/`` and
   ``filters/`` outputs of those shards (outputs, stats, markers), and the global results that depend on every shard:
   ``index/``, ``dedup/``, ``groups/``, ``audit/``, ``release/``, ``rejects/``, the release markers in ``state/`` and
   ``stats.json`` (and the results of contributed steps after the download, by the same rule). Markers go first,
   so an interrupted retry never leaves a step marked done over stale inputs.
3. Downloads those rows again (with the run's config; ``--set crawl.retries=3`` etc. apply) and rewrites each such
   download shard atomically: the rows that were not retried are copied unchanged, the retried rows take their new
   outcome (``ok`` or a named failure), rows stay sorted by id; its stats count ``download/<status>`` over the whole
   shard plus ``download/retried`` and ``download/retry_recovered``.
4. Runs the normal resume (:func:`curation.pipeline.run_curation`): the removed steps run again from the shards, so
   the release is exactly what a fresh run with the same download outcomes gives (deterministic, verified).

Nothing is retried when no row is retryable: the command is then a plain resume, which does no work on a finished run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mrbench.config import ConfigError, validate_once
from mrbench.curation.config import CurateConfig
from mrbench.fingerprint import marker_text, step_records
from mrbench.layout import RunLayout
from mrbench.curation.download import Downloader, ImageValidator
from mrbench.curation.netguard import RETRYABLE
from mrbench.runlock import with_run_lock
from mrbench.records import STATUS_OK, ImageRecord
from mrbench.shards import read_records, records_to_table, write_parquet_atomic
from mrbench.stage import Step, pipeline_steps
from mrbench.stats import Stats

def retryable_rows(path: Path) -> int:
    """How many rows of a download shard have a retryable status."""
    import pyarrow.parquet as pq

    return sum(1 for s in pq.read_table(path, columns=["status"]).column("status").to_pylist() if s in RETRYABLE)


def invalidate(run_dir: Path, config: CurateConfig, shards: list[int], download: Step) -> None:
    """Remove every result computed from download shards ``shards`` (markers before outputs): of every registered
    step after ``download``, a global step's whole folder; a sharded step's shards ``shards``, or all of its shards
    once a global step (which reads every shard) runs before it; and the folders those steps own besides their own
    (:attr:`~mrbench.stage.Step.owns`: audit, release parts, rejects, the release)."""
    layout = RunLayout(run_dir)
    steps = pipeline_steps()
    later = steps[[s.name for s in steps].index(download.name) + 1:]
    for step in later:
        if not step.sharded:
            layout.step_marker(step).unlink(missing_ok=True)
    after_global = False
    for step in later:
        if not step.sharded:
            after_global = True
            continue
        per_shard = layout.shards(step)
        for i in range(step.run.num_shards(config)) if after_global else shards:
            for path in (per_shard.marker(i), per_shard.stats_path(i), per_shard.output(i)):
                path.unlink(missing_ok=True)
    for path in [p for s in later for p in layout.owned(s)]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    layout.stats.unlink(missing_ok=True)


def retry_shard(config: CurateConfig, path: Path) -> Stats:
    """Download the retryable rows of one download shard again and rewrite it; returns its new stats."""
    records = list(read_records(path))
    again: list[ImageRecord] = []
    for r in records:
        if r.status in RETRYABLE:
            r.metadata["previous_failure"] = r.status
            r.status, r.error_message, r.image = STATUS_OK, "", None
            again.append(r)
    done = {r.id: r for r in ImageValidator(config.crawl.max_image_pixels, config.crawl)(Downloader(config.crawl)(again))}
    merged = sorted((done.get(r.id, r) for r in records), key=lambda r: r.id)
    write_parquet_atomic(records_to_table(merged), path)
    stats = Stats()
    for r in merged:
        stats.inc(f"download/{r.status}")
        if not r.ok:
            stats.error(r.error_message)
    stats.inc("download/retried", len(again))
    stats.inc("download/retry_recovered", sum(1 for r in done.values() if r.ok))
    return stats


@with_run_lock("run_dir")
def retry_failed(config: CurateConfig, run_dir: str | Path, progress: Any = None) -> dict[str, Any]:
    """Retry the retryable download failures of ``run_dir`` and finish the run (see the module docstring).

    Returns:
        The run summary of :func:`curation.pipeline.run_curation`, with ``retried_rows`` and ``retried_shards``.
    """
    from mrbench.curation.pipeline import run_curation

    run_dir = Path(run_dir).resolve()
    layout = RunLayout(run_dir)
    step = RunLayout.step("download")
    download = layout.shards(step)
    if not layout.run_state.exists() or not download.folder.is_dir():
        raise ConfigError(f"{run_dir} is not a curation run folder with downloads (nothing to retry)")
    validate_once(config)
    shards = layout.with_shard_count(config).num_shards  # as chosen at selection with num_shards: 0
    todo = [i for i in range(shards) if download.is_done(i) and retryable_rows(download.output(i))]
    rows = 0
    if todo:
        invalidate(run_dir, layout.with_shard_count(config), todo, step)
        marker = marker_text(step_records(pipeline_steps(), config)[step.name])
        for i in todo:
            rows += retryable_rows(download.output(i))
            stats = retry_shard(config, download.output(i))
            download.complete(i, stats, marker)
    summary = run_curation(config, run_dir, progress)
    summary["retried_rows"], summary["retried_shards"] = rows, todo
    return summary
