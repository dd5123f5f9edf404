"""The run-folder layout: every path of a run comes from RunLayout, derived from each step's Step (folder, prefix),
with the on-disk names old run folders have."""

from __future__ import annotations

import pytest

from mrbench.layout import RunLayout
from mrbench.registry import UnknownEntryError
from mrbench.stage import Step


def _census(config, run_dir):  # pragma: no cover - a step that is only laid out
    raise AssertionError("ran")


def test_names_on_disk_are_the_run_folder_format(tmp_path):
    import mrbench.curation  # noqa: F401  (the built-in steps: their Steps spell the names)

    lay = RunLayout(tmp_path)

    def rel(p):
        return p.relative_to(tmp_path).as_posix()

    assert [rel(p) for p in (lay.config, lay.provenance, lay.models, lay.run_state, lay.stats, lay.report)] == [
        "config.yaml", "provenance.json", "models.json", "run_state.json", "stats.json", "report.html"]
    shards = {s: lay.shards(s) for s in ("ingest", "select", "download", "embed", "filters", "release")}
    assert {s: rel(v.output(3)) for s, v in shards.items()} == {
        "ingest": "ingest/candidates_00003.parquet", "select": "urls/urls_00003.parquet",
        "download": "download/shard_00003.parquet", "embed": "embed/shard_00003.parquet",
        "filters": "filters/drops_00003.parquet", "release": "state/release_00003.unused"}
    assert rel(lay.release_state.marker(0)) == "state/release_00000.done"
    assert rel(lay.download.stats_path(1)) == "download/shard_00001.stats.json"
    assert [rel(lay.step_marker(s)) for s in ("select", "index", "dedup", "group", "finalize")] == [
        "urls/_SUCCESS", "index/_SUCCESS", "dedup/_SUCCESS", "groups/_SUCCESS", "state/release_final.done"]
    assert [rel(lay.step_log(s)) for s in ("select", "group", "finalize")] == [
        "urls/step.log", "groups/step.log", "state/release_final.log"]
    assert lay.step_stats("finalize") is None and rel(lay.step_stats("group")) == "groups/stats.json"
    assert [rel(p) for p in (lay.duplicates, lay.assignments, lay.groups_table, lay.assignment_slice(2),
                             lay.leakage_report, lay.leaks, lay.manifest, lay.rejects.output(4))] == [
        "dedup/duplicates.parquet", "groups/assignments.parquet", "groups/groups.parquet",
        "groups/by_shard/assign_00002.parquet", "audit/leakage.json", "audit/leaks.parquet", "release/manifest.json",
        "rejects/rejects_00004.parquet"]
    # a contributed step gets the folder named after it
    assert rel(lay.shards(Step("captions", _census)).output(0)) == "captions/shard_00000.parquet"
    assert rel(lay.step_marker(Step("census", _census))) == "census/_SUCCESS"
    # paths come from the Step, never from a second table: a step's own folder and prefix are what the layout gives
    own = Step("census", _census, folder="counts", prefix="tally", owns=("tallies",))
    assert rel(lay.shards(own).output(1)) == "counts/tally_00001.parquet"
    assert [rel(p) for p in lay.owned(own)] == ["counts", "tallies"]
    with pytest.raises(UnknownEntryError, match="captions"):  # a name nothing registered is an error, not a folder
        lay.shards("captions")


def test_existing_lists_the_outputs_present_in_shard_order(tmp_path):
    lay = RunLayout(tmp_path)
    assert lay.download.existing() == []
    for i in (2, 0):
        lay.download.output(i).parent.mkdir(parents=True, exist_ok=True)
        lay.download.output(i).write_bytes(b"")
        lay.download.stats_path(i).write_text("{}")
    assert lay.download.existing() == [lay.download.output(0), lay.download.output(2)]


