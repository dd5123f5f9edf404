"""Group by tag (global step): exact-duplicate removal, group size bounds, target and reference choice.

Visual and identity consistency refine this in later stages; this first version groups every ok image under the
first tag its caption mentions (or its folder).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable

import pyarrow.parquet as pq

from mrbench.config import GroupConfig
from mrbench.curation.tags import normalize
from mrbench.shards import ShardSet
from mrbench.stats import Stats


@dataclass
class Group:
    """A set of images sharing a subject, style or identity; ``members`` ordered by seeded rank."""

    group_id: str
    tag: str
    category: str
    members: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.members[0]

    @property
    def references(self) -> list[str]:
        return self.members[1:]


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
