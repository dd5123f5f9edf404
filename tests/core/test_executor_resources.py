"""The local executor sizes its pool by what a step's task needs: a step taking GPUs gets at most
``visible GPUs / gpus per task`` workers, each pinned to its own GPU(s) through ``CUDA_VISIBLE_DEVICES``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mrbench.config import ConfigError
from mrbench.executors import ExecutorConfig
from mrbench.executors import LocalExecutor, gpu_groups, visible_gpus
from mrbench.stage import Resources


class EnvTask:
    """Records, per shard, the worker's pid and the GPUs it may use."""

    name = "env"

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def is_done(self, shard: int) -> bool:
        return (Path(self.folder) / f"{shard}.txt").exists()

    def __call__(self, shard: int) -> None:
        (Path(self.folder) / f"{shard}.txt").write_text(f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES')}")


def test_gpu_groups_give_whole_or_shared_gpus() -> None:
    gpus = ["0", "1", "2", "3"]
    assert gpu_groups(gpus, 1, 4) == [["0"], ["1"], ["2"], ["3"]]
    assert gpu_groups(gpus, 2, 2) == [["0", "1"], ["2", "3"]]
    assert gpu_groups(gpus[:2], 0.5, 4) == [["0"], ["0"], ["1"], ["1"]]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")  # CUDA stops at the first invalid entry
    assert visible_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_pool_shape_follows_the_steps_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    ex = LocalExecutor(ExecutorConfig(workers=4))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert ex.shape(Resources()) == (4, ())  # a CPU step: every worker, no GPU asked
    assert ex.shape(Resources(gpus=None)) == (2, (("0",), ("1",)))  # default: one GPU per task where there are GPUs
    assert ex.shape(Resources(gpus=0.5)) == (4, (("0",), ("0",), ("1",), ("1",)))
    assert ex.shape(Resources(gpus=2)) == (1, (("0", "1"),))
    assert ex.shape(Resources(cpus=(os.cpu_count() or 1) * 2)) == (1, ())  # a task wanting more cores than there are
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert ex.shape(Resources(gpus=None)) == (4, ())  # no GPU here: the model step runs on the CPU workers
    with pytest.raises(ConfigError, match="executor.gpus_per_task: 1 GPUs per task, but this machine has 0 visible"):
        ex.shape(Resources(gpus=1))


def test_gpu_step_workers_are_pinned_to_their_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With 2 visible GPUs and 4 workers asked for, a GPU step runs on 2 workers, one per GPU; the CPU step after
    it gets a pool of its own again."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    ex = LocalExecutor(ExecutorConfig(workers=4))
    try:
        (tmp_path / "gpu").mkdir()
        assert ex.run(EnvTask(str(tmp_path / "gpu")), 6, resources=Resources(gpus=1)) == list(range(6))
        seen = [p.read_text().split() for p in sorted((tmp_path / "gpu").glob("*.txt"))]
        device_of = {pid: dev for pid, dev in seen}
        assert len(seen) == 6 and len(device_of) <= 2
        assert all(device_of[pid] == dev for pid, dev in seen)  # a worker keeps its GPU
        assert set(device_of.values()) <= {"0", "1"} and len(set(device_of.values())) == len(device_of)
        (tmp_path / "cpu").mkdir()
        ex.run(EnvTask(str(tmp_path / "cpu")), 2, resources=Resources())
        cpu = [p.read_text().split() for p in sorted((tmp_path / "cpu").glob("*.txt"))]
        assert {dev for _, dev in cpu} == {"0,1"} and not {pid for pid, _ in cpu} & set(device_of)
    finally:
        ex.close()