def test_sharded_step_writes_a_log_per_shard_with_warnings_and_outcome(tmp_path):
    """The step base owns the shard's log: start, the warnings raised while it ran, done with its counters, or
    failed with the error (and then no marker); a redone shard rewrites its log."""
    import pyarrow as pa
    import pytest

    from mrbench.log import get_logger
    from mrbench.stage import ShardedStep, Step
    from mrbench.stats import Stats

    class Noisy(ShardedStep):
        def process(self, shard):
            if shard == 1:
                raise ValueError("disk on fire")
            get_logger("mrbench.curation.noisy").warning("shard %d: 2 rows unreadable", shard)
            stats = Stats()
            stats.inc("rows", 3)
            return pa.table({"x": [1, 2, 3]}), stats

    step = Step("noisy", Noisy).task(None, tmp_path)
    step(0)
    lines = step.shards.log_path(0).read_text().splitlines()
    assert step.shards.log_path(0).relative_to(tmp_path).as_posix() == "noisy/shard_00000.log"
    assert "noisy shard 0: start (host " in lines[0]
    assert "WARNING mrbench.curation.noisy: shard 0: 2 rows unreadable" in lines[1]
    assert lines[2].endswith('noisy shard 0: done {"rows": 3}') and len(lines) == 3 and step.is_done(0)
    with pytest.raises(ValueError):
        step(1)
    assert step.shards.log_path(1).read_text().splitlines()[-1].endswith("noisy shard 1: failed: ValueError: disk on fire")
    assert not step.is_done(1)
    step(0)  # redone: the log is the new run's alone
    assert len(step.shards.log_path(0).read_text().splitlines()) == 3


def test_sharded_step_names_a_retry_of_an_attempt_that_left_no_outcome(tmp_path):
    """An attempt whose worker process or node was lost leaves a log with a start line and no outcome; the attempt
    that redoes the shard says so in the log, counts it in the shard's stats and returns the lost attempt's line."""
    import pyarrow as pa

    from mrbench.stage import ShardedStep, Step
    from mrbench.stats import Stats

    class Quiet(ShardedStep):
        def process(self, shard):
            return pa.table({"x": [shard]}), Stats()

    step = Step("quiet", Quiet).task(None, tmp_path)
    assert step(0) is None and "retried_shards" not in step.shards.stats_path(0).read_text()
    lost = step.shards.log_path(1)
    lost.parent.mkdir(parents=True, exist_ok=True)
    lost.write_text("2026-01-01T00:00:00 quiet shard 1: start (host node-b, pid 4242)\n")  # what a SIGKILL leaves
    earlier = step(1)
    assert earlier is not None and "node-b, pid 4242" in earlier
    lines = lost.read_text().splitlines()
    assert "quiet shard 1: retry: an earlier attempt ended without an outcome" in lines[1] and "pid 4242" in lines[1]
    assert '"quiet/retried_shards": 1' in lines[-1] and step.is_done(1)
    assert Stats.load(step.shards.stats_path(1)).counts["quiet/retried_shards"] == 1
    assert step(1) is None  # redoing a shard that had finished is no retry


def test_global_step_writes_its_log_then_stats_then_marker(tmp_path):
    from mrbench.log import get_logger
    from mrbench.stage import Step, run_global_step
    from mrbench.stats import Stats

    def census(config, run_dir):
        get_logger("mrbench.curation.census").warning("3 groups without a target")
        stats = Stats()
        stats.inc("groups", 5)
        return stats

    step = Step("census", census)
    assert run_global_step(step, None, tmp_path).counts["groups"] == 5
    lay = RunLayout(tmp_path)
    lines = lay.step_log(step).read_text().splitlines()
    assert "census: start (host " in lines[0] and "3 groups without a target" in lines[1]
    assert lines[2].endswith('census: done {"groups": 5}') and lay.step_done(step)
    assert rel_files(tmp_path) == ["census/_SUCCESS", "census/stats.json", "census/step.log"]


def rel_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
