"""Eval across workers: each worker takes a deterministic slice of the requests, writes its own rows file, and the
last one to finish merges them into the run folder's ``samples.jsonl`` and ``summary.json``.

Two ways to start workers, one mechanism underneath:

* ``mrbench eval ... --workers N`` on one machine: the command validates everything (names, weights, benchmark)
  once, starts ranks ``1..N-1`` as child processes (``python -m mrbench.evaluation.worker``), works as rank 0
  itself, waits for the children and merges. With GPUs, worker ``r`` sees only GPU ``r mod #GPUs``
  (``CUDA_VISIBLE_DEVICES``), so each model lives on its own device.
* ``mrbench eval ... --rank R --world-size N`` from any launcher (``torchrun``, Slurm ``srun``, a loop over ssh):
  every process runs its slice; whichever finishes last finds every row present and merges. Under ``torchrun``
  ``LOCAL_RANK`` picks the GPU.

Why files and ranks rather than Ray or ``torch.distributed``: a worker needs nothing from another worker (every
request has its own seed and ``torch.Generator``), so no collective communication and no scheduler is needed; a
shared run folder is the only contract, which holds on one machine, on a Slurm allocation and under ``torchrun``
alike, and the rows files already are the resume mechanism. The slice is by *batch* of the canonical request list
(batch ``b`` goes to rank ``b mod N``), so every batch a worker generates is the batch a single worker would have
generated: images and metric values do not even depend on batch-size-sensitive kernels. Workers keep torch's
default thread count on purpose: CPU kernels reduce in a thread-count-dependent order, and splitting the cores
between two workers (one thread each instead of two) changed 4 of 12 tiny-model images in a measurement.

Resume: rows are appended (fsync per row) as they are made; a rerun -- with any number of workers -- reads the
rows of every rows file as done and generates only the missing ones. The merge runs under an exclusive lock on
``RUN_DIR/.merge.lock`` so two workers finishing at once cannot interleave; rows files are removed only after
``samples.jsonl`` is written.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from mrbench.evaluation.config import EvalConfig
from mrbench.evaluation.results import SAMPLES_FILE, read_jsonl

ROWS_GLOB = "samples.partial*.jsonl"
SINGLE_ROWS_FILE = "samples.partial.jsonl"
LOCK_FILE = ".merge.lock"
WORKER_FIELDS = ("workers", "rank", "world_size")  # how a run is spread; not part of what it computes


class WorkerError(RuntimeError):
    """A worker process exited without finishing its slice (its finished rows are kept)."""


def worker_of(cfg: EvalConfig) -> tuple[int, int]:
    """``(rank, world_size)`` of this process: the launcher's, or rank 0 of ``workers``."""
    if cfg.rank is not None and cfg.world_size is not None:
        return cfg.rank, cfg.world_size
    return 0, cfg.workers


def rows_file(rank: int, world: int) -> str:
    """Name of the rows file a worker appends to (a single worker keeps the historical name)."""
    return SINGLE_ROWS_FILE if world == 1 else f"samples.partial.rank{rank}-of-{world}.jsonl"


def rows_files(run_dir: Path) -> list[Path]:
    """Every rows file in ``run_dir`` (from any earlier worker layout too), in a fixed order."""
    return sorted(run_dir.glob(ROWS_GLOB))


