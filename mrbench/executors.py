"""Executors run a picklable shard task over shard indices, skipping shards already complete.

The local executor uses processes; the Ray executor (``--executor ray``) runs the same tasks on a cluster.
Neither materialises data on the driver: tasks read and write shard files and return small stats.

Each step says what one of its tasks needs (:class:`~mrbench.stage.Resources`: CPUs, GPUs, memory): Ray reserves it
per task (so model tasks land on GPU workers and CPU steps hold no GPU); the local executor sizes its pool by it
(a step that takes GPUs runs ``visible GPUs / gpus per task`` workers at most, each pinned to its GPUs).
"""

from __future__ import annotations

import abc
import math
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from mrbench.config import ConfigError, option
from mrbench.log import get_logger
from mrbench.registry import Registry
from mrbench.stage import CPU_TASK, Resources

log = get_logger(__name__)
# Errors of a shard's own code that a retry may cure (network storage, a flaky mount); others are deterministic.
RETRY_EXCEPTIONS = [ConnectionError, TimeoutError]


def _check_executor(value: str) -> str | None:
    names = [e.name for e in EXECUTORS]
    return None if value in names else f"must be one of {', '.join(names)}, got {value!r}"


@dataclass
class ExecutorConfig:
    """Which executor runs the shards.

    Attributes:
        name: A registered executor (``mrbench ls executors``; built in: processes on this machine, the default,
            and Ray), checked against the registry.
        workers: Parallel shard workers (local); for ray, the CPUs of the local cluster it starts when no
            ``ray_address`` is given (1: all CPUs). Ray tasks take one CPU each.
        ray_address: Address for ``ray.init`` (None starts a local cluster).
        cpus_per_task: CPUs one task of a model step (embed) reserves on Ray; the local executor runs at most
            ``cpu_count / cpus_per_task`` such tasks at once. Other steps' tasks take one CPU.
        gpus_per_task: GPUs one task of a model step reserves (fractions share a GPU: 0.5 runs two tasks per GPU);
            None: 1 where the cluster (Ray) or machine (local: ``CUDA_VISIBLE_DEVICES``, else torch's count) has
            GPUs, 0 where it has none. Other steps' tasks take no GPU. Locally, a step that takes GPUs runs
            ``visible GPUs / gpus_per_task`` workers at most, each pinned to its GPU(s).
        memory_per_task_gb: Memory (GiB) one task of a model step reserves on Ray (0: none); Ray places tasks on
            nodes with that much free. Not reserved by the local executor.
        max_retries: Ray retries a shard whose worker process or node was lost this many times, on any node (shards
            are idempotent: output, stats, then marker are written, so a rerun replaces a half-done shard). An
            error raised by the shard's own code is not retried, except ``ConnectionError`` / ``TimeoutError``
            (storage or network blips).
    """

    name: str = option("local", check=_check_executor)
    workers: int = option(1, ge=1)
    ray_address: str | None = None
    cpus_per_task: float = option(1.0, gt=0)
    gpus_per_task: float | None = option(None, ge=0)
    memory_per_task_gb: float = option(0.0, ge=0)
    max_retries: int = option(3, ge=0)


class ShardTask(Protocol):
    """A picklable unit of work over one shard index."""

    name: str

    def __call__(self, shard: int) -> object:
        """Do the shard; may return the start line of an earlier attempt it redid (a retry), else None."""

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
            weights: Sequence[int] | None = None, resources: Resources = CPU_TASK) -> list[int]:
        """Run pending shards, each task with ``resources``; returns the indices that ran. ``progress(1)`` is called
        per finished shard, or ``progress(weights[i])`` when the shards' item counts are given (progress in URLs /
        images, not shards)."""

    def close(self) -> None:
        """Release the workers kept between steps (nothing by default)."""


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set (as CUDA reads it: up to the first invalid
    entry), else every device torch counts (none without torch)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        out = []
        for d in (x.strip() for x in env.split(",")):
            if not d or d.startswith("-"):
                break
            out.append(d)
        return out
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_groups(gpus: Sequence[str], per_task: float, workers: int) -> list[list[str]]:
    """The GPUs of each of ``workers`` pool workers when a task takes ``per_task`` GPUs: whole GPUs each (1, 2,
    ...), or one GPU shared by ``1 / per_task`` workers (0.5: two workers per GPU)."""
    return [list(gpus[math.floor(k * per_task):max(math.ceil((k + 1) * per_task), math.floor(k * per_task) + 1)])
            for k in range(workers)]


