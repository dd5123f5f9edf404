"""The curation run: the registered steps (:func:`mrbench.stage.pipeline_steps`), walked in order over one run
folder (:class:`mrbench.layout.RunLayout`), sharded steps by the executor and global steps linked by files.

    RUN_DIR/config.yaml, provenance.json, run_state.json
    ingest/    candidates per source file        (sharded, one per source file)
    urls/      selected URLs in num_shards shards, or one per rows_per_shard rows (global ``select``: cap per tag, ids)
    download/  one row per URL: ok + bytes, or a named failure (sharded: fetch under the egress policy + validation)
    embed/     per shard: image embedding, faces, detections of every ok image (sharded; only with embed models)
    safety/    per shard: the safety classifier's score of every embedded image (sharded; only with safety.classifier)
    filters/   per shard: ids dropped by the resolution / face / object / registered filters, with reasons (sharded)
    index/     vectors of the images still in play, memory-mapped (global; only with embed models)
    dedup/     near-duplicates to drop: id, duplicate_of, similarity (global)
    groups/    groups.parquet, assignments.parquet (global ``group``: group by tag, refine, split by group, audit)
    audit/     leakage.json, leaks.parquet: near-duplicates and identities across splits (inside ``group``)
    release_parts/  per download shard and split: the release rows (sharded ``release``)
    release/   the release: the parts linked as data/ without gaps, manifest, card, EasyRef JSON (global ``finalize``)
    rejects/   every non-ok row with its reason
    report.html  what the run did, as pictures (``mrbench report``; curation.report)

Each step skips work already complete, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import yaml

import mrbench.curation  # noqa: F401  (registers the built-in steps)
from mrbench import storage
from mrbench.config import ConfigError, to_dict, validate_once
from mrbench.curation.config import CurateConfig
from mrbench.console import ProgressFactory
from mrbench.curation.audit import read_report
from mrbench.curation.blocklist import check_blocklists
from mrbench.curation.embed import preflight
from mrbench.curation.inputs import check_sources
from mrbench.curation.outcome import empty_outcome
from mrbench.curation.report import write_report
from mrbench.executors import get_executor
from mrbench.fingerprint import StepPlan, invalidate, marker_text, plan_run
from mrbench.layout import RunLayout
from mrbench.log import get_logger
from mrbench.progress import LiveShardProgress
from mrbench.provenance import provenance
from mrbench.records import SPLITS
from mrbench.registry import Entry
from mrbench.runlock import with_run_lock
from mrbench.shards import atomic_write_text
from mrbench.stage import STAGES, Step, filter_stages, pipeline_steps, run_global_step
from mrbench.stats import Stats
from mrbench.thresholds import RUN_SETTINGS, for_setting

log = get_logger(__name__)


def run_state_problem(run_dir: Path, config: CurateConfig) -> str | None:
    """Why ``config`` cannot resume ``run_dir`` (None when it can): its shards would not line up with another
    shard count, or (``num_shards: 0``) another ``rows_per_shard``. Every other changed setting redoes the steps
    that read it (:mod:`mrbench.fingerprint`)."""
    state_path = RunLayout(run_dir).run_state
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    if config.num_shards == 0 and state["num_shards"]:
        return None  # num_shards: 0 (chosen at selection) resumes a folder started with a fixed count: it keeps it
    if state["num_shards"] != config.num_shards:
        was = f"num_shards={state['num_shards']}" if state["num_shards"] else "num_shards=0 (rows_per_shard)"
        return (f"{run_dir} was started with {was}, not {config.num_shards}; "
                f"use a new --out folder or set num_shards: {state['num_shards']}")
    if not config.num_shards and state.get("rows_per_shard") != config.rows_per_shard:
        return (f"{run_dir} was started with rows_per_shard={state.get('rows_per_shard')}, not "
                f"{config.rows_per_shard}; use a new --out folder or the original rows_per_shard")
    return None


def with_started_shard_count(run_dir: Path, config: CurateConfig) -> CurateConfig:
    """``config`` as it resumes ``run_dir``: ``num_shards: 0`` (chosen at selection) on a folder started with a
    fixed count (before ``rows_per_shard`` existed) is that count, so nothing is redone for it."""
    state_path = RunLayout(run_dir).run_state
    if config.num_shards or not state_path.exists():
        return config
    started = json.loads(state_path.read_text())["num_shards"]
    return dataclasses.replace(config, num_shards=started) if started else config


def check_run_state(run_dir: Path, config: CurateConfig) -> None:
    """Refuse to resume a run folder with another shard layout (:func:`run_state_problem`); record the shard
    layout of a new one."""
    problem = run_state_problem(run_dir, config)
    if problem:
        raise ConfigError(problem)
    state_path = RunLayout(run_dir).run_state
    if not state_path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        shards = {"num_shards": config.num_shards, **({} if config.num_shards else {"rows_per_shard": config.rows_per_shard})}
        atomic_write_text(state_path, json.dumps({**shards, "seed": config.seed}))


def plan_curation(config: CurateConfig, run_dir: str | Path) -> list[StepPlan]:
    """What ``run_curation(config, run_dir)`` would do with each step, and why (``mrbench curate --dry-run``);
    nothing is written.

    Raises:
        ConfigError: an invalid config, unreadable sources, a badly registered stage, another shard count.
    """
    if storage.is_url(str(run_dir)):
        with storage.StagedRun(str(run_dir)) as stage:
            return plan_curation(config, stage.local)
    validate_once(config)
    check_sources(config)
    try:
        steps = pipeline_steps()
    except ValueError as e:
        raise ConfigError(f"stages: {e}") from None
    run_dir = Path(run_dir).resolve()
    problem = run_state_problem(run_dir, config)
    if problem:
        raise ConfigError(problem)
    return plan_run(steps, with_started_shard_count(run_dir, config), run_dir)


def run_curation(config: CurateConfig, run_dir: str | Path, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Run (or resume) every enabled registered step, in order; returns a summary (rows per status, groups, splits,
    release path).

    The run folder is locked for the whole call (:mod:`mrbench.runlock`): a second process on it fails with
    :class:`~mrbench.runlock.RunLockedError` naming the holder. A run folder at a URL (``s3://bucket/run``) is
    staged in a local folder and every finished file is uploaded, markers last (:class:`mrbench.storage.StagedRun`).
    """
    if not storage.is_url(str(run_dir)):
        return _run_in_folder(config, run_dir, progress)
    with storage.StagedRun(str(run_dir)) as stage:
        summary = _run_in_folder(config, stage.local, progress, stage)
        return {**summary, "release": stage.url_of(summary["release"]), "report": stage.url_of(summary["report"])}


