"""A curation on a Ray cluster started as users start one: ``ray start --head``, a second node joining it with a
GPU resource, ``mrbench curate --set executor.ray_address=...`` as the driver (all on loopback, token auth). The
release is byte-identical to the local executor's, also when the second node dies while a shard runs on it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import run_curation
from raycluster import LoopbackRayCluster
from smallweb import GatedRoute, GatedWebServer, _photo, shard_paths, write_small_inputs
from webserver import encode
from visual_fixtures import folder_config, photo_folder

pytestmark = pytest.mark.slow
pytest.importorskip("ray")


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cluster():
    """A head node (1 CPU, no GPU) and a second node (1 CPU, 1 GPU advertised: Ray hands its id to the tasks that
    ask, no GPU is needed), each a ``ray start`` of its own; stopped by pid afterwards."""
    c = LoopbackRayCluster()
    try:
        c.start_head(cpus=1)
        c.add_node(cpus=1, gpus=1)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        c.stop()
        pytest.skip(f"cannot start a Ray cluster with `ray start` here: {e}")
    yield c
    c.stop()


def curate_on(cluster: LoopbackRayCluster, cfg_path: Path, out: Path, **popen: object) -> subprocess.Popen:
    """``mrbench -v curate`` as the cluster's driver (its token in the environment), started in the background."""
    cmd = [sys.executable, "-m", "mrbench.cli", "-v", "curate", "--config", str(cfg_path), "--out", str(out),
           "--set", "executor.name=ray", "--set", f"executor.ray_address={cluster.address}"]
    return subprocess.Popen(cmd, env={**cluster.env, "COLUMNS": "400"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def same_release(ray_release: Path, local_release: Path) -> None:
    """Byte-identical files; the manifest differs only in the executor section of the config it records."""
    got, want = tree_bytes(ray_release), tree_bytes(local_release)
    assert got.keys() == want.keys() and len(got) > 5
    data = lambda tree: {k: v for k, v in tree.items() if k != "manifest.json"}  # noqa: E731
    assert data(got) == data(want)
    m_ray, m_local = json.loads(got["manifest.json"]), json.loads(want["manifest.json"])
    assert m_ray["config"].pop("executor")["ray_address"] and m_local["config"].pop("executor")["name"] == "local"
    assert m_ray == m_local


def test_two_node_cluster_places_embed_on_the_gpu_node_and_releases_as_local(cluster, tmp_path):
    photos = photo_folder(tmp_path / "photos")
    cfg_path = folder_config(tmp_path / "in", photos)
    local = run_curation(load_config(CurateConfig, cfg_path), tmp_path / "local")
    proc = curate_on(cluster, cfg_path, tmp_path / "ray")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    # what each step's tasks were given, as seen inside them: only the second node has a GPU, so the embed tasks
    # (one GPU each, the default where the cluster has GPUs) ran there; the CPU steps hold none
    placed = dict(re.findall(r"(\w+): \d+ tasks on Ray, each given (.*)", out))
    assert "'GPU': 1.0" in placed["embed"] and "GPU ids seen: ['0'])" in placed["embed"]
    for step in ("ingest", "download", "filters", "release"):
        assert "GPU" not in placed[step].split("(")[0] and "GPU ids seen: [])" in placed[step]
    same_release(tmp_path / "ray" / "release", tmp_path / "local" / "release")
    assert json.loads((tmp_path / "ray" / "stats.json").read_text())["embed"]["counts"] == \
        json.loads((tmp_path / "local" / "stats.json").read_text())["embed"]["counts"]
    assert local["release_rows"] > 5


def test_node_killed_mid_shard_is_retried_on_the_surviving_node(cluster, tmp_path, small_web):
    """Both download shards wait on a gated URL, one on each node (one CPU each); the second node is killed (every
    process of it, SIGKILL), then the gate opens. The lost shard runs again on the head, the run says which shard it
    retried, and the release equals the local executor's."""
    gate = threading.Event()
    with GatedWebServer(small_web) as server:
        gated = [GatedRoute(encode(_photo(900 + k), "JPEG"), gate=gate) for k in range(2)]
        routes = {p: r for p, r in small_web.items() if p != "/broken/slow.jpg"}  # (answers after 4 s; not needed)
        routes.update(zip(shard_paths(server.base_url, 2), gated))  # one gated URL per download shard
        server.routes.update(routes)
        # a per-request timeout far above the test's reaction time: a gated download waits, it does not time out
        cfg_path = write_small_inputs(tmp_path / "in", server.base_url, routes, num_shards=2, crawl__timeout=60)
        proc = curate_on(cluster, cfg_path, tmp_path / "ray")
        try:  # a hang guard, not a speed check: both shards are in flight, one per node
            deadline = time.time() + 300
            while not all(server.waiting(r) for r in gated):
                assert proc.poll() is None and time.time() < deadline, "the run ended before the kill"
                time.sleep(0.05)
            lost = cluster.nodes[1]
            killed = {p.pid for p in lost.processes()}
            assert lost.kill() >= 2  # its raylet and daemons, and the worker holding the shard
        finally:
            gate.set()
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-3000:]
        local = load_config(CurateConfig, cfg_path)
        run_curation(local, tmp_path / "local")
    retried = re.findall(r"download: shard (\d) was retried on node \w+: an earlier attempt ended without an outcome "
                         r"\(.*pid (\d+)\)", out)
    assert len(retried) == 1, "\n".join(l for l in out.splitlines() if "download" in l or "etr" in l)
    shard, pid = int(retried[0][0]), int(retried[0][1])
    assert pid in killed  # the earlier attempt ran in a process of the killed node
    log = (tmp_path / "ray" / "download" / f"shard_{shard:05d}.log").read_text()
    assert f"download shard {shard}: retry: an earlier attempt ended without an outcome" in log
    stats = json.loads((tmp_path / "ray" / "stats.json").read_text())["download"]["counts"]
    assert stats["download/retried_shards"] == 1
    same_release(tmp_path / "ray" / "release", tmp_path / "local" / "release")
