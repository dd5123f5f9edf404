"""Adding a stage: a new filter is one file plus one registry line, in-process or through the ``mrbench.stages``
entry-point group of an installed package; its drops land in ``filters/``, ``rejects/`` and ``stats.json``. A
filter sees what earlier steps wrote for its shard (the embeddings); built-in steps and filters are registered the same
way, so re-registering one under its name replaces what runs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mrbench.config import ConfigError, load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.drops import drop_step
from mrbench.curation.pipeline import run_curation
from mrbench.stage import STAGES, filter_stages, pipeline_steps
from smallweb import write_small_inputs

# The whole stage, as a user writes it in a file of their own (README "Add a stage").
STAGE_FILE = '''
from mrbench.stage import Filter


class NoStyleFilter(Filter):
    """Drops images tagged as an artist's style."""

    name = "no_style"
    reasons = ("style_tag",)

    def check(self, record):
        if any(t.endswith(" style") for t in record.tags):
            record.error_message = f"tagged {record.tags[0]!r}"
            return "style_tag"
        return None
'''

# A plugin package may also add a step: a global one, run after grouping, counting the groups per split.
STEP_FILE = '''
import pyarrow.parquet as pq

from mrbench.layout import RunLayout
from mrbench.stage import Step
from mrbench.stats import Stats


def group_census(config, run_dir):
    layout = RunLayout(run_dir)
    stats = Stats()
    for split in pq.read_table(layout.groups_table, columns=["split"]).column("split").to_pylist():
        stats.inc(f"group_census/{split}")
    return stats


CENSUS_STEP = Step("group_census", group_census, after="group", reads=("group",))
'''


# A filter that judges images by their embeddings (the embed step's vectors of its shard); it names no ``name``: it
# takes the one it is registered under.
EMBEDDING_FILTER_FILE = '''
import dataclasses

from mrbench.curation.download import DOWNLOAD_STEP, DownloadTask
from mrbench.stage import Filter


class LeaningFilter(Filter):
    """Drops images whose embedding is negative on its first axis."""

    reasons = ("leaning",)

    def __init__(self, embeddings):
        super().__init__()
        self.embeddings = embeddings

    @classmethod
    def for_shard(cls, config, shard):
        return cls(shard.embeddings())

    def check(self, record):
        vector = self.embeddings.get(record.id)
        if vector is not None and vector[0] < 0:
            record.error_message = f"{vector[0]:.6f}"
            return "leaning"
        return None


class KeepAnyResolution(Filter):
    """In place of the built-in resolution filter: counts what it sees, drops nothing."""

    def check(self, record):
        self.stats.inc(f"{self.name}/replaced")
        return None


class CountingDownload(DownloadTask):
    def process(self, shard):
        table, stats = super().process(shard)
        stats.inc("download/replaced_step")
        return table, stats


