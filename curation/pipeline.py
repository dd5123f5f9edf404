"""The curation run: shard tasks and global steps linked by files in one run folder.

    RUN_DIR/config.yaml, provenance.json, run_state.json
    ingest/    candidates per source file        (sharded, one per source file)
    urls/      selected URLs in num_shards shards (global: cap per tag, ids)
    download/  one row per URL: ok + bytes, or a named failure (sharded: fetch under the egress policy + validation)
    embed/     per shard: image embedding, faces, detections of every ok image (sharded; only with embed models)
    filters/   per shard: ids dropped by the resolution / face / object filters, with reasons (sharded)
    index/     vectors of the images still in play, memory-mapped (global; only with embed models)
    dedup/     near-duplicates to drop: id, duplicate_of, similarity (global)
    groups/    groups.parquet, assignments.parquet (global: group by tag, refine, split by group, leakage audit)
    audit/     leakage.json, leaks.parquet: near-duplicates and identities across splits (global)
    release_parts/  per download shard and split: the release rows (sharded)
    release/   the release: the parts linked as data/ without gaps, manifest, card, EasyRef JSON (global)
    rejects/   every non-ok row with its reason
    report.html  what the run did, as pictures (``mrbench report``; curation.report)

Each step skips work already complete, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from mrbench.config import ConfigError, CurateConfig, to_dict
from mrbench.curation.audit import leakage_audit, read_report
from mrbench.curation.crawl import IngestTask, select_and_shard
from mrbench.curation.dedup import dedup_step, read_duplicates
from mrbench.curation.download import Downloader, ImageValidator
from mrbench.curation.embed import EmbedTask, preflight
from mrbench.curation.filters import FilterTask, read_drops
from mrbench.curation.group import group_by_tag
from mrbench.curation.index import build_index
from mrbench.curation.refine import GroupRefiner
from mrbench.curation.report import write_report
from mrbench.curation.release import (
    ASSIGN_SCHEMA, ReleaseTask, easyref_faces, verify_release, write_card, write_easyref_json, write_manifest,
)
from mrbench.curation.release import publish_release_data
from mrbench.curation.inputs import check_sources
from mrbench.curation.sources import expand_sources
from mrbench.curation.split import split_groups
from mrbench.executors import get_executor
from mrbench.log import get_logger
from mrbench.provenance import provenance
from mrbench.runlock import with_run_lock
from mrbench.shards import ShardSet, atomic_write_text, global_step, read_records, records_to_table, write_parquet_atomic
from mrbench.stats import Stats

log = get_logger(__name__)


@dataclass
class DownloadTask:
    """Per URL shard: download (under the egress policy), validate, write one row per URL."""

    config: CurateConfig
    run_dir: str
    name: str = "download"

    @property
    def shards(self) -> ShardSet:
        return ShardSet(Path(self.run_dir) / "download", "shard")

    def is_done(self, shard: int) -> bool:
        return self.shards.is_done(shard)

    def __call__(self, shard: int) -> None:
        urls = ShardSet(Path(self.run_dir) / "urls", "urls").output(shard)
        downloader = Downloader(self.config.crawl)
        validator = ImageValidator(self.config.crawl.max_image_pixels, self.config.crawl)
        records = list(validator(downloader(read_records(urls))))
        records.sort(key=lambda r: r.id)
        write_parquet_atomic(records_to_table(records), self.shards.output(shard))
        stats = Stats().merge(downloader.stats).merge(validator.stats)
        self.shards.complete(shard, stats)


def check_run_state(run_dir: Path, config: CurateConfig) -> None:
    """Refuse to resume a run folder with a different shard count (its shards would not line up)."""
    state_path = run_dir / "run_state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state["num_shards"] != config.num_shards:
            raise ConfigError(
                f"{run_dir} was started with num_shards={state['num_shards']}, not {config.num_shards}; "
                "use a new --out folder or the original shard count"
            )
        if state.get("seed") != config.seed:
            raise ConfigError(f"{run_dir} was started with seed={state.get('seed')}, not {config.seed}")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(state_path, json.dumps({"num_shards": config.num_shards, "seed": config.seed}))


@global_step("groups")
def group_and_split(config: CurateConfig, run_dir: Path) -> Stats:
    """Global step: groups by tag, splits by group, writes ``groups/assignments.parquet`` (one row per ok image)."""
    folder = run_dir / "groups"
    download = ShardSet(run_dir / "download", "shard")
    earlier = {**read_drops(run_dir / "filters", "drops", config.num_shards), **read_duplicates(run_dir)}
    groups, drops, stats = group_by_tag(download, config.num_shards, config.group, config.seed,
                                        exclude=earlier, refine=GroupRefiner(config, run_dir))
    splits = split_groups([g.group_id for g in groups], config.split, config.seed)
    audit = leakage_audit(groups, splits, config, run_dir)
    groups = audit.groups
    drops.update(audit.drops)
    stats.merge(audit.stats)
    rows: dict[str, list[Any]] = {n: [] for n in ASSIGN_SCHEMA.names}
    for g in groups:
        for rid in g.members:
            role = "target" if rid == g.target else "reference"
            for k, v in zip(ASSIGN_SCHEMA.names, (rid, g.group_id, splits[g.group_id], role, "ok", "")):
                rows[k].append(v)
    for rid in sorted(drops):
        reason, msg = drops[rid]
        for k, v in zip(ASSIGN_SCHEMA.names, (rid, "", "", "", reason, msg)):
            rows[k].append(v)
    table = pa.table(rows, schema=ASSIGN_SCHEMA).sort_by("id")
    write_parquet_atomic(table, folder / "assignments.parquet")
    write_assignment_slices(table, download, config.num_shards, folder)
    gt = pa.table(
        {
            "group": [g.group_id for g in groups],
            "tag": [g.tag for g in groups],
            "category": [g.category for g in groups],
            "split": [splits[g.group_id] for g in groups],
            "target": [g.target for g in groups],
            "references": [g.references for g in groups],
        }
    )
    write_parquet_atomic(gt, folder / "groups.parquet")
    for s in ("held_out", "held_in", "train"):  # the groups kept after the audit, as in groups.parquet
        stats.inc(f"split/{s}_groups", sum(1 for g in groups if splits[g.group_id] == s))
    return stats


def write_assignment_slices(table: pa.Table, download: ShardSet, num_shards: int, folder: Path) -> None:
    """``groups/by_shard/assign_{i:05d}.parquet``: the rows of ``assignments.parquet`` whose ids are in download
    shard ``i``, so each release shard reads its own slice (not the whole file: cost images x shards)."""
    import numpy as np
    import pyarrow.compute as pc

    parts = [pq.read_table(download.output(i), columns=["id"]).column("id") for i in range(num_shards)]
    shard_of = np.repeat(np.arange(num_shards), [len(p) for p in parts])
    where = pc.index_in(table.column("id"), value_set=pa.chunked_array([c for p in parts for c in p.chunks], pa.string()))
    # every assigned id comes from a download shard; -1 would only mark an id that does not
    found = where.fill_null(-1).to_numpy()
    shard = np.where(found >= 0, shard_of[np.maximum(found, 0)], -1)
    for i in range(num_shards):
        write_parquet_atomic(table.filter(pa.array(shard == i)), folder / "by_shard" / f"assign_{i:05d}.parquet")


def finalize_release(config: CurateConfig, run_dir: Path) -> dict[str, Any]:
    release = run_dir / "release"
    if (run_dir / "state" / "release_final.done").exists():
        return json.loads((release / "manifest.json").read_text())
    publish_release_data(run_dir, release)  # the release step's part files, named without gaps per split
    if config.release.easyref_json:
        write_easyref_json(release, easyref_faces(run_dir))
    write_card(release, config, run_dir)
    manifest = write_manifest(release, config)
    problems = verify_release(release)
    if problems:
        raise RuntimeError(f"release failed its own verification: {problems[:5]}")
    atomic_write_text(run_dir / "state" / "release_final.done", "")
    return manifest


ProgressFactory = Callable[[str, int], Callable[[int], None]]


@with_run_lock("run_dir")
def run_curation(config: CurateConfig, run_dir: str | Path, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Run (or resume) every step; returns a summary (rows per status, groups, splits, release path).

    The run folder is locked for the whole call (:mod:`mrbench.runlock`): a second process on it fails with
    :class:`~mrbench.runlock.RunLockedError` naming the holder.
    """
    config.validate()
    check_sources(config)  # unreadable source files (encoding, corrupt parquet, missing column) fail before work
    run_dir = Path(run_dir).resolve()
    check_run_state(run_dir, config)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    executor = get_executor(config.executor)
    # Missing weights or model dependencies fail here, before any work.
    try:
        models = preflight(config.embed)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # e.g. an option the model does not take
        raise ConfigError(f"embed: a model rejected its options ({e})") from None
    if models:
        atomic_write_text(run_dir / "models.json", json.dumps(models, indent=1, sort_keys=True))
    atomic_write_text(run_dir / "provenance.json", json.dumps(provenance(), indent=1))  # after preflight: torch known

    def step(task: Any, n: int, unit: str = "", items: Any = None) -> None:
        """Run a sharded step; the bar counts ``unit`` (items per shard from ``items(shard)``), resumed shards
        included, so rate and ETA are in URLs / images rather than shards."""
        if not progress:
            executor.run(task, n)
            return
        weights = [int(items(i)) for i in range(n)] if items else None
        advance = progress(f"{task.name} {unit}".strip(), sum(weights) if weights else n)
        advance(sum(w for i, w in enumerate(weights or [1] * n) if task.is_done(i)))
        executor.run(task, n, advance, weights)

    def rows(folder: str, prefix: str) -> Any:  # rows of a finished step's shard, from its parquet footer
        return lambda i: pq.ParquetFile(ShardSet(run_dir / folder, prefix).output(i)).metadata.num_rows

    num_ingest = len(expand_sources(config.sources))
    step(IngestTask(config, str(run_dir)), num_ingest, "files")
    select_and_shard(config, run_dir, num_ingest)
    step(DownloadTask(config, str(run_dir)), config.num_shards, "URLs", rows("urls", "urls"))
    if models:
        step(EmbedTask(config, str(run_dir)), config.num_shards, "rows", rows("download", "shard"))
        executor.close()  # its workers hold the models: free that memory before the global steps
    step(FilterTask(config, str(run_dir)), config.num_shards, "rows", rows("download", "shard"))
    if models:
        build_index(config, run_dir)
    if config.embed.encoder and config.dedup.enabled:
        dedup_step(config, run_dir)
    group_and_split(config, run_dir)
    step(ReleaseTask(config, str(run_dir)), config.num_shards, "rows", rows("download", "shard"))
    executor.close()  # its worker pool served every sharded step above (a failing step closes it itself)
    manifest = finalize_release(config, run_dir)
    merged = write_merged_stats(run_dir, config, num_ingest)
    return {**summarize(run_dir, merged, manifest), "report": str(write_report(run_dir))}


