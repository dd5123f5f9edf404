"""Adding a stage: a new filter is one file plus one registry line, in-process or through the ``mrbench.stages``
entry-point group of an installed package; its drops land in ``filters/``, ``rejects/`` and ``stats.json``."""

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
from mrbench.stage import STAGES, pipeline_steps
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
from mrbench.stage import Step, global_step
from mrbench.stats import Stats


@global_step("group_census")
def group_census(config, run_dir):
    layout = RunLayout(run_dir)
    stats = Stats()
    for split in pq.read_table(layout.groups_table, columns=["split"]).column("split").to_pylist():
        stats.inc(f"group_census/{split}")
    layout.folder("group_census").mkdir(parents=True, exist_ok=True)
    return stats


CENSUS_STEP = Step("group_census", group_census, after="group", reads=("group",))
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
    for mod in ("no_style_stage", "census_step"):
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
    assert (run / "group_census" / "_SUCCESS").exists()
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
