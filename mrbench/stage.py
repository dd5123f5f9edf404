"""Stage contracts, and the curation pipeline as data.

A stage is a lazy generator over records; a filter only answers keep or drop-with-reason. Heavy resources (models,
servers) are created lazily inside :meth:`Stage.run`, never in ``__init__``, so stages stay picklable for any
executor. Failed records keep flowing (with their status) so every input ends as a row.

The pipeline is the list of :class:`Step` specs registered in :data:`STAGES` (built-ins in ``mrbench.curation``,
third parties through the ``mrbench.stages`` entry-point group), ordered by what each runs after
(:func:`pipeline_steps`). What is registered is what runs:

* a :class:`Step` is a step of the run, and the one place its identity is spelled: name, folder and file prefix
  (the run layout's paths derive from it), the config keys and input files it reads (its fingerprint), the steps
  whose files it reads, its drop reasons and what one task needs. It is sharded (a :class:`ShardedStep` class,
  built with its Step by :meth:`Step.task`: the base owns the completion marker, per-shard stats and logs; the
  executor skips shards that are done) or global (a function ``fn(config, run_dir) -> Stats`` run by
  :func:`run_global_step`, which owns skip-if-done, the stats file and the marker);
* a :class:`Filter` subclass runs inside the step that runs filters (``filters``) over every ok image of each
  download shard, in registration order, built-in filters included: re-registering a name replaces that filter;
  its drops land in ``filters/`` (then ``rejects/``) and its counters in ``stats.json``.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator

from mrbench import storage
from mrbench.layout import RunLayout
from mrbench.log import get_logger, shard_log, unfinished_attempt
from mrbench.progress import reporting
from mrbench.records import ImageRecord
from mrbench.registry import STAGES, Entry, Registry
from mrbench.shards import ShardSet, atomic_write_text, write_parquet_atomic
from mrbench.stats import Stats

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger(__name__)


class Stage(abc.ABC):
    """A streaming step over records."""

    name: str = "stage"

    def __init__(self) -> None:
        self.stats = Stats()

    @abc.abstractmethod
    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        """Yield every input record (ok or failed), in order, possibly changed."""

    def __call__(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        return self.run(records)


class Filter(Stage):
    """A stage that keeps or drops ok records; dropped records are yielded with their reason as status.

    Registered in :data:`STAGES`, a filter runs in the ``filters`` step of every curation run (see
    :meth:`for_shard`), built-in filters the same way; its ``name`` is the name it is registered under (and the
    prefix of its counters); ``reasons`` names the drop reasons it gives, which the CLI, report and card file under
    ``label``.
    """

    reasons: ClassVar[tuple[str, ...]] = ()
    label: ClassVar[str] = "filters"
    # The config keys the filter reads (as :attr:`Step.settings`); None: every setting but the free ones.
    settings: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def from_config(cls, config: Any) -> "Filter | None":
        """The filter for a curation run (``config`` is its ``CurateConfig``), or None to stay off in this run."""
        return cls()

    @classmethod
    def for_shard(cls, config: Any, shard: Any) -> "Filter | None":
        """The filter for one download shard, or None to stay off for it; ``shard`` gives what earlier steps wrote
        for the shard (``mrbench.curation.filters.ShardInputs``: its embeddings, faces, detections, safety scores).
        By default :meth:`from_config`."""
        return cls.from_config(config)

    @abc.abstractmethod
    def check(self, record: ImageRecord) -> str | None:
        """Return None to keep ``record``, or a named drop reason."""

    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        for r in records:
            if r.ok:
                reason = self.check(r)
                if reason is None:
                    self.stats.inc(f"{self.name}/kept")
                else:
                    r.fail(reason, r.error_message)
                    self.stats.inc(f"{self.name}/dropped/{reason}")
            yield r


def _always(config: Any) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one task of a sharded step needs: the executors reserve it per task.

    Attributes:
        cpus: CPU cores (Ray's ``num_cpus``; fractions share a core).
        gpus: GPUs (Ray's ``num_gpus``; fractions share a GPU); None: one GPU per task where the cluster or machine
            has GPUs, none where it has none (the executor decides).
        memory_gb: Memory reserved per task in GiB (Ray's ``memory``; 0 reserves none). The local executor does not
            reserve memory.
    """

    cpus: float = 1.0
    gpus: float | None = 0.0
    memory_gb: float = 0.0

    def resolve(self, have_gpus: bool) -> "Resources":
        """These resources with ``gpus`` decided: None becomes 1 when GPUs are present, else 0."""
        if self.gpus is not None:
            return self
        return dataclasses.replace(self, gpus=1.0 if have_gpus else 0.0)