def write_merged_stats(run_dir: Path, config: CurateConfig, num_ingest: int) -> dict[str, Stats]:
    """``RUN_DIR/stats.json``: every step's counters merged over its shards (steps that did not run are left out).

    Returns:
        The merged stats per step.
    """

    def sharded(shards: ShardSet, count: int) -> Stats | None:
        return shards.merged_stats(count) if shards.folder.is_dir() else None

    def single(folder: str) -> Stats | None:
        path = run_dir / folder / "stats.json"
        return Stats.load(path) if path.exists() else None

    run, n = str(run_dir), config.num_shards
    steps = {
        "ingest": sharded(IngestTask(config, run).shards, num_ingest),
        "select": single("urls"),
        "download": sharded(DownloadTask(config, run).shards, n),
        "embed": sharded(EmbedTask(config, run).shards, n),
        "filters": sharded(FilterTask(config, run).shards, n),
        "index": single("index"),
        "dedup": single("dedup"),
        "group": single("groups"),
        "release": sharded(ReleaseTask(config, run).state, n),
    }
    merged = {k: v for k, v in steps.items() if v is not None}
    atomic_write_text(run_dir / "stats.json", json.dumps({k: v.to_dict() for k, v in merged.items()}, indent=1))
    return merged


_DROP_STEPS = {
    "near_duplicate": "dedup", "embed_decode_error": "embed",
    **{r: "filters" for r in ("low_resolution", "extreme_aspect", "no_face", "face_too_small", "face_low_score",
                              "multiple_faces", "object_missing")},
    **{r: "group" for r in ("duplicate_bytes", "group_too_small", "group_overflow", "other_identity", "inconsistent",
                            "duplicate_in_group", "no_embedding", "unassigned")},
    **{r: "audit" for r in ("leak_near_duplicate", "leak_identity")},
}


