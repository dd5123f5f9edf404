"""Per-step fingerprints: a rerun redoes exactly the steps whose settings or inputs changed, and those after them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mrbench.cli import app
from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import plan_curation, run_curation
from mrbench.fingerprint import FREE_SETTINGS, flat_settings, step_records
from mrbench.stage import pipeline_steps
from visual_fixtures import folder_config, photo_folder

pytestmark = pytest.mark.slow

CHANGED = ["dedup.threshold=0.99", "group.max_group_size=3"]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def markers(run: Path) -> dict[str, tuple[int, bytes]]:
    """Every completion marker of a run folder: its time and its content."""
    found = [*run.rglob("*.done"), *run.rglob("_SUCCESS")]
    return {p.relative_to(run).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in found}


def actions(cfg: CurateConfig, run: Path) -> dict[str, str]:
    """The plan of every step but those this config leaves off with nothing on disk (they have nothing to redo)."""
    return {p.step.name: p.describe() for p in plan_curation(cfg, run) if p.describe() != "off"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp")
    return root, folder_config(root / "in", photo_folder(root / "photos"))


@pytest.fixture()
def finished(inputs, tmp_path):
    """A finished run (copied per test from one module-wide run)."""
    root, cfg_path = inputs
    base = root / "base"
    if not base.exists():
        run_curation(load_config(CurateConfig, cfg_path), base)
    run = tmp_path / "run"
    shutil.copytree(base, run)
    return run, cfg_path


def test_changed_threshold_and_group_size_give_the_fresh_release(finished, tmp_path):
    run, cfg_path = finished
    before, config_yaml = markers(run), (run / "config.yaml").read_bytes()
    result = CliRunner().invoke(app, ["curate", "-c", str(cfg_path), "-o", str(run), "--dry-run",
                                      *[a for kv in CHANGED for a in ("--set", kv)]])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["ingest"].split()[1] == "done" and lines["index"].split()[1] == "done"
    assert "redo: dedup.threshold null -> 0.99" in lines["dedup"]
    assert "group.max_group_size 64 -> 3" in lines["group"] and "after dedup" in lines["group"]
    assert "redo" in lines["release"] and "redo" in lines["finalize"]
    assert markers(run) == before and (run / "config.yaml").read_bytes() == config_yaml  # --dry-run wrote nothing
    changed = load_config(CurateConfig, cfg_path, CHANGED)
    run_curation(changed, run)
    after = markers(run)
    for name in ("ingest/", "download/", "embed/", "filters/", "index/"):  # kept: not one marker rewritten
        assert {k: v for k, v in after.items() if k.startswith(name)} == {k: v for k, v in before.items() if k.startswith(name)}
    assert json.loads((run / "dedup" / "_SUCCESS").read_text())["settings"]["dedup.threshold"] == 0.99
    fresh = tmp_path / "fresh"
    run_curation(changed, fresh)
    assert tree_bytes(run / "release") == tree_bytes(fresh / "release")
    manifest = json.loads((run / "release" / "manifest.json").read_text())
    assert manifest["config"]["group"]["max_group_size"] == 3 and manifest["config"]["dedup"]["threshold"] == 0.99


def test_free_settings_redo_nothing(finished):
    run, cfg_path = finished
    free = ["executor.workers=2", "crawl.timeout=3", "crawl.thread_count=2", "crawl.retries=2"]
    cfg = load_config(CurateConfig, cfg_path, free)
    assert set(actions(cfg, run).values()) == {"done"}
    before, release = markers(run), tree_bytes(run / "release")
    run_curation(cfg, run)
    assert markers(run) == before  # no step ran: every marker keeps its time and record
    assert tree_bytes(run / "release") == release  # the manifest keeps the config that produced the bytes
    assert json.loads((run / "release" / "manifest.json").read_text())["config"]["executor"]["workers"] == 1


def test_a_step_turned_off_loses_its_outputs(finished):
    run, cfg_path = finished
    (run / "my_notes.txt").write_text("mine")
    cfg = load_config(CurateConfig, cfg_path, ["dedup.enabled=false"])
    plan = actions(cfg, run)
    assert plan["dedup"] == "remove: off for this config" and plan["group"] == "redo: after dedup"
    run_curation(cfg, run)
    assert not (run / "dedup").exists()
    rejects = [r for f in (run / "rejects").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert "near_duplicate" not in {r["status"] for r in rejects}
    assert (run / "my_notes.txt").read_text() == "mine"  # only MRBench's own files go


def test_markers_without_fingerprint_are_kept_unless_config_yaml_differs(finished):
    """A run folder of an older MRBench: empty markers. Same settings: nothing is redone (and the plan says the
    fingerprint is unknown); a changed group size: group and the steps after it are redone, the rest kept."""
    run, cfg_path = finished
    for marker in [*run.rglob("*.done"), *run.rglob("_SUCCESS")]:
        marker.write_text("")
    cfg = load_config(CurateConfig, cfg_path)
    plan = actions(cfg, run)
    assert all(v.startswith("done: no fingerprint") for v in plan.values()), plan
    plan = actions(load_config(CurateConfig, cfg_path, ["group.max_group_size=3"]), run)
    assert plan["dedup"].startswith("done: no fingerprint")
    assert plan["group"] == "redo: group.max_group_size 64 -> 3"
    assert plan["release"] == "redo: after group"
    assert plan["finalize"] == "redo: group.max_group_size 64 -> 3; after group"  # it records every setting


def test_inputs_are_fingerprinted(tmp_path):
    """The tag list by content, the source files by size and time: a change moves the steps that read them."""
    (tmp_path / "meta.csv").write_text("url,caption\nhttp://example.com/a.jpg,a cat\n")
    tags = tmp_path / "tags.yaml"
    tags.write_text("- {name: cat, category: subject}\n")
    cfg = load_config(CurateConfig, values={"sources": [{"kind": "metadata", "paths": [str(tmp_path / "meta.csv")]}],
                                            "crawl": {"tag_list": str(tags)}})
    steps = pipeline_steps()
    first = step_records(steps, cfg)
    tags.write_text("- {name: cat, category: subject, aliases: [kitty]}\n")
    second = step_records(steps, cfg)
    assert second["ingest"]["inputs"]["tag_list"] != first["ingest"]["inputs"]["tag_list"]
    assert second["ingest"]["settings"] == first["ingest"]["settings"]
    (tmp_path / "meta.csv").write_text("url,caption\nhttp://example.com/b.jpg,a cat too\n")
    third = step_records(steps, cfg)
    assert third["ingest"]["inputs"]["sources"] != second["ingest"]["inputs"]["sources"]
    assert {s: third[s]["fingerprint"] != second[s]["fingerprint"] for s in third} == {s: True for s in third}


# Read only to write the card and the manifest (the finalize step, which records every setting).
FINALIZE_ONLY = {"release.name", "release.easyref_json", "release.license", "release.license_note",
                 "crawl.tag_list"}  # the path: the steps that read the list record its sha256 instead


def test_every_setting_is_read_by_a_step_or_free():
    """A new config key must be declared by the steps that read it (Step.settings) or listed as free; otherwise a
    change would redo only finalize and leave the release built with the old value."""
    steps = [s for s in pipeline_steps() if s.name != "finalize"]
    declared = [p for s in steps for p in s.settings or ()]
    unclaimed = [k for k in flat_settings(CurateConfig())
                 if not any(k == p or k.startswith(p + ".") for p in (*declared, *FREE_SETTINGS))]
    assert sorted(unclaimed) == sorted(FINALIZE_ONLY)
