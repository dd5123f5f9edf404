"""Group refinement: make each tag group hold one subject, style or identity, without near-duplicates inside.

Runs inside the grouping step (``group_by_tag(..., refine=GroupRefiner(...))``) on the tag groups, before the size
bounds and the target choice, using the index's embeddings (``curation.index``). Per group, in this order:

1. **Untagged images** (group ``untagged``) are grouped purely visually (``curation.cluster``: Ward with
   ``group.visual_groups`` clusters, or average linkage at ``group.visual_threshold``, or the number of groups with
   the best silhouette) into groups ``visual_0000``, ``visual_0001``...; images without an embedding are dropped
   (``no_embedding``).
2. **Person groups** (categories in ``embed.face_categories``): the face embeddings are clustered into identities
   (average linkage at ``group.identity_threshold``, default per face encoder); the largest identity stays, every
   other face is dropped (``other_identity``). Images without a face embedding are left to the face filter.
3. **Other groups** of ``group.consistency_categories`` (subjects, styles): images whose similarity to the mean of
   the rest of the group is below ``group.consistency_min`` (or the optional MAD rule) are dropped
   (``inconsistent``).
4. **Within-group dedup** at ``group.dedup_threshold`` (stricter than the global one): near-identical shots of one
   subject make a trivial reference/target pair (``duplicate_in_group``; the kept image follows the dedup rule:
   resolution, then id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrbench.curation.config import CurateConfig
from mrbench.curation.cluster import (
    cluster_embeddings, consistency_scores, dominant_cluster, score_outliers,
)
from mrbench.curation.dedup import dedup
from mrbench.curation.index import FeatureIndex
from mrbench.layout import RunLayout
from mrbench.stats import Stats
from mrbench.thresholds import for_setting

VISUAL_PREFIX = "visual_"
# In-group dedup searches groups up to this size exactly; larger ones (a popular tag: tens of thousands of images)
# use the partitioned search, so the cost stays sub-quadratic in the group size.
IN_GROUP_EXACT_MAX = 4096


def identity_threshold(config: CurateConfig) -> float:
    """Face cosine at or above which two faces are one person: ``group.identity_threshold``, else the run's
    calibration file, else the face encoder's measured operating point (:func:`mrbench.thresholds.for_setting`)."""
    return for_setting(config, "group.identity_threshold").threshold  # type: ignore[union-attr]


