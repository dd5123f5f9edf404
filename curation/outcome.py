"""Degenerate curation outcomes: a run that finished but released nothing, told as one paragraph naming what
happened and the setting to change (the CLI prints it and exits with :data:`EMPTY_OUTCOME_EXIT`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrbench.curation.config import CurateConfig
from mrbench.curation.sources import IMAGE_SUFFIXES
from mrbench.stats import Stats

# Exit status of a command that ran to the end but produced nothing usable (0 images released, 0 groups, every
# download failed, a benchmark split without samples): not a user mistake in a value (2), nor missing weights (3).
EMPTY_OUTCOME_EXIT = 4


def _top_level_images(config: CurateConfig) -> dict[str, int]:
    """Image files directly inside each ``folder`` source (not in a sub-folder): they get no folder tag."""
    found: dict[str, int] = {}
    for src in config.sources:
        if src.kind != "folder":
            continue
        for p in src.paths:
            root = Path(p)
            if root.is_dir():
                n = sum(1 for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
                if n:
                    found[str(root)] = n
    return found


def _top(counts: dict[str, int], n: int = 3) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def empty_outcome(config: CurateConfig, merged: dict[str, Stats], summary: dict[str, Any]) -> str | None:
    """Why a finished run released no image, as one paragraph with the setting to change; None when it released
    images.

    Args:
        config: The run's config.
        merged: Every step's merged stats (:func:`mrbench.curation.pipeline.write_merged_stats`).
        summary: The run's summary (:func:`mrbench.curation.pipeline.summarize`).
    """
    if summary.get("release_rows"):
        return None
    counts: dict[str, int] = {}
    for stats in merged.values():
        counts.update(stats.counts)
    rows, no_tag = counts.get("ingest/rows", 0), counts.get("ingest/no_tag_match", 0)
    candidates, selected = counts.get("ingest/candidates", 0), counts.get("select/selected", 0)
    downloads = {k.split("/", 1)[1]: v for k, v in counts.items()
                 if k.startswith("download/") and k != "download/max_concurrent_per_domain"}
    ok = downloads.pop("ok", 0)
    head = "Nothing was released (0 images). "
    if rows == 0:
        return head + ("The sources held no input rows: no image files (" + ", ".join(sorted(IMAGE_SUFFIXES))
                       + ") under the folder sources and no rows with a URL in the metadata sources. Check "
                       "sources[].paths.")
    if candidates == 0:
        loose = _top_level_images(config)
        if loose:
            where = ", ".join(f"{p} ({n} images)" for p, n in loose.items())
            return head + (f"{rows} images were read, but none has a tag: only images in sub-folders of a folder "
                           f"source are tagged (the sub-folder name is the tag: photos/<tag>/*.jpg), and {where} "
                           "hold images directly at the top level. Move them into one sub-folder per "
                           "subject, or set crawl.require_tag: false to keep untagged images (they form one group; "
                           "with embed.encoder, e.g. mobilenet_v2, they are grouped by appearance).")
        return head + (f"{rows} rows were read and {no_tag} of them (ingest/no_tag_match) have a caption that names "
                       "no tag of crawl.tag_list. Check the tag names and aliases, and sources[].caption_col; or set "
                       "crawl.require_tag: false to keep untagged rows (grouped by appearance with embed.encoder); "
                       "for folder sources with folder_tag: false the sub-folder names are not used as tags.")
    if selected and ok == 0:
        return head + (f"All {sum(downloads.values())} downloads failed ({_top(downloads)}). On a machine without "
                       "network every URL fails; URLs on your own network are refused unless "
                       "crawl.allow_private_network: true. Rerun with `mrbench curate --retry-failed RUN_DIR` (e.g. "
                       "--set crawl.timeout=30) to retry the retryable failures.")
    drops = summary.get("drops_per_reason") or {}
    groups = sum((summary.get("groups_per_split") or {}).values())
    why = f" (rows dropped per reason: {_top(drops, 4)})" if drops else ""
    return head + (f"{ok} images were downloaded, but {groups} groups remained{why}. A group needs at least "
                   f"group.min_group_size ({config.group.min_group_size}) images of one tag: add images per tag, or "
                   "lower group.min_group_size (and check the filters and dedup settings that dropped rows).")
