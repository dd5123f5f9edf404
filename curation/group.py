"""Group by tag (global step): exact-duplicate removal, group size bounds, target and reference choice.

Visual and identity consistency refine this in later stages; this first version groups every ok image under the
first tag its caption mentions (or its folder). The ``group`` step (:func:`group_and_split`) groups, refines,
splits by group and audits leakage, and writes ``groups/``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.curation.audit import leakage_audit
from mrbench.curation.config import CurateConfig, GroupConfig
from mrbench.curation.dedup import read_duplicates
from mrbench.curation.filters import read_drops
from mrbench.curation.inputs import calibration_identity
from mrbench.curation.refine import GroupRefiner
from mrbench.curation.split import split_groups
from mrbench.curation.tags import normalize
from mrbench.layout import AUDIT, RunLayout
from mrbench.records import SPLITS, Group
from mrbench.shards import ShardSet, write_parquet_atomic
from mrbench.stage import Step
from mrbench.stats import Stats

# groups/assignments.parquet: one row per image that reached grouping (ok, or the reason it was dropped there).
ASSIGN_SCHEMA = pa.schema(
    [("id", pa.string()), ("group", pa.string()), ("split", pa.string()), ("role", pa.string()),
     ("status", pa.string()), ("error_message", pa.string())]
)


# groups/assignments.parquet: one row per image that reached grouping (ok, or the reason it was dropped there).
ASSIGN_SCHEMA = pa.schema(
    [("id", pa.string()), ("group", pa.string()), ("split", pa.string()), ("role", pa.string()),
     ("status", pa.string()), ("error_message", pa.string())]
)


@functools.lru_cache(maxsize=1 << 16)  # called per image; a tag has ~2 images at paper scale, a popular one thousands
def group_slug(tag: str) -> str:
    return re.sub(r"[^\w]+", "_", normalize(tag)).strip("_") or "untagged"


def rank(seed: int, rid: str) -> bytes:
    return hashlib.blake2b(f"group:{seed}:{rid}".encode(), digest_size=8).digest()


Refiner = Callable[[dict[str, list[str]], dict[str, tuple[str, str]], dict[str, tuple[str, str]], Stats], None]


def group_by_tag(
    download: ShardSet, num_shards: int, config: GroupConfig, seed: int,
    exclude: dict[str, tuple[str, str]] | None = None, refine: Refiner | None = None,
) -> tuple[list[Group], dict[str, tuple[str, str]], Stats]:
    """Returns (kept groups sorted by id, drops {id: (reason, message)}, stats).

    ``exclude`` holds ids dropped by earlier steps (filters, dedup) with their reasons; ``refine(members, meta,
    drops, stats)`` may edit the tag groups (members per group id, (tag, category) per group id) before the size
    bounds and target choice (``curation.refine.GroupRefiner``: identities, outliers, visual groups).
    """
    exclude = exclude or {}
    stats = Stats()
    drops: dict[str, tuple[str, str]] = {}
    rows: list[tuple[str, str, str, str]] = []
    for i in range(num_shards):
        cols = ["id", "tags", "category", "status", "sha256"]
        for batch in pq.ParquetFile(download.output(i)).iter_batches(columns=cols):
            for rid, tags, category, status, sha in zip(*(batch.column(c).to_pylist() for c in cols)):
                if status == "ok":
                    rows.append((rid, sha, tags[0] if tags else "untagged", category or ""))
    rows.sort()
    # Exact byte duplicates have the same resolution too: the smallest id is kept.
    first_of_hash: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for rid, sha, tag, category in rows:
        if rid in exclude:
            drops[rid] = exclude[rid]
            continue
        if sha in first_of_hash:
            drops[rid] = ("duplicate_bytes", f"same sha256 as {first_of_hash[sha]}")
            continue
        first_of_hash[sha] = rid
        gid = group_slug(tag)
        members.setdefault(gid, []).append(rid)
        meta.setdefault(gid, (tag, category))
    if refine is not None:
        refine(members, meta, drops, stats)
    groups = []
    for gid in sorted(members):
        ids = sorted(members[gid], key=lambda r: (rank(seed, r), r))
        if len(ids) > config.max_group_size:
            for rid in ids[config.max_group_size:]:
                drops[rid] = ("group_overflow", f"group {gid} keeps {config.max_group_size}")
            ids = ids[: config.max_group_size]
        if len(ids) < config.min_group_size:
            for rid in ids:
                drops[rid] = ("group_too_small", f"group {gid} has {len(ids)} < {config.min_group_size} images")
            stats.inc("group/dropped_groups")
            continue
        tag, category = meta[gid]
        groups.append(Group(gid, tag, category, ids))
        stats.inc("group/groups")
        stats.inc("group/images", len(ids))
    for reason, _ in drops.values():
        stats.inc(f"group/dropped/{reason}")
    return groups, drops, stats


def group_and_split(config: CurateConfig, run_dir: Path) -> Stats:
    """Global step: groups by tag, splits by group, writes ``groups/assignments.parquet`` (one row per ok image)."""
    layout = RunLayout(run_dir)
    download = layout.download
    # The only load of the earlier steps' drop lists with their reasons (the index reads each shard's ids alone).
    earlier = {**read_drops(layout.filters.folder, layout.filters.prefix, config.num_shards), **read_duplicates(run_dir)}
    groups, drops, stats = group_by_tag(download, config.num_shards, config.group, config.seed,
                                        exclude=earlier, refine=GroupRefiner(config, run_dir))
    del earlier
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
    write_parquet_atomic(table, layout.assignments)
    write_assignment_slices(table, download, config.num_shards, layout)
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
    write_parquet_atomic(gt, layout.groups_table)
    for s in SPLITS:  # the groups kept after the audit, as in groups.parquet
        stats.inc(f"split/{s}_groups", sum(1 for g in groups if splits[g.group_id] == s))
    return stats


def write_assignment_slices(table: pa.Table, download: ShardSet, num_shards: int, layout: RunLayout) -> None:
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
        write_parquet_atomic(table.filter(pa.array(shard == i)), layout.assignment_slice(i))


GROUP_DROPS = ("duplicate_bytes", "group_too_small", "group_overflow", "other_identity", "inconsistent",
               "duplicate_in_group", "no_embedding", "unassigned")
AUDIT_DROPS = ("leak_near_duplicate", "leak_identity")
GROUP_STEP = Step("group", group_and_split, after="dedup", reads=("download", "filters", "dedup", "index"),
                  folder="groups", owns=(AUDIT,),
                  parts=(("group_by_tag", "exact-duplicate removal, groups by tag, size bounds, target choice"),
                         ("refine_groups", "identities, outliers, in-group dedup, visual groups"),
                         ("split_by_group", "held-out, held-in, train by group, seeded"),
                         ("leakage_audit", "near-duplicates and identities across splits; removes train leaks")),
                  drops=(("group", GROUP_DROPS), ("audit", AUDIT_DROPS)),
                  settings=("seed", "num_shards", "group", "split", "audit", "embed.encoder", "embed.face_encoder",
                            "embed.face_categories", "calibration"), inputs=calibration_identity)