@with_run_lock("run_dir")
def _run_in_folder(config: CurateConfig, run_dir: str | Path, progress: ProgressFactory | None = None,
                   stage: storage.StagedRun | None = None) -> dict[str, Any]:
    """:func:`run_curation` in a local folder (``stage``: the store it mirrors, None for a plain run folder)."""
    sync = stage.sync if stage is not None else (lambda include_shards=True: None)
    validate_once(config)
    check_sources(config)  # unreadable source files (encoding, corrupt parquet, missing column) fail before work
    check_blocklists(config.crawl)  # a missing block list or a malformed line fails before work
    try:
        steps = pipeline_steps()  # a stage registered wrongly fails here, before any work
    except ValueError as e:
        raise ConfigError(f"stages: {e}") from None
    run_dir = Path(run_dir).resolve()
    check_run_state(run_dir, config)
    config = with_started_shard_count(run_dir, config)
    layout = RunLayout(run_dir)
    plans = plan_run(steps, config, run_dir)  # reads the last run's config.yaml: before it is replaced
    executor = get_executor(config.executor)
    # Missing weights or model dependencies fail here, before any work.
    try:
        models = preflight(config.embed)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # e.g. an option the model does not take
        raise ConfigError(f"embed: a model rejected its options ({e})") from None
    if config.safety.classifier:  # missing weights fail here too, before any work
        from mrbench.curation.safety import build_classifier

        models["safety"] = build_classifier(config).info.to_dict()
    # Steps whose settings or inputs changed since they ran are redone, with every step after them.
    for plan in plans:
        if plan.why:  # redone (the changed keys named), removed, or kept without a fingerprint to check
            log.warning("%s: %s", plan.step.name, plan.describe())
    invalidate(run_dir, plans)
    markers = {plan.step.name: marker_text(plan.record) for plan in plans}
    atomic_write_text(layout.config, yaml.safe_dump(to_dict(config), sort_keys=False))
    if models:
        atomic_write_text(layout.models, json.dumps(models, indent=1, sort_keys=True))
    log_thresholds(config)
    atomic_write_text(layout.provenance, json.dumps(provenance(), indent=1))  # after preflight: torch known
    sync()  # the store forgets what was invalidated (markers first) and gets the run's config

    def run_sharded(spec: Step) -> None:
        """Run a sharded step; the bar counts ``spec.unit`` (rows of the shard it reads first), resumed shards
        included, so rate and ETA are in URLs / images rather than shards."""
        task, n = spec.task(config, str(run_dir)), spec.run.num_shards(config)
        task.marker = markers[spec.name]
        task.bind(executor)
        task.store = stage.url if stage is not None else ""
        resources = spec.resources(config)
        if not progress:
            with LiveShardProgress(None, task.shards, [1] * n, [True] * n):  # only removes the progress files
                executor.run(task, n, resources=resources)
            return
        weights = None
        if spec.unit != "files" and spec.reads:  # rows of a finished step's shard, from its parquet footer
            source = layout.shards(spec.reads[0])  # a step registered under that name
            weights = [pq.ParquetFile(source.output(i)).metadata.num_rows for i in range(n)]
        bar = progress(f"{spec.name} {spec.unit}".strip(), sum(weights) if weights else n)
        with LiveShardProgress(bar, task.shards, weights or [1] * n, [task.is_done(i) for i in range(n)]) as live:
            executor.run(task, n, live.shard_done, weights, resources)

    enabled = [spec for spec in steps if spec.enabled(config)]
    settings = config  # as set: what the fingerprints above recorded
    last_sharded = max((k for k, spec in enumerate(enabled) if spec.sharded), default=-1)
    for k, spec in enumerate(enabled):
        if not spec.sharded:
            run_global_step(spec, config, run_dir, markers[spec.name])
            sync()
            config = layout.with_shard_count(settings)  # the steps after select get the shard count it chose
            continue
        run_sharded(spec)
        sync(include_shards=False)  # each task uploaded its shard's files
        if spec.frees_models or k == last_sharded:
            # models: its workers hold them, free that memory before the global steps; last: the worker pool served
            # every sharded step (a failing step closes it itself)
            executor.close()
    merged = write_merged_stats(run_dir, config, steps)
    manifest = json.loads(layout.manifest.read_text())
    summary = summarize(run_dir, merged, manifest)
    report = write_report(run_dir)
    sync()
    # a run that released nothing says why and what to change (the CLI exits non-zero with it)
    return {**summary, "empty_outcome": empty_outcome(config, merged, summary), "report": str(report)}


