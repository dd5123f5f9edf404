"""The run folder of ``mrbench curate``: every path in it, in one place.

Nothing else joins run-folder path strings: steps, the pipeline, retry, report and the CLI ask a
:class:`RunLayout`. The names on disk are part of the run-folder format (old run folders resume), so they are
spelled here exactly once::

    RUN_DIR/config.yaml, provenance.json, models.json, run_state.json, stats.json, report.html
    ingest/candidates_{i:05d}.parquet   urls/urls_{i:05d}.parquet, urls/shards.json   download/shard_{i:05d}.parquet
    embed/shard_{i:05d}.parquet         filters/drops_{i:05d}.parquet
    index/  dedup/duplicates.parquet  groups/{groups,assignments}.parquet, groups/by_shard/assign_{i:05d}.parquet
    audit/{leakage.json,leaks.parquet}  release_parts/{split}-{i:05d}-of-{n:05d}.parquet  release/
    rejects/rejects_{i:05d}.parquet
    state/release_{i:05d}.done (release shards), state/release_final.done (manifest, card, EasyRef JSON written)

A sharded step ``name`` keeps ``{prefix}_{i:05d}.parquet`` + ``.stats.json`` + ``.done`` in its folder
(:meth:`RunLayout.shards`); a global step keeps ``stats.json`` and a ``_SUCCESS`` marker in its folder
(:meth:`RunLayout.step_marker`, :meth:`RunLayout.step_stats`). A step contributed by a plugin gets the folder named
after it, with shards named ``shard``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mrbench.shards import SUCCESS, ShardSet

# Sharded steps: step name -> (folder, shard prefix, output suffix). Release shards write several files (release/,
# rejects/), so their markers and stats live in state/ beside an output name nothing writes.
_SHARDED = {
    "ingest": ("ingest", "candidates", ".parquet"),
    "select": ("urls", "urls", ".parquet"),
    "download": ("download", "shard", ".parquet"),
    "embed": ("embed", "shard", ".parquet"),
    "filters": ("filters", "drops", ".parquet"),
    "release": ("state", "release", ".unused"),
}
# Global steps whose folder is not their name.
_FOLDERS = {"select": "urls", "group": "groups"}
# Folders a step writes besides its own (removed with its outputs when the step is redone).
_ALSO_OWNS = {"group": ("audit",), "release": ("release_parts", "rejects"), "finalize": ("release",)}


class RunLayout:
    """Every folder and file of one curation run folder.

    Args:
        run_dir: The run folder (``mrbench curate --out``).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"

    # --- files of the run -------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def models(self) -> Path:
        return self.root / "models.json"

    @property
    def run_state(self) -> Path:
        return self.root / "run_state.json"

    @property
    def cache(self) -> Path:
        """Compiled forms of the run's inputs, keyed by their content (the tag list: ``tag_list-<sha256>.json``)."""
        return self.root / "cache"

    @property
    def stats(self) -> Path:
        """Every step's counters merged over its shards."""
        return self.root / "stats.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    # --- steps ------------------------------------------------------------------------------------------------
    def folder(self, step: str) -> Path:
        """The folder a step writes (``select`` -> ``urls``, ``group`` -> ``groups``, others by their name)."""
        return self.root / _FOLDERS.get(step, step)

    def shards(self, step: str) -> ShardSet:
        """The shard set of a sharded step (outputs, per-shard stats and completion markers)."""
        folder, prefix, suffix = _SHARDED.get(step, (step, "shard", ".parquet"))
        return ShardSet(self.root / folder, prefix, suffix)

    def step_marker(self, step: str) -> Path:
        """The completion marker of a global step (written last)."""
        if step == "finalize":
            return self.state / "release_final.done"
        return self.folder(step) / SUCCESS

    def step_log(self, step: str) -> Path:
        """The log of a global step (``state/`` for ``finalize``: the release folder holds only the release)."""
        if step == "finalize":
            return self.state / "release_final.log"
        return self.folder(step) / "step.log"

    def owned(self, step: str) -> list[Path]:
        """What step ``step`` writes besides its shard files (:meth:`ShardSet.files`): a global step's folder (its
        marker, stats and log included), and the folders it shares with no other step; removed when it is redone."""
        paths = [self.root / folder for folder in _ALSO_OWNS.get(step, ())]
        if step == "finalize":
            return paths + [self.step_marker(step), self.step_log(step)]
        if step not in _SHARDED or step == "select":
            paths.insert(0, self.folder(step))
        return paths

    def step_done(self, step: str) -> bool:
        """Whether global step ``step`` finished (its marker exists)."""
        return self.step_marker(step).exists()

    def step_stats(self, step: str) -> Path | None:
        """The stats file of a global step (None for ``finalize``: it has no counters of its own)."""
        return None if step == "finalize" else self.folder(step) / "stats.json"

    @property
    def state(self) -> Path:
        """Markers of steps whose outputs are not theirs alone (release shards, the release's final files)."""
        return self.root / "state"

    # --- named shard sets and files -----------------------------------------------------------------------------
    @property
    def ingest(self) -> ShardSet:
        return self.shards("ingest")

    @property
    def urls(self) -> ShardSet:
        return self.shards("select")

    @property
    def download(self) -> ShardSet:
        return self.shards("download")

    @property
    def embed(self) -> ShardSet:
        return self.shards("embed")

    @property
    def filters(self) -> ShardSet:
        return self.shards("filters")

    @property
    def release_state(self) -> ShardSet:
        return self.shards("release")

    @property
    def shard_count(self) -> Path:
        """The shard count of the per-URL steps, as the select step chose it (``{"num_shards": n}``)."""
        return self.folder("select") / "shards.json"

    def with_shard_count(self, config: Any) -> Any:
        """``config`` with the run's shard count: ``num_shards`` as set, or (``num_shards: 0``) as the select step
        chose it from ``rows_per_shard``; unchanged while the select step has not run."""
        if getattr(config, "num_shards", None) != 0 or not self.shard_count.is_file():
            return config
        return dataclasses.replace(config, num_shards=json.loads(self.shard_count.read_text())["num_shards"])

    @property
    def select_tmp(self) -> Path:
        """duckdb's spill folder while selecting."""
        return self.folder("select") / ".select_tmp"

    @property
    def index(self) -> Path:
        return self.folder("index")

    @property
    def duplicates(self) -> Path:
        return self.folder("dedup") / "duplicates.parquet"

    @property
    def groups(self) -> Path:
        return self.folder("group")

    @property
    def groups_table(self) -> Path:
        return self.groups / "groups.parquet"

    @property
    def assignments(self) -> Path:
        return self.groups / "assignments.parquet"

    def assignment_slice(self, shard: int) -> Path:
        """The rows of ``assignments.parquet`` whose ids are in download shard ``shard``."""
        return self.groups / "by_shard" / f"assign_{shard:05d}.parquet"

    @property
    def audit(self) -> Path:
        return self.folder("audit")

    @property
    def leakage_report(self) -> Path:
        return self.audit / "leakage.json"

    @property
    def leaks(self) -> Path:
        return self.audit / "leaks.parquet"

    @property
    def release(self) -> Path:
        return self.folder("release")

    @property
    def release_parts(self) -> Path:
        """The release step's rows per (split, download shard), linked into ``release/data`` by ``finalize``."""
        return self.root / "release_parts"

    @property
    def manifest(self) -> Path:
        """The release's ``manifest.json`` (written last by ``finalize``)."""
        return self.release / "manifest.json"

    @property
    def rejects(self) -> ShardSet:
        """``rejects/rejects_{i:05d}.parquet``: every non-ok row of download shard ``i`` (written by release)."""
        return ShardSet(self.folder("rejects"), "rejects")