def drop_step(reason: str) -> str:
    """The step whose rule a drop reason comes from (download for crawl and decode failures)."""
    return _DROP_STEPS.get(reason, "download")


def summarize(run_dir: Path, merged: dict[str, Stats], manifest: dict[str, Any]) -> dict[str, Any]:
    """The run's summary from its merged stats (:func:`write_merged_stats`), groups and manifest."""
    status, download = merged["release"], merged["download"]
    groups = pq.read_table(run_dir / "groups" / "groups.parquet", columns=["split"]).column("split").to_pylist()
    return {
        "rows_per_status": {k.split("/", 1)[1]: v for k, v in sorted(status.counts.items()) if k.startswith("status/")},
        "groups_per_split": {s: groups.count(s) for s in ("held_out", "held_in", "train")},
        "images_per_split": {k.split("/", 1)[1]: v for k, v in status.counts.items() if k.startswith("release/")},
        "download_errors": dict(download.errors.counts.most_common(10)),
        "release": str(run_dir / "release"),
        "release_rows": manifest["rows"],
        # every input row that did not make the release, by the reason of the step that dropped it
        "drops_per_reason": {k.split("/", 1)[1]: v for k, v in sorted(status.counts.items(), key=lambda kv: (-kv[1], kv[0]))
                             if k.startswith("status/") and k != "status/ok"},
        "leakage_audit": read_report(run_dir),
    }
