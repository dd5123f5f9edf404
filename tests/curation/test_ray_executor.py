"""The Ray executor runs the same shards and stages as the local one and gives the same release, byte for byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mrbench.config import CurateConfig, ExecutorConfig, load_config
from mrbench.curation.pipeline import run_curation
from mrbench.executors import RayExecutor, get_executor
from visual_fixtures import folder_config, photo_folder

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray cluster, started by the executor itself and shut down after the module."""
    if ray.is_initialized():
        ray.shutdown()
    yield
    ray.shutdown()


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


def test_ray_release_equals_local_release(ray_cluster, tmp_path):
    """Same shards, same stages (embed with mobilenet_v2 on the workers, filters, dedup, refinement, audit):
    the release written through a local 2-CPU Ray cluster is byte-identical to the local executor's."""
    photos = photo_folder(tmp_path / "photos")
    cfg_path = folder_config(tmp_path / "in", photos)
    local = load_config(CurateConfig, cfg_path)
    on_ray = load_config(CurateConfig, cfg_path, ["executor.name=ray", "executor.workers=2"])
    s_local = run_curation(local, tmp_path / "local")
    s_ray = run_curation(on_ray, tmp_path / "ray")
    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2
    assert s_ray["rows_per_status"] == s_local["rows_per_status"]
    assert s_local["release_rows"] == 21 and s_local["drops_per_reason"]["near_duplicate"] == 1
    got, want = tree_bytes(tmp_path / "ray" / "release"), tree_bytes(tmp_path / "local" / "release")
    assert got.keys() == want.keys() and len(got) > 5
    assert {k: v for k, v in got.items() if k != "manifest.json"} == {k: v for k, v in want.items() if k != "manifest.json"}
    # the manifest records the config it was made with; apart from the executor section it is the same
    m_ray, m_local = json.loads(got["manifest.json"]), json.loads(want["manifest.json"])
    assert m_ray["config"].pop("executor") == {"name": "ray", "workers": 2, "ray_address": None}
    m_local["config"].pop("executor")
    assert m_ray == m_local
    for step in ("download", "embed", "filters"):  # every shard of every sharded step ran and finished
        assert len(list((tmp_path / "ray" / step).glob("*.done"))) == local.num_shards


def test_ray_task_error_is_reraised_and_finished_shards_stay_done(ray_cluster, tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    ex = get_executor(ExecutorConfig(name="ray", workers=2))
    assert isinstance(ex, RayExecutor)
    task = FailingTask(str(tmp_path))
    with pytest.raises(ValueError, match="shard 1 is broken"):
        ex.run(task, 3)
    assert task.is_done(0) and task.is_done(2) and not task.is_done(1)  # the others finished and stay done
    assert ex.pending(task, 3) == [1]