@dataclass
class GroupRefiner:
    """The ``refine`` hook of :func:`mrbench.curation.group.group_by_tag` (see the module docstring)."""

    config: CurateConfig
    run_dir: Path

    def __call__(
        self, members: dict[str, list[str]], meta: dict[str, tuple[str, str]],
        drops: dict[str, tuple[str, str]], stats: Stats,
    ) -> None:
        if not RunLayout(self.run_dir).step_done("index"):
            return
        index = FeatureIndex.load(self.run_dir)
        pos = index.position()
        cfg = self.config
        if "untagged" in members and cfg.embed.encoder:
            self._visual_groups(members, meta, drops, stats, index, pos)
        for n_done, gid in enumerate(sorted(members)):
            if n_done % 50_000 == 49_999:
                index.release_pages()  # keep resident memory bounded over a million groups
            tag, category = meta[gid]
            ids = [r for r in members[gid] if r in pos]  # ids missing from the index keep their place untouched
            at = np.array([pos[r] for r in ids], np.int64)
            if category in cfg.embed.face_categories and cfg.embed.face_encoder:
                removed = self._identity(ids, at, index)
                reason = "other_identity"
            elif (cfg.embed.encoder and cfg.group.consistency_min > 0 and category in cfg.group.consistency_categories
                  and not gid.startswith(VISUAL_PREFIX)):
                removed = self._inconsistent(ids, at, index)
                reason = "inconsistent"
            else:
                removed, reason = {}, ""
            ids, at = self._drop(members, gid, ids, at, removed, reason, drops, stats)
            if cfg.embed.encoder and cfg.group.dedup_threshold is not None:
                removed = self._duplicates(ids, at, index)
                self._drop(members, gid, ids, at, removed, "duplicate_in_group", drops, stats)

    @staticmethod
    def _drop(members: dict[str, list[str]], gid: str, ids: list[str], at: np.ndarray, removed: dict[str, str],
              reason: str, drops: dict[str, tuple[str, str]], stats: Stats) -> tuple[list[str], np.ndarray]:
        if not removed:
            return ids, at
        for rid, message in removed.items():
            drops[rid] = (reason, message)
            stats.inc(f"refine/{reason}")
        members[gid] = [r for r in members[gid] if r not in removed]
        keep = [k for k, r in enumerate(ids) if r not in removed]
        return [ids[k] for k in keep], at[keep]

    def _identity(self, ids: list[str], at: np.ndarray, index: FeatureIndex) -> dict[str, str]:
        with_face = [k for k in range(len(ids)) if index.face_row[at[k]] >= 0]
        if len(with_face) < 2:
            return {}
        faces = index.face_vectors(at[with_face])
        labels = cluster_embeddings(faces, threshold=identity_threshold(self.config), seed=self.config.seed).labels
        main = dominant_cluster(labels)
        size = int((labels == main).sum())
        return {ids[k]: f"face identity {lab} differs from the group's dominant identity ({size} of {len(labels)} faces)"
                for k, lab in zip(with_face, labels) if lab != main}

    def _inconsistent(self, ids: list[str], at: np.ndarray, index: FeatureIndex) -> dict[str, str]:
        has = [k for k in range(len(ids)) if index.row[at[k]] >= 0]
        if len(has) < 3:  # with two images there is no "rest of the group" to disagree with
            return {}
        cfg = self.config.group
        scores = consistency_scores(index.image_vectors(at[has]))
        mask = score_outliers(scores, cfg.consistency_min, cfg.consistency_mad)
        return {ids[has[k]]: f"similarity {scores[k]:.3f} to the rest of the group (min {cfg.consistency_min})"
                for k in np.flatnonzero(mask)}

    def _duplicates(self, ids: list[str], at: np.ndarray, index: FeatureIndex) -> dict[str, str]:
        has = [k for k in range(len(ids)) if index.row[at[k]] >= 0]
        if len(has) < 2:
            return {}
        sub = [ids[k] for k in has]
        res = dedup(index.image_vectors(at[has]), sub, index.resolution[at[has]], float(self.config.group.dedup_threshold),
                    exact_max=IN_GROUP_EXACT_MAX, seed=self.config.seed)
        return {sub[k]: f"cosine {res.similarity[k]:.4f} to {sub[res.duplicate_of[k]]} in the same group"
                for k in np.flatnonzero(~res.keep)}

    def _visual_groups(self, members: dict[str, list[str]], meta: dict[str, tuple[str, str]],
                       drops: dict[str, tuple[str, str]], stats: Stats, index: FeatureIndex, pos: dict[str, int]) -> None:
        ids = sorted(members.pop("untagged"))
        meta.pop("untagged", None)
        with_vec = []
        for rid in ids:
            if rid in pos and index.row[pos[rid]] >= 0:
                with_vec.append(rid)
            else:
                drops[rid] = ("no_embedding", "untagged image without an embedding cannot be grouped visually")
        if not with_vec:
            return
        cfg = self.config.group
        emb = index.image_vectors(np.array([pos[r] for r in with_vec], np.int64))
        if cfg.visual_groups:
            result = cluster_embeddings(emb, num_clusters=cfg.visual_groups, seed=self.config.seed)
        else:
            result = cluster_embeddings(emb, threshold=cfg.visual_threshold, seed=self.config.seed)
        for rid, label in zip(with_vec, result.labels.tolist()):
            gid = f"{VISUAL_PREFIX}{label:04d}"
            members.setdefault(gid, []).append(rid)
            meta.setdefault(gid, ("untagged", "subject"))
        stats.inc("refine/visual_groups", result.num_clusters)