COUNTING_DOWNLOAD_STEP = dataclasses.replace(DOWNLOAD_STEP, run=CountingDownload)
'''


def rows(folder: Path, pattern: str) -> list[dict]:
    return [r for f in sorted(folder.glob(pattern)) for r in pq.read_table(f).to_pylist()]


def assert_style_drops(run: Path, summary: dict) -> None:
    """The four "Van Gogh style" images are dropped by the new filter, everywhere a built-in filter's drop shows."""
    dropped = [r for r in rows(run / "filters", "drops_*.parquet") if r["status"] == "style_tag"]
    assert len(dropped) == 4 and all(r["error_message"] == "tagged 'Van Gogh style'" for r in dropped)
    rejects = {r["id"]: r["status"] for r in rows(run / "rejects", "rejects_*.parquet")}
    assert all(rejects[r["id"]] == "style_tag" for r in dropped)
    released = rows(run / "release" / "data", "*.parquet")
    assert released and not {r["id"] for r in dropped} & {r["id"] for r in released}
    counts = json.loads((run / "stats.json").read_text())["filters"]["counts"]
    assert counts["no_style/dropped/style_tag"] == 4
    assert counts["no_style/kept"] == counts["resolution/kept"] - 4  # it saw every image the built-ins kept
    assert summary["drops_per_reason"]["style_tag"] == 4
    assert drop_step("style_tag") == "filters"


@pytest.fixture()
def stage_dir(tmp_path):
    """A folder on sys.path holding the stage's file (the driver and spawned workers import it from there)."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "no_style_stage.py").write_text(textwrap.dedent(STAGE_FILE))
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    yield folder
    sys.path.remove(str(folder))
    for mod in ("no_style_stage", "census_step", "leaning_stage"):
        sys.modules.pop(mod, None)


def test_a_filter_in_one_file_plus_one_registry_line_runs(stage_dir, tmp_path, web_server, small_web):
    STAGES.register("no_style", "no_style_stage:NoStyleFilter")  # the one registry line
    try:
        cfg = load_config(CurateConfig, write_small_inputs(tmp_path / "in", web_server.base_url, small_web))
        summary = run_curation(cfg, tmp_path / "run")
        assert_style_drops(tmp_path / "run", summary)
    finally:
        STAGES.unregister("no_style")
    assert drop_step("style_tag") == "download"  # unregistered: an unknown reason again


def test_a_plugin_package_adds_a_filter_and_a_step_through_entry_points(stage_dir, tmp_path, web_server, small_web):
    # An installed distribution, as pip leaves it: its dist-info names the stages in the mrbench.stages group.
    (stage_dir / "census_step.py").write_text(textwrap.dedent(STEP_FILE))
    info = stage_dir / "mrbench_style_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mrbench-style-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mrbench.stages]\nno_style = no_style_stage:NoStyleFilter\n"
                                           "group_census = census_step:CENSUS_STEP\n")
    STAGES.refresh_entry_points()
    try:
        assert [s.name for s in pipeline_steps()][-4:] == ["group", "group_census", "release", "finalize"]
        cfg = load_config(CurateConfig, write_small_inputs(tmp_path / "in", web_server.base_url, small_web,
                                                           executor__workers=2))  # the stages run in spawned workers
        summary = run_curation(cfg, tmp_path / "run")
        assert_style_drops(tmp_path / "run", summary)
        env_ls = subprocess.run([sys.executable, "-m", "mrbench.cli", "ls", "stages"], capture_output=True, text=True,
                                env={**__import__("os").environ, "PYTHONPATH": f"{stage_dir}:{':'.join(sys.path)}"})
    finally:
        (info / "entry_points.txt").unlink()
        STAGES.refresh_entry_points()
    run = tmp_path / "run"
    stats = json.loads((run / "stats.json").read_text())
    assert list(stats)[-2:] == ["group_census", "release"]  # run order
    assert sum(stats["group_census"]["counts"].values()) == sum(summary["groups_per_split"].values())
    assert (run / "group_census" / "_SUCCESS").exists() and (run / "group_census" / "step.log").exists()
    names = [line.split()[0] for line in env_ls.stdout.splitlines()]
    assert names.index("group") < names.index("group_census") < names.index("release")
    assert names.index("filters") < names.index("no_style") < names.index("index")  # listed in the filters step
    assert "no_style" not in [s.name for s in pipeline_steps()]  # unregistered again: the next run is as before


def test_a_stage_after_an_unknown_step_fails_before_any_work(tmp_path, web_server, small_web):
    from mrbench.stage import Step

    def noop(config, run_dir):  # pragma: no cover - never runs
        raise AssertionError("ran")

    STAGES.register("orphan", Step("orphan", noop, after="no_such_step"))
    try:
        cfg = load_config(CurateConfig, write_small_inputs(tmp_path / "in", web_server.base_url, small_web))
        with pytest.raises(ConfigError, match="no_such_step"):
            run_curation(cfg, tmp_path / "run")
    finally:
        STAGES.unregister("orphan")
    assert not (tmp_path / "run" / "ingest").exists()


def test_ls_stages_lists_what_runs_in_run_order():
    import mrbench.curation  # noqa: F401  (the built-in steps)

    out = subprocess.run([sys.executable, "-m", "mrbench.cli", "ls", "stages"], capture_output=True, text=True)
    names = [line.split()[0] for line in out.stdout.splitlines() if not line.startswith(" ")]
    steps = [s.name for s in pipeline_steps()]
    assert steps == ["ingest", "select", "download", "embed", "safety", "filters", "index", "dedup", "group", "release",
                     "finalize"]
    assert [n for n in names if n in steps] == steps
    assert names.index("download") < names.index("validate") < names.index("embed")  # a part, under its step


def test_a_filter_reads_the_shard_embeddings(stage_dir, tmp_path, web_server, small_web):
    """A plugin filter built per shard (``for_shard``) sees the embed step's vectors of that shard."""
    (stage_dir / "leaning_stage.py").write_text(textwrap.dedent(EMBEDDING_FILTER_FILE))
    STAGES.register("leaning", "leaning_stage:LeaningFilter")
    try:
        cfg = load_config(CurateConfig, write_small_inputs(tmp_path / "in", web_server.base_url, small_web,
                                                           embed__encoder="dino-tiny"))
        summary = run_curation(cfg, tmp_path / "run")
    finally:
        STAGES.unregister("leaning")
    run = tmp_path / "run"
    drops = rows(run / "filters", "drops_*.parquet")
    dropped = {r["id"] for r in drops if r["status"] == "leaning"}
    earlier = {r["id"] for r in drops if r["status"] != "leaning"}
    negative = {r["id"] for r in rows(run / "embed", "shard_*.parquet")
                if r["status"] == "ok" and r["embedding"] is not None and r["embedding"][0] < 0}
    assert dropped and dropped == negative - earlier
    counts = json.loads((run / "stats.json").read_text())["filters"]["counts"]
    assert counts["leaning/dropped/leaning"] == len(dropped) == summary["drops_per_reason"]["leaning"]


def test_re_registering_a_built_in_step_or_filter_replaces_what_runs(stage_dir, tmp_path, web_server, small_web):
    """The built-in ``resolution`` filter and ``download`` step are registry entries like any plugin's: registered
    again under their names, the replacements run in their places (and the built-ins do not)."""
    (stage_dir / "leaning_stage.py").write_text(textwrap.dedent(EMBEDDING_FILTER_FILE))
    built_in = {name: STAGES.entry(name) for name in ("resolution", "download")}
    STAGES.register("resolution", "leaning_stage:KeepAnyResolution", replace=True)
    STAGES.register("download", "leaning_stage:COUNTING_DOWNLOAD_STEP", replace=True)
    try:
        steps = [s.name for s in pipeline_steps()]
        cfg = load_config(CurateConfig, write_small_inputs(tmp_path / "in", web_server.base_url, small_web,
                                                           filters__min_side=10_000))  # the built-in would drop all
        summary = run_curation(cfg, tmp_path / "run")
    finally:
        for name, entry in built_in.items():
            STAGES.register(name, entry.target, help=entry.help, replace=True)
    assert steps == [s.name for s in pipeline_steps()]  # same places in the chain
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["download"]["counts"]["download/replaced_step"] == cfg.num_shards
    filters = stats["filters"]["counts"]
    downloaded = [r for r in rows(tmp_path / "run" / "download", "shard_*.parquet") if r["status"] == "ok"]
    assert filters["resolution/replaced"] == len(downloaded) > 0  # it saw every downloaded image
    assert not any(k.startswith("resolution/dropped") for k in filters)
    assert "low_resolution" not in summary["drops_per_reason"]
    assert STAGES.get("resolution").__name__ == "ResolutionFilter"  # restored, in its place
    assert [n for n, _ in filter_stages()][:2] == ["resolution", "safety_score"]
