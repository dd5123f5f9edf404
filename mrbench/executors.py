"""Executors run a picklable shard task over shard indices, skipping shards already complete.

The local executor uses processes; the Ray executor (``--executor ray``) runs the same tasks on a cluster.
Neither materialises data on the driver: tasks read and write shard files and return small stats.
"""

from __future__ import annotations

import abc
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Protocol, Sequence

from mrbench.config import ExecutorConfig
from mrbench.registry import Registry


class ShardTask(Protocol):
    """A picklable unit of work over one shard index."""

    name: str

    def __call__(self, shard: int) -> None: ...

    def is_done(self, shard: int) -> bool: ...


ProgressFn = Callable[[int], None]


class Executor(abc.ABC):
    """Runs ``task`` for every shard in ``range(num_shards)`` that is not yet complete."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    def pending(self, task: ShardTask, num_shards: int) -> list[int]:
        return [i for i in range(num_shards) if not task.is_done(i)]

    @abc.abstractmethod
    def run(self, task: ShardTask, num_shards: int, progress: ProgressFn | None = None,
            weights: Sequence[int] | None = None) -> list[int]:
        """Run pending shards; returns the indices that ran. ``progress(1)`` is called per finished shard, or
        ``progress(weights[i])`` when the shards' item counts are given (progress in URLs / images, not shards)."""

    def close(self) -> None:
        """Release the workers kept between steps (nothing by default)."""


class LocalExecutor(Executor):
    """Runs shards in this process (workers=1) or in a pool of spawned processes.

    The pool is started at the first step that needs it and kept for the following steps until :meth:`close`:
    workers import their modules once per run, not once per step (a step of cheap shards costs no process starts).
    """

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        self._pool: ProcessPoolExecutor | None = None

    def run(self, task: ShardTask, num_shards: int, progress: ProgressFn | None = None,
            weights: Sequence[int] | None = None) -> list[int]:
        todo = self.pending(task, num_shards)
        if self.config.workers == 1 or len(todo) <= 1:
            for i in todo:
                task(i)
                if progress:
                    progress(weights[i] if weights else 1)
            return todo
        if self._pool is None:
            # spawn: the driver may hold threads (progress bars, torch) that fork would copy in a bad state.
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.config.workers, mp_context=ctx,
                                             initializer=_quiet_interrupt)
        shard_of = {self._pool.submit(task, i): i for i in todo}
        futures = set(shard_of)
        try:
            while futures:
                done, futures = wait(futures, return_when=FIRST_COMPLETED)
                for f in done:
                    f.result()  # re-raise a shard's crash here; finished shards stay complete
                    if progress:
                        progress(weights[shard_of[f]] if weights else 1)
        except BaseException as e:  # Ctrl-C or a crash: start no further shard (a rerun does them)
            pool, self._pool = self._pool, None
            # after a crash the running shards finish (their markers are written); Ctrl-C does not wait for them
            pool.shutdown(wait=not isinstance(e, KeyboardInterrupt), cancel_futures=True)
            raise
        return todo

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class RayExecutor(Executor):
    """Runs shards as Ray tasks, one CPU each, on the cluster at ``executor.ray_address``.

    With no address, a local cluster is started with ``executor.workers`` CPUs (all CPUs when workers is 1), and
    shut down again when the process exits. Tasks are the same picklable shard tasks the local executor runs, so
    they read and write the same shard files and the driver only sees completions. When a task raises, the other
    shards still finish (their markers are written), then the first task's original exception is raised here.
    """

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.config.ray_address:
            ray.init(address=self.config.ray_address, **kwargs)
        else:
            num_cpus = self.config.workers if self.config.workers > 1 else None
            # Tasks return nothing but completions; a small object store keeps a local cluster light.
            ray.init(num_cpus=num_cpus, object_store_memory=128 * 1024 * 1024, **kwargs)

    def run(self, task: ShardTask, num_shards: int, progress: ProgressFn | None = None,
            weights: Sequence[int] | None = None) -> list[int]:
        try:
            import ray
        except ImportError as e:
            raise RuntimeError("executor 'ray' needs ray: pip install 'ray[default]'") from e
        todo = self.pending(task, num_shards)
        if not todo:
            return todo
        self._init()
        remote = ray.remote(num_cpus=1, max_retries=0)(_call_task)
        task_ref = ray.put(task)  # one copy of the task (config) in the object store, shared by every shard
        pending = [remote.remote(task_ref, i) for i in todo]
        shard_of = dict(zip(pending, todo))
        first_error: BaseException | None = None
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done)
            except ray.exceptions.RayTaskError as e:
                # Like the local pool: let the other shards finish (their work is kept), then raise the first error.
                first_error = first_error or e
                continue
            if progress:
                progress(weights[shard_of[done[0]]] if weights else 1)
        if first_error is not None:
            cause = first_error.as_instanceof_cause()  # type: ignore[attr-defined]
            raise (cause.cause if getattr(cause, "cause", None) is not None else cause) from None
        return todo


class Interrupted(SystemExit):
    """Ctrl-C, as an exit with status 130: it unwinds like an exit (context managers close, progress bars stop),
    passes through ``except Exception`` and click, and crosses from a shard worker to the driver like any error."""

    def __init__(self, code: int = 130) -> None:
        super().__init__(code)


def _quiet_interrupt() -> None:
    """Pool workers end at once, without a traceback, on Ctrl-C (the terminal signals the whole process group):
    the driver reports the interruption, and an unfinished shard has no marker, so a rerun redoes it."""
    import os
    import signal

    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def _call_task(task: ShardTask, shard: int) -> None:
    task(shard)


EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register("local", LocalExecutor, help="processes on this machine (default)")
EXECUTORS.register("ray", RayExecutor, help="Ray tasks on a local or remote cluster")


def get_executor(config: ExecutorConfig) -> Executor:
    return EXECUTORS.get(config.name)(config)