class LocalExecutor(Executor):
    """Runs shards in this process (workers=1) or in a pool of spawned processes.

    The pool is started at the first step that needs it and kept for the following steps until :meth:`close`:
    workers import their modules once per run, not once per step (a step of cheap shards costs no process starts).
    A step whose tasks take GPUs gets a pool of its own: ``min(workers, visible GPUs / gpus per task)`` workers,
    each with ``CUDA_VISIBLE_DEVICES`` set to its GPUs; a task taking more than one CPU caps the pool at
    ``cpu_count / cpus`` workers.
    """

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        self._pool: ProcessPoolExecutor | None = None
        self._shape: tuple[int, tuple[tuple[str, ...], ...]] | None = None

    def shape(self, resources: Resources) -> tuple[int, tuple[tuple[str, ...], ...]]:
        """(workers, GPUs of each worker) of the pool for tasks needing ``resources``.

        Raises:
            ConfigError: the tasks ask for GPUs this machine does not have.
        """
        n = self.config.workers
        if resources.cpus > 1:
            n = min(n, max(1, int((os.cpu_count() or 1) // resources.cpus)))
        if resources.gpus == 0:
            return n, ()
        gpus = visible_gpus()
        res = resources.resolve(bool(gpus))
        if not res.gpus:
            return n, ()
        slots = int(len(gpus) / res.gpus + 1e-9)
        if slots < 1:
            raise ConfigError(f"executor.gpus_per_task: {res.gpus:g} GPUs per task, but this machine has "
                              f"{len(gpus)} visible (CUDA_VISIBLE_DEVICES / torch); set executor.gpus_per_task to "
                              f"at most {len(gpus)}")
        n = min(n, slots)
        return n, tuple(tuple(g) for g in gpu_groups(gpus, res.gpus, n))

    def run(self, task: ShardTask, num_shards: int, progress: ProgressFn | None = None,
            weights: Sequence[int] | None = None, resources: Resources = CPU_TASK) -> list[int]:
        todo = self.pending(task, num_shards)
        if not todo:
            return todo
        shape = self.shape(resources)
        if self.config.workers == 1 or len(todo) <= 1:
            for i in todo:
                note_retry(task.name, i, task(i))
                if progress:
                    progress(weights[i] if weights else 1)
            return todo
        if self._pool is not None and self._shape != shape:
            self.close()  # a step with other resources: its own pool (a GPU step's workers pinned to their GPUs)
        if self._pool is None:
            # spawn: the driver may hold threads (progress bars, torch) that fork would copy in a bad state.
            ctx = multiprocessing.get_context("spawn")
            workers, groups = shape
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(ctx.Value("i", 0), groups))
            self._shape = shape
            if groups:
                log.info("%s: %d workers, GPUs %s", task.name, workers, " ".join(",".join(g) for g in groups))
        shard_of = {self._pool.submit(task, i): i for i in todo}
        futures = set(shard_of)
        try:
            while futures:
                done, futures = wait(futures, return_when=FIRST_COMPLETED)
                for f in done:
                    note_retry(task.name, shard_of[f], f.result())  # re-raises a crash; finished shards stay done
                    if progress:
                        progress(weights[shard_of[f]] if weights else 1)
        except BaseException as e:  # Ctrl-C or a crash: start no further shard (a rerun does them)
            pool, self._pool, self._shape = self._pool, None, None
            # after a crash the running shards finish (their markers are written); Ctrl-C does not wait for them
            pool.shutdown(wait=not isinstance(e, KeyboardInterrupt), cancel_futures=True)
            raise
        return todo

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool, self._shape = None, None


class RayExecutor(Executor):
    """Runs shards as Ray tasks on the cluster at ``executor.ray_address``, each task reserving its step's
    resources (one CPU; model steps: ``executor.cpus_per_task`` / ``gpus_per_task`` / ``memory_per_task_gb``).

    With no address, a local cluster is started with ``executor.workers`` CPUs (all CPUs when workers is 1), and
    shut down again when the process exits. Tasks are the same picklable shard tasks the local executor runs, so
    they read and write the same shard files and the driver only sees completions. When a task raises, the other
    shards still finish (their markers are written), then the first task's original exception is raised here.
    A task whose worker process or node is lost is retried (``executor.max_retries`` times, on any node): shards
    are idempotent, and a half-done shard has no marker. ``placements`` records, per step, the resources each task
    was given, as seen from inside the task.
    """

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        self.placements: dict[str, list[dict[str, Any]]] = {}

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

    def options(self, resources: Resources) -> dict[str, Any]:
        """``ray.remote`` options for a task needing ``resources`` on the connected cluster.

        Raises:
            ConfigError: the tasks ask for more GPUs than any live node of the cluster has (Ray would wait forever).
        """
        import ray

        most = max((n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
        res = resources.resolve(most > 0)
        if res.gpus and res.gpus > most:
            raise ConfigError(f"executor.gpus_per_task: {res.gpus:g} GPUs per task, but no node of the Ray cluster "
                              f"has that many (most: {most:g}); add GPU nodes (ray start --num-gpus N) or set "
                              "executor.gpus_per_task lower")
        opts: dict[str, Any] = {"num_cpus": res.cpus, "num_gpus": res.gpus, "max_retries": self.config.max_retries,
                                "retry_exceptions": RETRY_EXCEPTIONS}
        if res.memory_gb:
            opts["memory"] = int(res.memory_gb * 2**30)
        return opts

    def run(self, task: ShardTask, num_shards: int, progress: ProgressFn | None = None,
            weights: Sequence[int] | None = None, resources: Resources = CPU_TASK) -> list[int]:
        try:
            import ray
        except ImportError as e:
            raise RuntimeError("executor 'ray' needs ray: pip install 'ray[default]'") from e
        todo = self.pending(task, num_shards)
        if not todo:
            return todo
        self._init()
        remote = ray.remote(_call_task).options(**self.options(resources))
        task_ref = ray.put(task)  # one copy of the task (config) in the object store, shared by every shard
        pending = [remote.remote(task_ref, i) for i in todo]
        shard_of = dict(zip(pending, todo))
        placed = self.placements.setdefault(task.name, [])
        first_error: BaseException | None = None
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                placed.append(ray.get(done[0]))
            except ray.exceptions.RayTaskError as e:
                # Like the local pool: let the other shards finish (their work is kept), then raise the first error.
                first_error = first_error or e
                continue
            if progress:
                progress(weights[shard_of[done[0]]] if weights else 1)
        if first_error is not None:
            cause = first_error.as_instanceof_cause()  # type: ignore[attr-defined]
            raise (cause.cause if getattr(cause, "cause", None) is not None else cause) from None
        if placed:
            log.info("%s: %d tasks on Ray, each given %s (GPU ids seen: %s) on nodes %s", task.name, len(placed),
                     placed[-1]["resources"], sorted({g for p in placed for g in p["gpu_ids"]}),
                     " ".join(sorted({p["node"][:8] for p in placed})))
        for p in placed:  # shards Ray ran again after their worker process or node was lost
            note_retry(task.name, p["shard"], p["retry_of"], f" on node {p['node'][:8]}")
        return todo


def note_retry(step: str, shard: int, earlier: object, where: str = "") -> None:
    """Warn that ``shard`` was retried when its task returned the start line of an earlier attempt that ended without
    an outcome (a lost worker process or node, a killed run)."""
    if isinstance(earlier, str):
        log.warning("%s: shard %d was retried%s: an earlier attempt ended without an outcome (%s)", step, shard,
                    where, earlier)


class Interrupted(SystemExit):
    """Ctrl-C, as an exit with status 130: it unwinds like an exit (context managers close, progress bars stop),
    passes through ``except Exception`` and click, and crosses from a shard worker to the driver like any error."""

    def __init__(self, code: int = 130) -> None:
        super().__init__(code)


def _init_worker(counter: Any, groups: tuple[tuple[str, ...], ...]) -> None:
    """A pool worker: pinned to its GPUs (the ``k``-th worker started takes ``groups[k]``), and quiet on Ctrl-C."""
    if groups:
        with counter.get_lock():
            k = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(groups[k % len(groups)])
    _quiet_interrupt()


def _quiet_interrupt() -> None:
    """Pool workers end at once, without a traceback, on Ctrl-C (the terminal signals the whole process group):
    the driver reports the interruption, and an unfinished shard has no marker, so a rerun redoes it."""
    import signal

    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


def _call_task(task: ShardTask, shard: int) -> dict[str, Any]:
    """Run one shard on a Ray worker; returns what the task was given (resources, GPU ids, node), as seen there, and
    the earlier attempt it redid (``retry_of``: a lost worker or node), if any."""
    import ray

    earlier = task(shard)
    ctx = ray.get_runtime_context()
    return {"resources": ctx.get_assigned_resources(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "node": ctx.get_node_id(), "shard": shard, "retry_of": earlier if isinstance(earlier, str) else None}


EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register("local", LocalExecutor, help="processes on this machine (default)")
EXECUTORS.register("ray", RayExecutor, help="Ray tasks on a local or remote cluster")


def get_executor(config: ExecutorConfig) -> Executor:
    return EXECUTORS.get(config.name)(config)
