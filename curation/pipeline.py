"""The curation run: shard tasks and global steps linked by files in one run folder.

    RUN_DIR/config.yaml, provenance.json, run_state.json
    ingest/    candidates per source file        (sharded, one per source file)
    urls/      selected URLs in num_shards shards (global: cap per tag, ids)
    download/  one row per URL: ok + bytes, or a named failure (sharded: img2dataset + validation)
    groups/    groups.parquet, assignments.parquet (global: group by tag, split by group)
    release/   the release (sharded write, then global manifest/card/EasyRef JSON)
    rejects/   every non-ok row with its reason

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
from mrbench.curation.crawl import IngestTask, select_and_shard
from mrbench.curation.download import Img2DatasetDownloader, ImageValidator
from mrbench.curation.group import group_by_tag
from mrbench.curation.release import (
    ASSIGN_SCHEMA, ReleaseTask, verify_release, write_card, write_easyref_json, write_manifest,
)
from mrbench.curation.sources import expand_sources
from mrbench.curation.split import split_groups
from mrbench.executors import get_executor
from mrbench.log import get_logger
from mrbench.provenance import provenance
from mrbench.shards import ShardSet, atomic_write_text, read_records, records_to_table, write_parquet_atomic
from mrbench.stats import Stats

log = get_logger(__name__)


@dataclass
class DownloadTask:
    """Per URL shard: download (img2dataset behind the egress guard), validate, write one row per URL."""

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
        log = Path(self.run_dir) / "logs" / f"download_{shard:05d}.log"
        downloader = Img2DatasetDownloader(self.config.crawl, str(log))
        validator = ImageValidator(self.config.crawl.max_image_pixels)
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


def group_and_split(config: CurateConfig, run_dir: Path) -> Stats:
    """Global step: groups by tag, splits by group, writes ``groups/assignments.parquet`` (one row per ok image)."""
    folder = run_dir / "groups"
    if (folder / "_SUCCESS").exists():
        return Stats.load(folder / "stats.json")
    download = ShardSet(run_dir / "download", "shard")
    groups, drops, stats = group_by_tag(download, config.num_shards, config.group, config.seed)
    splits = split_groups([g.group_id for g in groups], config.split, config.seed)
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
    for s in ("held_out", "held_in", "train"):
        stats.inc(f"split/{s}_groups", sum(1 for v in splits.values() if v == s))
    stats.save(folder / "stats.json")
    atomic_write_text(folder / "_SUCCESS", "")
    return stats


def finalize_release(config: CurateConfig, run_dir: Path) -> dict[str, Any]:
    release = run_dir / "release"
    if (run_dir / "state" / "release_final.done").exists():
        return json.loads((release / "manifest.json").read_text())
    if config.release.easyref_json:
        write_easyref_json(release)
    write_card(release, config)
    manifest = write_manifest(release, config)
    problems = verify_release(release)
    if problems:
        raise RuntimeError(f"release failed its own verification: {problems[:5]}")
    atomic_write_text(run_dir / "state" / "release_final.done", "")
    return manifest


ProgressFactory = Callable[[str, int], Callable[[int], None]]


def run_curation(config: CurateConfig, run_dir: str | Path, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Run (or resume) every step; returns a summary (rows per status, groups, splits, release path)."""
    config.validate()
    run_dir = Path(run_dir).resolve()
    check_run_state(run_dir, config)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    atomic_write_text(run_dir / "provenance.json", json.dumps(provenance(), indent=1))
    executor = get_executor(config.executor)

    def step(task: Any, n: int) -> None:
        cb = progress(task.name, n) if progress else None
        executor.run(task, n, cb)

    num_ingest = len(expand_sources(config.sources))
    step(IngestTask(config, str(run_dir)), num_ingest)
    select_and_shard(config, run_dir, num_ingest)
    step(DownloadTask(config, str(run_dir)), config.num_shards)
    group_and_split(config, run_dir)
    step(ReleaseTask(config, str(run_dir)), config.num_shards)
    manifest = finalize_release(config, run_dir)
    write_merged_stats(run_dir, config, num_ingest)
    return summarize(run_dir, config, manifest)


def write_merged_stats(run_dir: Path, config: CurateConfig, num_ingest: int) -> None:
    """``RUN_DIR/stats.json``: every step's counters merged over its shards."""
    merged = {
        "ingest": ShardSet(run_dir / "ingest", "candidates").merged_stats(num_ingest),
        "select": Stats.load(run_dir / "urls" / "stats.json"),
        "download": ShardSet(run_dir / "download", "shard").merged_stats(config.num_shards),
        "group": Stats.load(run_dir / "groups" / "stats.json"),
        "release": ShardSet(run_dir / "state", "release", suffix=".unused").merged_stats(config.num_shards),
    }
    atomic_write_text(run_dir / "stats.json", json.dumps({k: v.to_dict() for k, v in merged.items()}, indent=1))


def summarize(run_dir: Path, config: CurateConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    status = ShardSet(run_dir / "state", "release", suffix=".unused").merged_stats(config.num_shards)
    download = ShardSet(run_dir / "download", "shard").merged_stats(config.num_shards)
    groups = pq.read_table(run_dir / "groups" / "groups.parquet", columns=["split"]).column("split").to_pylist()
    return {
        "rows_per_status": {k.split("/", 1)[1]: v for k, v in sorted(status.counts.items()) if k.startswith("status/")},
        "groups_per_split": {s: groups.count(s) for s in ("held_out", "held_in", "train")},
        "images_per_split": {k.split("/", 1)[1]: v for k, v in status.counts.items() if k.startswith("release/")},
        "download_errors": dict(download.errors.counts.most_common(10)),
        "release": str(run_dir / "release"),
        "release_rows": manifest["rows"],
    }
