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

A step's paths come from its :class:`~mrbench.stage.Step` (``folder``, ``prefix``, ``suffix``, ``owns``,
``marker``), the one place they are spelled: a sharded step keeps ``{prefix}_{i:05d}{suffix}`` + ``.stats.json`` +
``.done`` in its folder (:meth:`RunLayout.shards`); a global step keeps ``stats.json`` and a ``_SUCCESS`` marker in its
folder (:meth:`RunLayout.step_marker`, :meth:`RunLayout.step_stats`). A step contributed by a plugin gets the folder
named after it, with shards named ``shard``. The methods take a step, or the name it is registered under in
:data:`mrbench.registry.STAGES` (an unknown name is an error, never a folder of its own).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Protocol, Union

from mrbench.registry import STAGES
from mrbench.shards import SUCCESS, ShardSet


class Step(Protocol):
    """What the layout reads of a :class:`mrbench.stage.Step` (its paths)."""

    name: str
    folder: str
    prefix: str
    suffix: str
    owns: tuple[str, ...]
    marker: str

    @property
    def sharded(self) -> bool: ...

# Folders of the run that are not one step's own folder (steps name them in ``Step.owns`` / ``Step.folder``).
STATE = "state"  # markers of steps whose outputs are not theirs alone (release shards, the release's final files)
RELEASE = "release"
RELEASE_PARTS = "release_parts"
REJECTS = "rejects"
AUDIT = "audit"

StepRef = Union["Step", str]


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
    @staticmethod
    def step(step: StepRef) -> "Step":
        """The step itself: ``step``, or the step registered under that name (:data:`mrbench.registry.STAGES`).

        Raises:
            UnknownEntryError: no stage is registered under the name.
            ValueError: the name is a registered filter, not a step.
        """
        if not isinstance(step, str):
            return step
        found = STAGES.get(step)
        if not hasattr(found, "folder"):
            raise ValueError(f"stage {step!r} is not a step of the run (it has no folder)")
        return found

    def folder(self, step: StepRef) -> Path:
        """The folder a step writes (``select`` -> ``urls``, ``group`` -> ``groups``, others by their name)."""
        return self.root / self.step(step).folder

    def shards(self, step: StepRef) -> ShardSet:
        """The shard set of a sharded step (outputs, per-shard stats and completion markers)."""
        s = self.step(step)
        return ShardSet(self.root / s.folder, s.prefix, s.suffix)

    def step_marker(self, step: StepRef) -> Path:
        """The completion marker of a global step (written last): ``Step.marker`` when it names one, else
        ``_SUCCESS`` in its folder."""
        s = self.step(step)
        return self.root / s.marker if s.marker else self.folder(s) / SUCCESS

    def step_log(self, step: StepRef) -> Path:
        """The log of a global step: beside a marker the step names (``state/``: the release folder holds only the
        release), else ``step.log`` in its folder."""
        s = self.step(step)
        return self.step_marker(s).with_suffix(".log") if s.marker else self.folder(s) / "step.log"

    def owned(self, step: StepRef) -> list[Path]:
        """What a step writes besides its shard files (:meth:`ShardSet.files`): a global step's folder (its marker,
        stats and log included), and the folders it shares with no other step (``Step.owns``); removed when it is
        redone."""
        s = self.step(step)
        paths = [self.root / folder for folder in s.owns]
        if s.marker:
            return paths + [self.step_marker(s), self.step_log(s)]
        if not s.sharded:
            paths.insert(0, self.folder(s))
        return paths

    def step_done(self, step: StepRef) -> bool:
        """Whether global step ``step`` finished (its marker exists)."""
        return self.step_marker(step).exists()

    def step_stats(self, step: StepRef) -> Path | None:
        """The stats file of a global step (None for a step whose marker lives elsewhere: ``finalize`` has no
        counters of its own)."""
        s = self.step(step)
        return None if s.marker else self.folder(s) / "stats.json"

    @property
    def state(self) -> Path:
        """Markers of steps whose outputs are not theirs alone (release shards, the release's final files)."""
        return self.root / STATE

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
        return self.root / AUDIT

    @property
    def leakage_report(self) -> Path:
        return self.audit / "leakage.json"

    @property
    def leaks(self) -> Path:
        return self.audit / "leaks.parquet"

    @property
    def release(self) -> Path:
        return self.root / RELEASE

    @property
    def release_parts(self) -> Path:
        """The release step's rows per (split, download shard), linked into ``release/data`` by ``finalize``."""
        return self.root / RELEASE_PARTS

    @property
    def manifest(self) -> Path:
        """The release's ``manifest.json`` (written last by ``finalize``)."""
        return self.release / "manifest.json"

    @property
    def rejects(self) -> ShardSet:
        """``rejects/rejects_{i:05d}.parquet``: every non-ok row of download shard ``i`` (written by release)."""
        return ShardSet(self.root / REJECTS, "rejects")


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