CPU_TASK = Resources()


def _one_cpu(config: Any) -> Resources:
    return CPU_TASK


def model_resources(config: Any) -> Resources:
    """A model step's task needs: ``executor.cpus_per_task``, ``executor.gpus_per_task`` and
    ``executor.memory_per_task_gb`` of the run's config."""
    ex = config.executor
    return Resources(cpus=ex.cpus_per_task, gpus=ex.gpus_per_task, memory_gb=ex.memory_per_task_gb)


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of the curation pipeline, as data.

    Attributes:
        name: Registry name; also the step's folder and its key in ``stats.json`` (:class:`~mrbench.layout.RunLayout`).
        run: A :class:`ShardedStep` subclass, or a global step ``fn(config, run_dir) -> Stats`` (run by :func:`run_global_step`).
        after: The step this one runs after ("" for the first). A contributed step runs right after it, before the
            built-in step that follows it; contributed steps after one step run in registration order.
        reads: The steps whose files it reads; the first one's shard rows drive the progress bar of a sharded step.
        enabled: Whether it runs for a config (``fn(config) -> bool``).
        unit: What a sharded step's progress bar counts ("files" counts shards).
        drops: (label, drop reasons) pairs: the reasons whose rows this step drops, under the label the summary and
            report show them (``mrbench curate``'s table).
        frees_models: Close the executor after this step: its workers hold models the next steps do not need.
        settings: The config keys the step reads (dotted; a section name covers its keys), recorded in its
            completion markers (:mod:`mrbench.fingerprint`): a change redoes the step and every step after it.
            None (a contributed step that does not say) records every setting but the free ones.
        inputs: ``fn(config) -> dict`` naming the identities of files outside the run folder the step reads (a
            file's sha256, sizes and times), recorded beside its settings.
        resources: ``fn(config) -> Resources``: what one task of a sharded step needs (one CPU, no GPU by default;
            model steps: :func:`model_resources`). Ray reserves it per task; the local executor sizes its pool by it.
        folder: The folder it writes in the run folder ("" : its name).
        prefix: A sharded step's file names: ``{prefix}_{i:05d}{suffix}`` (+ ``.stats.json``, ``.done``).
        suffix: See ``prefix``.
        owns: Other folders of the run only this step writes (removed with its outputs when it is redone).
        marker: A global step's completion marker, relative to the run folder, when not ``_SUCCESS`` in its folder;
            its log is then beside it (``.log``) and it keeps no stats of its own.
        parts: (name, help) of the parts it runs itself, for ``mrbench ls stages``: not registered, not replaceable
            one by one (replace the step).
        runs_filters: It runs every registered :class:`Filter`; their reasons are its drops (under each filter's
            ``label``).
    """

    name: str
    run: Any
    after: str = ""
    reads: tuple[str, ...] = ()
    enabled: Callable[[Any], bool] = _always
    unit: str = "rows"
    drops: tuple[tuple[str, tuple[str, ...]], ...] = ()
    frees_models: bool = False
    settings: tuple[str, ...] | None = None
    inputs: Callable[[Any], dict[str, Any]] | None = None
    resources: Callable[[Any], Resources] = _one_cpu
    folder: str = ""
    prefix: str = "shard"
    suffix: str = ".parquet"
    owns: tuple[str, ...] = ()
    marker: str = ""
    parts: tuple[tuple[str, str], ...] = ()
    runs_filters: bool = False

    def __post_init__(self) -> None:
        if not self.folder:
            object.__setattr__(self, "folder", self.name)

    def task(self, config: Any, run_dir: str | Path) -> "ShardedStep":
        """The task of a sharded step for a run (it carries this Step: its name, paths and inputs)."""
        if not self.sharded:
            raise TypeError(f"step {self.name!r} is global: run it with run_global_step")
        return self.run(config, run_dir, self)

    @property
    def sharded(self) -> bool:
        return isinstance(self.run, type) and issubclass(self.run, ShardedStep)

    @property
    def kind(self) -> str:
        return "sharded" if self.sharded else "global"


class ShardedStep(abc.ABC):
    """A step run shard by shard by an executor: subclasses implement :meth:`process` (their work) only.

    The base owns the rest, the same for every step: the output shard set (from the run layout, by its
    :class:`Step`), ``is_done`` (the executor skips complete shards), and after the work the output, then the shard's
    stats, then its completion marker, in that order; the shard's log file (:meth:`ShardSet.log_path`: start,
    warnings, outcome). Build one with :meth:`Step.task`.

    Args:
        config: The run's ``CurateConfig``.
        run_dir: The run folder.
        step: Its step (name, folder and prefix, the steps it reads).
    """

    def __init__(self, config: Any, run_dir: str | Path, step: Step) -> None:
        self.config = RunLayout(run_dir).with_shard_count(config)  # the shard count selection chose, once it ran
        self.run_dir = str(run_dir)  # a plain string pickles to any executor
        self.step = step
        # What each completion marker records (:mod:`mrbench.fingerprint`); set by the pipeline before the run.
        self.marker = ""
        # The run folder's URL when it lives in object storage (run_dir is then its local staging folder): each
        # task fetches the files it lacks and uploads its shard's files, marker last (:mod:`mrbench.storage`).
        self.store = ""

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def shards(self) -> ShardSet:
        """Outputs, stats and markers of this step's shards."""
        return self.layout.shards(self.step)

    @classmethod
    def num_shards(cls, config: Any) -> int:
        """How many shards the step has (the run's ``num_shards`` unless the step says otherwise)."""
        return config.num_shards

    def is_done(self, shard: int) -> bool:
        return self.shards.is_done(shard)

    def bind(self, executor: Any) -> None:
        """Take what the task shares with the other workers of the executor that runs it (such as
        :meth:`~mrbench.executors.Executor.shared_slots`), before the run; nothing by default. What it keeps must
        pickle to the executor's workers."""

    def __call__(self, shard: int) -> str | None:
        """Do shard ``shard`` (again, when called directly) and mark it complete.

        Returns:
            The start line of an earlier attempt of this shard that ended without an outcome (its worker process or
            node was lost, or the run was killed), when this call redoes one: the retry is noted in the shard's log
            and counted in its stats (``<step>/retried_shards``); None otherwise.
        """
        started = time.time_ns()
        if self.store:
            storage.pull(self.store, Path(self.run_dir), shard=shard)
        earlier = unfinished_attempt(self.shards.log_path(shard))
        with shard_log(self.shards.log_path(shard), f"{self.name} shard {shard}") as note, \
                reporting(self.shards.progress_path(shard)):
            if earlier:
                note(f"{self.name} shard {shard}: retry: an earlier attempt ended without an outcome ({earlier})")
            table, stats = self.process(shard)
            if earlier:
                stats.inc(f"{self.name}/retried_shards")
            if table is not None:
                write_parquet_atomic(table, self.shards.output(shard))
            note(f"{self.name} shard {shard}: done {json.dumps(dict(stats.counts), sort_keys=True)}")
        self.shards.complete(shard, stats, self.marker)
        if self.store:
            storage.push_shard(Path(self.run_dir), self.store, shard, started)
        log.debug("%s: shard %d done (%s)", self.name, shard, dict(stats.counts))
        return earlier

    @abc.abstractmethod
    def process(self, shard: int) -> "tuple[pa.Table | None, Stats]":
        """Do the work of one shard; return its output table (written by the base to ``shards.output(shard)``), or
        None when the step wrote its own files, and its stats."""


def run_global_step(step: Step, config: Any, run_dir: str | Path, marker: str = "") -> Stats:
    """Run global step ``step`` (its ``run``: ``fn(config, run_dir) -> Stats``): a finished step returns its saved
    stats without work; otherwise ``fn`` runs, then its stats and, last, its marker are written (the same order rule
    as shards), with the step's log beside them (start, warnings, outcome). Where they live is the run layout's
    (:meth:`~mrbench.layout.RunLayout.step_marker`, :meth:`~mrbench.layout.RunLayout.step_log`).

    Args:
        marker: The text its marker records (the step's fingerprint, given by the pipeline; :mod:`mrbench.fingerprint`).
    """
    layout = RunLayout(run_dir)
    stats_path, done = layout.step_stats(step), layout.step_marker(step)
    if done.exists():
        return Stats.load(stats_path) if stats_path is not None else Stats()
    with shard_log(layout.step_log(step), step.name) as note:
        stats = step.run(layout.with_shard_count(config), Path(run_dir))
        note(f"{step.name}: done {json.dumps(dict(stats.counts), sort_keys=True)}")
    done.parent.mkdir(parents=True, exist_ok=True)
    if stats_path is not None:
        stats.save(stats_path)
    atomic_write_text(done, marker)
    return stats


def _place(order: list[Step], step: Step, core: set[str]) -> None:
    """Insert ``step`` right after the step it names: before the built-in steps that follow that one, after the
    contributed steps already placed there (contributed steps after one step run in registration order)."""
    if not step.after:
        order.insert(0, step)
        return
    names = [s.name for s in order]
    if step.after not in names:
        raise ValueError(f"stage {step.name!r} runs after {step.after!r}, which is not a registered step "
                         f"(steps: {', '.join(names)})")
    at = names.index(step.after) + 1
    while at < len(order) and order[at].after == step.after and order[at].name not in core:
        at += 1
    order.insert(at, step)


def _load(entry: Entry) -> Any:
    obj = entry.load()
    if isinstance(obj, Step) and obj.name != entry.name:
        raise ValueError(f"stage {entry.name!r} is registered with a Step named {obj.name!r}")
    if isinstance(obj, type) and issubclass(obj, Filter) and obj.name not in (Stage.name, entry.name):
        # a filter that names itself must use that name (its counters' prefix); one that does not takes the entry's
        raise ValueError(f"stage {entry.name!r} is registered with a Filter named {obj.name!r}")
    return obj


def pipeline_steps(registry: Registry[Any] = STAGES) -> list[Step]:
    """The registered steps in run order (``mrbench.curation`` must be imported for the built-ins).

    Raises:
        ValueError: a registered stage is neither a step nor a filter, or runs after an unknown step.
    """
    core: set[str] = set()  # the built-in steps (registered from mrbench's own modules) form the chain
    steps: list[Step] = []
    for entry in registry.in_order():
        obj = _load(entry)
        if isinstance(obj, Step):
            steps.append(obj)
            origin = dict(entry.meta).get("replaces", entry.target)  # a built-in step replaced keeps its place
            if isinstance(origin, str) and origin.startswith("mrbench."):
                core.add(obj.name)
        elif not (isinstance(obj, type) and issubclass(obj, Filter)):
            raise ValueError(f"stage {entry.name!r} ({entry.target}) is neither a mrbench.stage.Step nor a Filter "
                             "subclass")
    order: list[Step] = []
    for group in ([s for s in steps if s.name in core], [s for s in steps if s.name not in core]):
        pending = list(group)
        while pending:  # a step may be registered before the one it runs after
            ready = next((s for s in pending if not s.after or any(o.name == s.after for o in order)), pending[0])
            _place(order, ready, core)  # raises for a step after one nobody registered
            pending.remove(ready)
    return order


def filter_stages(registry: Registry[Any] = STAGES) -> list[tuple[str, type[Filter]]]:
    """Registered :class:`Filter` stages (name, class) that run in the ``filters`` step, in registration order (the
    built-in ones first, entry-point plugins last)."""
    out = []
    for entry in registry.in_order():
        obj = _load(entry)
        if isinstance(obj, type) and issubclass(obj, Filter):
            out.append((entry.name, obj))
    return out


def drop_labels(registry: Registry[Any] = STAGES) -> dict[str, str]:
    """Drop reason -> the label of the step that drops it, in run order (:attr:`Step.drops`; the registered filters'
    reasons under their ``label``, where their step runs). Reasons not listed come from the download (crawl and
    decode failures)."""
    out: dict[str, str] = {}
    for step in pipeline_steps(registry):
        for label, reasons in step.drops:
            out.update((r, label) for r in reasons)
        if step.runs_filters:
            out.update((r, f.label) for _, f in filter_stages(registry) for r in f.reasons)
    return out
