"""Leakage audit (global, after the split): near-duplicates and same-identity faces across train / held-in /
held-out.

Two images leak when they are in groups of different splits and

* ``near_duplicate``: their image embeddings have cosine >= ``audit.near_dup_threshold`` (else the image encoder's
  near-duplicate threshold), or
* ``identity``: their face embeddings have cosine >= the identity threshold (``audit.identity_threshold``, else
  ``group.identity_threshold``, else the face encoder's, ``mrbench.thresholds``): the same person on both sides.

Writes ``audit/leaks.parquet`` (one row per leaking pair, with the action taken) and ``audit/leakage.json``
(counts per kind and split pair, and the number of training images removed). With ``audit.remove_train_leaks``
(the default) the training image of every pair that has one is dropped (``leak_near_duplicate`` /
``leak_identity``); pairs between held-in and held-out are reported only, since removing test images would change
the test sets. Groups that fall below ``group.min_group_size`` are dropped (``group_too_small``).

The search is exact and only across splits (train x test, held-in x held-out), with the training vectors streamed
from the index file: cost grows with train x test images, memory with one block (see ``_cross_split_pairs``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mrbench.curation.config import CurateConfig
from mrbench.curation.dedup import _SEARCH_MARGIN
from mrbench.curation.index import FeatureIndex
from mrbench.layout import RunLayout
from mrbench.records import Group
from mrbench.shards import atomic_write_text, write_parquet_atomic
from mrbench.stats import Stats
from mrbench.thresholds import for_setting

LEAK_SCHEMA = pa.schema(
    [("kind", pa.string()), ("id_a", pa.string()), ("group_a", pa.string()), ("split_a", pa.string()),
     ("id_b", pa.string()), ("group_b", pa.string()), ("split_b", pa.string()), ("similarity", pa.float32()),
     ("action", pa.string())]
)
SPLIT_ORDER = {"train": 0, "held_in": 1, "held_out": 2}


@dataclass
class AuditResult:
    """Groups after removing leaking training images, the drops made, and the report written."""

    groups: list[Group]
    drops: dict[str, tuple[str, str]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)


def _cross_split_pairs(
    index: FeatureIndex, which: str, rows: np.ndarray, side: np.ndarray, threshold: float
) -> list[tuple[int, int, float]]:
    """Pairs of images in different splits whose vectors have cosine >= ``threshold``, exactly.

    Only pairs across splits can leak, so the search is train x test and held-in x held-out: the test images'
    vectors (a few hundred groups) are held in memory; the training images' vectors are streamed from the index
    file in blocks (memory stays one block). Candidates are searched ``_SEARCH_MARGIN`` below the threshold in
    float32 and decided on a float64 recomputation, like every other near-duplicate search here.

    Args:
        index: The run's index.
        which: ``vectors`` (image embeddings) or ``faces``.
        rows: Matrix row of each image (all >= 0), images in id order.
        side: Split code of each image (``SPLIT_ORDER``).
        threshold: Cosine threshold.

    Returns:
        (image a, image b, similarity) with a < b (positions in ``rows``), unsorted.
    """
    out: list[tuple[int, int, float]] = []
    test = np.flatnonzero(side != SPLIT_ORDER["train"])
    if test.size == 0:
        return out
    matrix = getattr(index, which)
    test_vec = np.ascontiguousarray(np.asarray(matrix[rows[test]], np.float32))
    cut = np.float32(float(threshold) - _SEARCH_MARGIN)

    def decide(a: np.ndarray, b: np.ndarray, va: np.ndarray, vb: np.ndarray) -> None:
        sim = np.einsum("ij,ij->i", va.astype(np.float64), vb.astype(np.float64))
        ok = sim >= threshold
        for x, y, v in zip(a[ok].tolist(), b[ok].tolist(), sim[ok].astype(np.float32).tolist()):
            out.append((min(x, y), max(x, y), v))

    # Held-in x held-out (and any other pair of different test splits).
    gram = test_vec @ test_vec.T
    i, j = np.nonzero(np.triu(gram >= cut, 1))
    diff = side[test[i]] != side[test[j]]
    i, j = i[diff], j[diff]
    if i.size:
        decide(test[i], test[j], test_vec[i], test_vec[j])
    del gram
    # Train x test: training vectors streamed in the index file's row order.
    train = np.flatnonzero(side == SPLIT_ORDER["train"])
    order = np.argsort(rows[train], kind="stable")
    train, train_rows = train[order], rows[train][order]
    for at, vec in index.stream_rows(which, train_rows):
        a, b = np.nonzero(vec @ test_vec.T >= cut)
        if a.size:
            decide(train[at[a]], test[b], vec[a], test_vec[b])
    return out


def leakage_audit(groups: list[Group], splits: dict[str, str], config: CurateConfig, run_dir: Path) -> AuditResult:
    """Audit ``groups`` (split by ``splits``), write the report, and drop leaking training images (see the module
    docstring). Without an index (no embed step) or with ``audit.enabled`` off, returns the groups unchanged."""
    result = AuditResult(groups)
    layout = RunLayout(run_dir)
    if not config.audit.enabled or not layout.step_done("index"):
        return result
    index = FeatureIndex.load(run_dir)
    pos = index.position()
    owner: dict[str, Group] = {rid: g for g in groups for rid in g.members}
    images = sorted(rid for rid in owner if rid in pos)
    at = np.array([pos[r] for r in images], np.int64)
    side = np.array([SPLIT_ORDER[splits[owner[r].group_id]] for r in images], np.int8)
    del pos
    leaks: list[tuple[str, str, str, float]] = []
    near_dup = threshold = None
    if config.embed.encoder:
        who = np.flatnonzero(index.row[at] >= 0)
        near_dup = for_setting(config, "audit.near_dup_threshold").threshold  # type: ignore[union-attr]
        for a, b, s in _cross_split_pairs(index, "vectors", index.row[at[who]], side[who], near_dup):
            leaks.append(("near_duplicate", images[who[a]], images[who[b]], s))
    if config.embed.face_encoder:
        threshold = for_setting(config, "audit.identity_threshold").threshold  # type: ignore[union-attr]
        who = np.flatnonzero(index.face_row[at] >= 0)
        for a, b, s in _cross_split_pairs(index, "faces", index.face_row[at[who]], side[who], threshold):
            leaks.append(("identity", images[who[a]], images[who[b]], s))
    rows: dict[str, list[Any]] = {n: [] for n in LEAK_SCHEMA.names}
    counts: Counter[str] = Counter()
    removed: dict[str, tuple[str, str]] = {}
    for kind, a, b, s in sorted(leaks, key=lambda x: (x[0], x[1], x[2])):
        ga, gb = owner[a], owner[b]
        sa, sb = splits[ga.group_id], splits[gb.group_id]
        if sa == sb:
            continue
        if SPLIT_ORDER[sa] > SPLIT_ORDER[sb]:  # report each pair as (earlier split, later split)
            a, b, ga, gb, sa, sb = b, a, gb, ga, sb, sa
        action = "reported"
        if sa == "train" and config.audit.remove_train_leaks:
            action = f"removed {a}"
            removed.setdefault(a, (f"leak_{kind}", f"{kind} cosine {s:.4f} to {b} ({sb} group {gb.group_id})"))
        for k, v in zip(LEAK_SCHEMA.names, (kind, a, ga.group_id, sa, b, gb.group_id, sb, s, action)):
            rows[k].append(v)
        counts[f"{kind}/{sa}-{sb}"] += 1
    write_parquet_atomic(pa.table(rows, schema=LEAK_SCHEMA), layout.leaks)
    result.groups, result.drops = _remove(groups, removed, config.group.min_group_size)
    report = {
        "pairs": dict(sorted(counts.items())),
        "pairs_total": int(sum(counts.values())),
        "removed_train_images": len(removed),
        "removed_train_images_by_kind": dict(sorted(Counter(r[len("leak_"):] for r, _ in removed.values()).items())),
        "dropped_groups": sum(1 for r, _ in result.drops.values() if r == "group_too_small"),
        "near_dup_threshold": near_dup if config.embed.encoder else None,
        "identity_threshold": (threshold if config.embed.face_encoder else None),
    }
    atomic_write_text(layout.leakage_report, json.dumps(report, indent=1, sort_keys=True))
    result.report = report
    for reason, _ in result.drops.values():
        result.stats.inc(f"audit/dropped/{reason}")
    for key, n in counts.items():
        result.stats.inc(f"audit/pairs/{key}", n)
    return result


def _remove(groups: list[Group], removed: dict[str, tuple[str, str]], min_size: int) -> tuple[list[Group], dict[str, tuple[str, str]]]:
    drops = dict(removed)
    out = []
    for g in groups:
        members = [r for r in g.members if r not in removed]
        if len(members) == len(g.members):
            out.append(g)
            continue
        if len(members) < min_size:
            for rid in members:
                drops[rid] = ("group_too_small", f"group {g.group_id} has {len(members)} < {min_size} images after the leakage audit")
            continue
        out.append(Group(g.group_id, g.tag, g.category, members))  # members keep their rank order: members[0] is the target
    return out, drops


def shown_leak_pairs(run_dir: Path, per_kind: int = 8) -> list[dict[str, Any]]:
    """The leaking pairs a reader should look at, per kind: all of them up to ``per_kind``, else the most similar
    half and the half nearest the threshold (where a false leak, two different images or people, would sit)."""
    import pyarrow.parquet as pq

    path = RunLayout(run_dir).leaks
    if not path.is_file():
        return []
    rows = sorted(pq.read_table(path).to_pylist(), key=lambda r: (r["kind"], -r["similarity"], r["id_a"], r["id_b"]))
    out: list[dict[str, Any]] = []
    for kind in sorted({r["kind"] for r in rows}):
        mine = [r for r in rows if r["kind"] == kind]
        if len(mine) > per_kind:
            mine = mine[:per_kind - per_kind // 2] + mine[len(mine) - per_kind // 2:]
        out += mine
    return out


def read_report(run_dir: Path) -> dict[str, Any] | None:
    """The ``audit/leakage.json`` report of a run, or None when the audit did not run."""
    path = RunLayout(run_dir).leakage_report
    return json.loads(path.read_text()) if path.exists() else None
