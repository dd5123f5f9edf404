"""Bounded memory per download worker: URL shards sized by ``rows_per_shard`` at selection, and download shards
written row group by row group as their rows complete (a shard killed half-way is redone whole, same bytes)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from smallweb import GatedRoute, GatedWebServer, _photo, write_small_inputs
from webserver import Route, SampleWebServer, encode
from mrbench.config import ConfigError, load_config
from mrbench.curation.config import CrawlConfig, CurateConfig
from mrbench import shards as shards_mod
from mrbench.curation import download as download_mod
from mrbench.curation.crawl import INGEST_STEP, IngestTask, record_id, select_step, url_shard_count
from mrbench.curation.download import DOWNLOAD_STEP, Downloader, ImageValidator
from mrbench.curation.pipeline import plan_curation, run_curation
from mrbench.layout import RunLayout
from mrbench.records import ImageRecord
from mrbench.runlock import TEMP_SUFFIX, remove_stale_temporaries
from mrbench.shards import records_to_table, write_parquet_atomic

pytestmark = pytest.mark.slow

ROWS = 150  # with SPOOL_ROWS patched to 64, rows reach the disk 64 at a time (the spool's row groups)
# The worker process of the kill test: the download of shard 0.
KILLED_WORKER = """
import sys
from mrbench import shards
from mrbench.curation.config import CrawlConfig, CurateConfig
from mrbench.curation import download
shards.SPOOL_ROWS = 64
cfg = CurateConfig(num_shards=1, crawl=CrawlConfig(allow_private_network=True, timeout=60, thread_count=4))
download.DOWNLOAD_STEP.task(cfg, sys.argv[1])(0)
"""


def config() -> CurateConfig:
    return CurateConfig(num_shards=1, crawl=CrawlConfig(allow_private_network=True, timeout=60, thread_count=4))


def url_shard(server: GatedWebServer, *runs: Path) -> tuple[list[ImageRecord], GatedRoute]:
    """ROWS distinct images served by ``server``; the one with the highest id (written last) waits for its gate.
    Writes URL shard 0 of each run as selection does (id order); returns its records and the gated route."""
    routes: dict[str, Route] = {f"/img/n_{k}.jpg": Route(encode(_photo(1000 + k), "JPEG", quality=90))
                                for k in range(ROWS)}
    last = max(routes, key=lambda p: record_id(server.base_url + p))
    routes[last] = GatedRoute(routes[last].body)
    server.routes.update(routes)
    records = sorted((ImageRecord(id=record_id(server.base_url + p), url=server.base_url + p) for p in routes),
                     key=lambda r: r.id)
    for run in runs:
        write_parquet_atomic(records_to_table(records), RunLayout(run).urls.output(0))
    return records, routes[last]


def partial_bytes(run: Path) -> int:
    """Bytes in the download shard's temporary file (0 while there is none)."""
    return sum(p.stat().st_size for p in (run / "download").glob(f"shard_00000.parquet.*{TEMP_SUFFIX}"))


def wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + 120  # a hang guard, not a speed check
    while not condition():
        assert (proc is None or proc.poll() is None) and time.time() < deadline, what
        time.sleep(0.02)


def whole_shard_bytes(records: list[ImageRecord], path: Path) -> bytes:
    """What the download wrote before it streamed: every row in memory, sorted by id, written at once."""
    crawl = config().crawl
    rows = ImageValidator(crawl.max_image_pixels, crawl)(Downloader(crawl)(ImageRecord.from_dict(r.to_dict())
                                                                           for r in records))
    write_parquet_atomic(records_to_table(sorted(rows, key=lambda r: r.id)), path)
    return path.read_bytes()


def test_download_writes_row_groups_while_the_shard_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(download_mod, "ROW_GROUP_BYTES", 1)  # the shard file: a row group per 64 rows read back
    monkeypatch.setattr(shards_mod, "SPOOL_ROWS", 64)
    run = tmp_path / "run"
    with GatedWebServer() as server:
        records, last = url_shard(server, run)
        worker = threading.Thread(target=DOWNLOAD_STEP.task(config(), run), args=(0,))
        worker.start()
        first_group = sum(len(server.routes[r.url[len(server.base_url):]].body) for r in records[:64])
        try:  # the last URL has not answered, and the rows before it are on disk already
            wait_for(lambda: server.waiting(last) and partial_bytes(run) > first_group, "no row group written early")
            assert not (run / "download" / "shard_00000.parquet").exists()
        finally:
            last.gate.set()
            worker.join()
        expected = whole_shard_bytes(records, tmp_path / "whole.parquet")
    out = run / "download" / "shard_00000.parquet"
    assert pq.ParquetFile(out).metadata.num_row_groups == math.ceil(ROWS / 64)
    got, want = pq.read_table(out), pq.read_table(tmp_path / "whole.parquet")
    assert got.num_rows == ROWS and got.column("status").to_pylist() == ["ok"] * ROWS
    assert got.equals(want)  # the same rows, in the same (id) order, as the download that held them all
    assert expected != out.read_bytes()  # ...in other row groups
    assert RunLayout(run).download.is_done(0)


