"""The run-folder layout: every path of a run comes from RunLayout, with the on-disk names old run folders have."""

from __future__ import annotations

from mrbench.layout import RunLayout


def test_names_on_disk_are_the_run_folder_format(tmp_path):
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
    assert lay.step_stats("finalize") is None and rel(lay.step_stats("group")) == "groups/stats.json"
    assert [rel(p) for p in (lay.duplicates, lay.assignments, lay.groups_table, lay.assignment_slice(2),
                             lay.leakage_report, lay.leaks, lay.manifest, lay.rejects.output(4))] == [
        "dedup/duplicates.parquet", "groups/assignments.parquet", "groups/groups.parquet",
        "groups/by_shard/assign_00002.parquet", "audit/leakage.json", "audit/leaks.parquet", "release/manifest.json",
        "rejects/rejects_00004.parquet"]
    # a contributed step gets the folder named after it
    assert rel(lay.shards("captions").output(0)) == "captions/shard_00000.parquet"
    assert rel(lay.step_marker("census")) == "census/_SUCCESS"


def test_existing_lists_the_outputs_present_in_shard_order(tmp_path):
    lay = RunLayout(tmp_path)
    assert lay.download.existing() == []
    for i in (2, 0):
        lay.download.output(i).parent.mkdir(parents=True, exist_ok=True)
        lay.download.output(i).write_bytes(b"")
        lay.download.stats_path(i).write_text("{}")
    assert lay.download.existing() == [lay.download.output(0), lay.download.output(2)]