def in_slice(index: int, batch_size: int, rank: int, world: int) -> bool:
    """Whether request ``index`` of the canonical request list belongs to ``rank``: whole batches, round robin."""
    return (index // batch_size) % world == rank


def config_fields(cfg: EvalConfig) -> dict[str, Any]:
    """``cfg`` as recorded in ``config.json``: without the worker layout, so every layout writes the same file."""
    return {k: v for k, v in asdict(cfg).items() if k not in WORKER_FIELDS}


def select_device(rank: int, world: int) -> None:
    """Under ``torchrun`` (``LOCAL_RANK`` set) make that GPU the current CUDA device; otherwise leave devices alone
    (children started by :func:`spawn` see one GPU each through ``CUDA_VISIBLE_DEVICES``)."""
    local = os.environ.get("LOCAL_RANK")
    if world <= 1 or local is None:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(local) % torch.cuda.device_count())


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip()]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def spawn(cfg: EvalConfig, world: int, log_dir: Path) -> list[tuple[int, subprocess.Popen, Path]]:
    """Start ranks ``1..world-1`` of ``cfg`` as child processes (rank 0 is the caller); each child's output goes
    to ``log_dir/worker-R.log``. With GPUs, rank ``r`` sees GPU ``r mod #GPUs`` only (rank 0, the caller, keeps
    its default device: the first visible GPU)."""
    gpus = _visible_gpus()
    children = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(1, world):
        env = dict(os.environ, **{SPAWNED_ENV: "1"})
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[rank % len(gpus)]
        child = replace(cfg, workers=1, rank=rank, world_size=world)
        log_path = log_dir / f"worker-{rank}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mrbench.evaluation.worker",
                                     json.dumps(asdict(child))], stdout=log, stderr=subprocess.STDOUT, env=env)
        children.append((rank, proc, log_path))
        atexit.register(_stop, proc)  # the caller died of an exception: its workers do not outlive it
    return children


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait()


def wait(children: list[tuple[int, subprocess.Popen, Path]]) -> list[str]:
    """Wait for every child; one line per child that failed (empty when all finished)."""
    failed = []
    for rank, proc, log_path in children:
        code = proc.wait()
        if code != 0:
            failed.append(f"worker {rank} exited with code {code} (log: {log_path})")
    return failed


@contextmanager
def merge_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive lock on ``run_dir/.merge.lock`` (POSIX advisory lock; also across nodes on file systems that
    support ``flock``)."""
    with open(run_dir / LOCK_FILE, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def collect_rows(run_dir: Path, keys: list[str], done: dict[str, dict[str, Any]], own: dict[str, dict[str, Any]],
                 reusable: Callable[[dict[str, Any]], bool], key_of: Callable[[dict[str, Any]], str],
                 model: str) -> list[dict[str, Any]] | None:
    """The rows of ``keys`` in order, or None while some worker's rows are still missing.

    Sources, later ones winning (except that a failed row never replaces an ok one): ``done`` (rows reusable when
    this worker started), ``samples.jsonl`` (another worker merged already), every rows file (other workers' rows of this run, failed ones included), ``own`` (this
    worker's rows)."""
    rows = dict(done)
    rows.update((key_of(r), r) for r in read_jsonl(run_dir / SAMPLES_FILE) if reusable(r))  # merged already
    for path in rows_files(run_dir):
        for r in read_jsonl(path):
            if r.get("model") != model or ("sample_id" not in r) or ("seed" not in r):
                continue
            if r.get("status") == "ok" and not reusable(r):
                continue  # scored with another metric set: not this run's row
            k = key_of(r)
            if r.get("status") != "ok" and rows.get(k, {}).get("status") == "ok":
                continue
            rows[k] = r
    rows.update(own)
    if any(k not in rows for k in keys):
        return None
    return [rows[k] for k in keys]


def timing_file(rank: int, world: int) -> str:
    """Name of the file holding one worker's timing until the merge folds it into ``timing.json``."""
    return f"timing.rank{rank}-of-{world}.json"


def take_worker_timings(run_dir: Path) -> dict[str, Any]:
    """The per-worker timings in ``run_dir`` (``rankR-of-N`` -> timing), removing their files."""
    workers = {}
    for path in sorted(run_dir.glob("timing.rank*-of-*.json")):
        try:
            workers[path.stem.removeprefix("timing.")] = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        path.unlink(missing_ok=True)
    return workers


def merge_timing(timing: dict[str, Any], workers: dict[str, Any]) -> None:
    """Put the per-worker ``workers`` timings into ``timing`` and their image counts and seconds into its totals
    (wall time stays the merging worker's: the workers ran side by side)."""
    timing["workers"] = workers
    for key in ("generated_images", "cached_images", "generate_s", "metrics_s"):
        timing[key] = sum(w.get(key, 0) for w in workers.values())


SPAWNED_ENV = "MRBENCH_EVAL_SPAWNED_WORKER"


def is_spawned_child() -> bool:
    """Whether this process is a worker started by :func:`spawn` (its parent merges, not it)."""
    return os.environ.get(SPAWNED_ENV) == "1"