# The files that mark an ``mrbench eval`` run folder (written by the evaluation runner; named here so the core can
# tell the folders apart without importing the evaluation layer).
EVAL_RUN_FILES = ("config.json", "summary.json", "samples.jsonl")


def is_curation_run(path: str | Path) -> bool:
    """A folder ``mrbench curate --out`` wrote (its run state or resolved config and step folders)."""
    layout = RunLayout(path)
    return layout.run_state.is_file() or (layout.config.is_file() and (layout.root / "download").is_dir())


def folder_hint(path: str | Path) -> str:
    """What kind of MRBench folder ``path`` is, and where the folder a command wanted is, as one sentence; "" for
    anything else. Commands add it to their error when given the wrong kind of folder."""
    p = Path(path)
    if not p.is_dir():
        return ""
    if is_curation_run(p):
        release = RunLayout(p).release
        there = f"its release is {release}" if (release / "manifest.json").is_file() else \
            f"its release will be {release} once the run has finished (rerun mrbench curate to resume it)"
        return f"{p} is a curation run folder; {there}"
    if all((p / f).is_file() for f in EVAL_RUN_FILES[:1]) and any((p / f).is_file() for f in EVAL_RUN_FILES[1:]):
        return f"{p} is an eval run folder (results of mrbench eval), not a release"
    runs = sorted(d for d in p.iterdir() if d.is_dir() and (d / EVAL_RUN_FILES[0]).is_file()
                  and (d / EVAL_RUN_FILES[1]).is_file())
    if runs:
        return (f"{p} is an eval --out folder holding {len(runs)} run folder(s) ({runs[0].name}, ...): pass the run "
                f"folders, e.g. {p}/*/")
    if (p / "release" / "manifest.json").is_file():
        return f"{p} holds a release: {p / 'release'}"
    return ""
