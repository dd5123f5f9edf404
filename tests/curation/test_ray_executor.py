"""The Ray executor runs the same shards and stages as the local one and gives the same release, byte for byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mrbench.config import ConfigError, load_config
from mrbench.curation.config import CurateConfig
from mrbench.executors import ExecutorConfig
from mrbench.curation.pipeline import run_curation
from mrbench.executors import RayExecutor, get_executor
from mrbench.stage import Resources
from visual_fixtures import folder_config, photo_folder

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs and one GPU resource (no GPU is needed: Ray hands out the GPU id it was told
    of, so placement is checked from inside the tasks), shut down after the module."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, object_store_memory=128 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def by_value():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module


class MarkTask:
    """Writes a marker per shard; shard 0 crashes its worker process the first time (a lost worker or node)."""

    name = "mark"

    def __init__(self, folder: str, crash_once: bool = False) -> None:
        self.folder, self.crash_once = folder, crash_once

    def is_done(self, shard: int) -> bool:
        return (Path(self.folder) / f"{shard}.done").exists()

    def __call__(self, shard: int) -> None:
        import os

        attempt = Path(self.folder) / f"{shard}.attempts"
        attempt.write_text(attempt.read_text() + "x" if attempt.exists() else "x")
        if self.crash_once and shard == 0 and attempt.read_text() == "x":
            os._exit(1)  # the worker process dies mid-shard, as on a lost node: no marker is written
        (Path(self.folder) / f"{shard}.done").write_text("")


class FailingTask:
    """Shard 1 raises a named error; the others complete."""

    name = "failing"

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def is_done(self, shard: int) -> bool:
        return (Path(self.folder) / f"{shard}.done").exists()

    def __call__(self, shard: int) -> None:
        if shard == 1:
            raise ValueError("shard 1 is broken")
        (Path(self.folder) / f"{shard}.done").write_text("")


def test_ray_release_equals_local_release(ray_cluster, tmp_path, caplog):
    """Same shards, same stages (embed with mobilenet_v2 on the workers, filters, dedup, refinement, audit):
    the release written through a local 2-CPU Ray cluster is byte-identical to the local executor's."""
    photos = photo_folder(tmp_path / "photos")
    cfg_path = folder_config(tmp_path / "in", photos)
    local = load_config(CurateConfig, cfg_path)
    on_ray = load_config(CurateConfig, cfg_path, ["executor.name=ray", "executor.workers=2"])
    s_local = run_curation(local, tmp_path / "local")
    with caplog.at_level("INFO", logger="mrbench.executors"):
        s_ray = run_curation(on_ray, tmp_path / "ray")
    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2
    # what each step's tasks were given, as seen from inside them: the embed tasks one GPU, the others none
    placed = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records if "tasks on Ray" in r.getMessage()}
    assert "'GPU': 1.0" in placed["embed"] and "GPU ids seen: ['0']) on nodes" in placed["embed"]
    for step in ("ingest", "download", "filters", "release"):
        assert "GPU" not in placed[step].split("given")[1].split("(")[0] and "seen: []) on nodes" in placed[step]
    assert s_ray["rows_per_status"] == s_local["rows_per_status"]
    assert s_local["release_rows"] == 21 and s_local["drops_per_reason"]["near_duplicate"] == 1
    got, want = tree_bytes(tmp_path / "ray" / "release"), tree_bytes(tmp_path / "local" / "release")
    assert got.keys() == want.keys() and len(got) > 5
    assert {k: v for k, v in got.items() if k != "manifest.json"} == {k: v for k, v in want.items() if k != "manifest.json"}
    # the manifest records the config it was made with; apart from the executor section it is the same
    m_ray, m_local = json.loads(got["manifest.json"]), json.loads(want["manifest.json"])
    assert m_ray["config"].pop("executor")["name"] == "ray"
    m_local["config"].pop("executor")
    assert m_ray == m_local
    for step in ("download", "embed", "filters"):  # every shard of every sharded step ran and finished
        assert len(list((tmp_path / "ray" / step).glob("*.done"))) == local.num_shards


def test_ray_task_error_is_reraised_and_finished_shards_stay_done(ray_cluster, by_value, tmp_path):
    ex = get_executor(ExecutorConfig(name="ray", workers=2))
    assert isinstance(ex, RayExecutor)
    task = FailingTask(str(tmp_path))
    with pytest.raises(ValueError, match="shard 1 is broken"):
        ex.run(task, 3)
    assert task.is_done(0) and task.is_done(2) and not task.is_done(1)  # the others finished and stay done
    assert ex.pending(task, 3) == [1]


def test_ray_tasks_get_their_steps_resources(ray_cluster, by_value, tmp_path):
    """A model step's tasks hold the GPU (asked for, or by default where the cluster has one); CPU steps hold none;
    a task asking for more GPUs than any node has fails at once instead of waiting forever."""
    ex = get_executor(ExecutorConfig(name="ray", workers=2))
    (tmp_path / "gpu").mkdir()
    ex.run(MarkTask(str(tmp_path / "gpu")), 2, resources=Resources(cpus=1, gpus=None, memory_gb=0.0625))
    gpu = ex.placements.pop("mark")
    assert len(gpu) == 2 and all(p["gpu_ids"] == ["0"] and p["resources"] == {"CPU": 1.0, "GPU": 1.0, "memory": 2**26} for p in gpu)
    (tmp_path / "cpu").mkdir()
    ex.run(MarkTask(str(tmp_path / "cpu")), 2, resources=Resources())
    cpu = ex.placements.pop("mark")
    assert len(cpu) == 2 and all(p["gpu_ids"] == [] and p["resources"] == {"CPU": 1.0} for p in cpu)
    assert ex.options(Resources(gpus=0.5, memory_gb=1))["memory"] == 2**30
    with pytest.raises(ConfigError, match="no node of the Ray cluster has that many"):
        ex.run(MarkTask(str(tmp_path)), 1, resources=Resources(gpus=2))


def test_ray_retries_a_shard_whose_worker_was_lost(ray_cluster, by_value, tmp_path):
    """Shard 0's worker process dies mid-shard; the shard runs again (max_retries) and every shard completes.
    Without retries the run fails with Ray's worker-crash error."""
    (tmp_path / "none").mkdir()
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        get_executor(ExecutorConfig(name="ray", max_retries=0)).run(MarkTask(str(tmp_path / "none"), True), 2)
    (tmp_path / "retry").mkdir()
    task = MarkTask(str(tmp_path / "retry"), crash_once=True)
    assert ExecutorConfig().max_retries > 0
    get_executor(ExecutorConfig(name="ray")).run(task, 2)
    assert task.is_done(0) and task.is_done(1)
    assert (tmp_path / "retry" / "0.attempts").read_text() == "xx"  # the lost attempt, then the retry