def test_killed_shard_is_redone_whole_with_the_same_bytes(tmp_path):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    with GatedWebServer() as server:
        records, last = url_shard(server, killed, straight)
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, str(killed)], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:  # killed while its last URL waits, with its other rows already spooled to disk
            wait_for(lambda: server.waiting(last) and partial_bytes(killed) > 0, "worker ended before the kill", proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        layout = RunLayout(killed)
        assert not layout.download.is_done(0) and not layout.download.output(0).exists()
        assert remove_stale_temporaries(killed) == 1  # what the run lock does on the rerun
        last.gate.set()
        DOWNLOAD_STEP.task(config(), killed)(0)  # the rerun: the shard is not done, so it is downloaded again, whole
        DOWNLOAD_STEP.task(config(), straight)(0)
        expected = whole_shard_bytes(records, tmp_path / "whole.parquet")
    assert layout.download.is_done(0)
    resumed = layout.download.output(0).read_bytes()
    assert resumed == RunLayout(straight).download.output(0).read_bytes()
    assert resumed == expected  # under 1024 rows and 64 MB: the bytes of the download that held every row
    assert pq.read_table(layout.download.output(0), columns=["id"]).column("id").to_pylist() == [r.id for r in records]


def test_shard_count_follows_rows_per_shard():
    auto = CurateConfig(rows_per_shard=10_000)
    assert [url_shard_count(auto, n) for n in (0, 1, 10_000, 10_001, 2_100_000)] == [1, 1, 1, 2, 210]
    assert url_shard_count(CurateConfig(num_shards=3), 2_100_000) == 3  # a set count wins


def select(cfg: CurateConfig, run: Path) -> list[list[str]]:
    """Ingest and select only (no download); the ids of each URL shard."""
    task = INGEST_STEP.task(cfg, run)
    for i in range(IngestTask.num_shards(cfg)):
        task(i)
    select_step(cfg, run)
    layout = RunLayout(run)
    return [pq.read_table(p, columns=["id"]).column("id").to_pylist() for p in layout.urls.existing()]


@pytest.mark.parametrize("rows_per_shard", [1, 4, 10_000])
def test_rows_per_shard_sets_the_url_shards(tmp_path, small_web, rows_per_shard):
    cfg_path = write_small_inputs(tmp_path / "in", "http://127.0.0.1:9", small_web, num_shards=0)
    cfg = load_config(CurateConfig, cfg_path, [f"rows_per_shard={rows_per_shard}"])
    shards = select(cfg, tmp_path / "a")
    one = select(load_config(CurateConfig, cfg_path, ["num_shards=1"]), tmp_path / "one")[0]
    n = math.ceil(len(one) / rows_per_shard)
    assert len(shards) == n and RunLayout(tmp_path / "a").with_shard_count(cfg).num_shards == n
    assert sorted(i for s in shards for i in s) == sorted(one)  # the same rows, cut by id
    for k, ids in enumerate(shards):
        assert ids == sorted(ids) and all(int(i, 16) % n == k for i in ids)
    assert select(cfg, tmp_path / "b") == shards  # same inputs and seed: same shards, same bytes
    for a, b in zip(RunLayout(tmp_path / "a").urls.existing(), RunLayout(tmp_path / "b").urls.existing()):
        assert a.read_bytes() == b.read_bytes()


def test_rows_per_shard_run_equals_the_same_count_set_by_hand(tmp_path, small_web):
    """num_shards: 0 cuts as many shards as the selected rows need; the run and its release are those of a config
    setting that count, and a rerun does nothing; another rows_per_shard on the folder is refused."""
    with SampleWebServer(small_web) as server:
        cfg_path = write_small_inputs(tmp_path / "in", server.base_url, small_web, num_shards=0)
        rows = len(select(load_config(CurateConfig, cfg_path, ["num_shards=1"]), tmp_path / "count")[0])
        auto = load_config(CurateConfig, cfg_path, [f"rows_per_shard={math.ceil(rows / 3)}"])
        summary = run_curation(auto, tmp_path / "auto")
        fixed = run_curation(load_config(CurateConfig, cfg_path, ["num_shards=3"]), tmp_path / "fixed")
        assert {p.action for p in plan_curation(auto, tmp_path / "auto")} <= {"done", "off"}
        assert run_curation(auto, tmp_path / "auto") == summary
    layout = RunLayout(tmp_path / "auto")
    assert len(layout.urls.existing()) == 3
    for step in ("download", "release"):
        assert len(layout.shards(step).markers()) == 3, step
    assert summary["release_rows"] == fixed["release_rows"] > 0
    data = sorted((layout.release / "data").iterdir())
    assert [p.name for p in data] == [p.name for p in sorted((tmp_path / "fixed" / "release" / "data").iterdir())]
    for p in data:
        assert p.read_bytes() == (tmp_path / "fixed" / "release" / "data" / p.name).read_bytes()
    with pytest.raises(ConfigError, match="rows_per_shard"):
        run_curation(load_config(CurateConfig, cfg_path, ["rows_per_shard=2"]), tmp_path / "auto")