def log_thresholds(config: CurateConfig) -> None:
    """Say in the run log which threshold each model-driven decision uses and where it comes from; an encoder
    without a calibration for its task is a warning."""
    for setting in ("dedup.threshold", "group.identity_threshold"):
        task = RUN_SETTINGS[setting][0]
        point = for_setting(config, setting)
        if point is None:
            continue
        encoder = config.embed.face_encoder if task == "identity" else config.embed.encoder
        if point.calibrated or point.source == "config":
            log.info("%s: %s", encoder, point.describe(task))
        else:
            log.warning("%s: %s; measure one with `mrbench calibrate` and set `calibration: FILE`", encoder,
                        point.describe(task))


def write_merged_stats(run_dir: Path, config: CurateConfig, steps: list[Step] | None = None) -> dict[str, Stats]:
    """``RUN_DIR/stats.json``: every step's counters merged over its shards, in run order (steps that did not run,
    and ``finalize``, which has none, are left out).

    Returns:
        The merged stats per step.
    """
    layout = RunLayout(run_dir)
    merged: dict[str, Stats] = {}
    for spec in steps if steps is not None else pipeline_steps():
        if spec.sharded:
            shards = layout.shards(spec)
            if shards.folder.is_dir():
                merged[spec.name] = shards.merged_stats(spec.run.num_shards(config))
        else:
            path = layout.step_stats(spec)
            if path is not None and path.exists():
                merged[spec.name] = Stats.load(path)
    atomic_write_text(layout.stats, json.dumps({k: v.to_dict() for k, v in merged.items()}, indent=1))
    return merged


def stages_in_run_order() -> Iterator[Entry]:
    """``mrbench ls stages``: every registered stage in run order, each step followed by the parts it runs itself
    (:attr:`~mrbench.stage.Step.parts`; not registered) and, for the step that runs filters, the registered filters
    in the order they run; the help says how each runs."""
    by_name = {e.name: e for e in STAGES.in_order()}
    for spec in pipeline_steps():
        entry = by_name[spec.name]
        yield Entry(entry.name, entry.target, f"[{spec.kind}, after {spec.after or '-'}] {entry.help}")
        for name, help in spec.parts:
            yield Entry(name, f"{entry.target} (part)", f"  (part of {spec.name}) {help}")
        if spec.runs_filters:
            for name, _ in filter_stages():
                yield Entry(name, by_name[name].target, f"  (filter in {spec.name}) {by_name[name].help}")


class _RunOrder:
    """Iterable view for the CLI's ``ls``: :func:`stages_in_run_order` each time."""

    def __iter__(self) -> Iterator[Entry]:
        return stages_in_run_order()


RUN_ORDER = _RunOrder()


def summarize(run_dir: Path, merged: dict[str, Stats], manifest: dict[str, Any]) -> dict[str, Any]:
    """The run's summary from its merged stats (:func:`write_merged_stats`), groups and manifest."""
    status, download = merged["release"], merged["download"]
    layout = RunLayout(run_dir)
    groups = pq.read_table(layout.groups_table, columns=["split"]).column("split").to_pylist()
    return {
        "rows_per_status": {k.split("/", 1)[1]: v for k, v in sorted(status.counts.items()) if k.startswith("status/")},
        "groups_per_split": {s: groups.count(s) for s in SPLITS},
        "images_per_split": {k.split("/", 1)[1]: v for k, v in status.counts.items() if k.startswith("release/")},
        "download_errors": dict(download.errors.counts.most_common(10)),
        "release": str(layout.release),
        "release_rows": manifest["rows"],
        # every input row that did not make the release, by the reason of the step that dropped it
        "drops_per_reason": {k.split("/", 1)[1]: v for k, v in sorted(status.counts.items(), key=lambda kv: (-kv[1], kv[0]))
                             if k.startswith("status/") and k != "status/ok"},
        "leakage_audit": read_report(run_dir),
    }
