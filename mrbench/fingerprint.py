"""Per-step fingerprints: what a step's completion markers record, and what a rerun of a run folder redoes.

Each step of a curation run declares the config keys it reads (:attr:`mrbench.stage.Step.settings`) and the
identities of the files outside the run folder it reads (:attr:`mrbench.stage.Step.inputs`: the tag list's sha256,
the source files' sizes and times). Its record holds those values, the fingerprint of the step before it (the run
is a chain: a step reads what the steps before it wrote) and a digest of the three, and every completion marker of
the step (shard ``.done`` files, a global step's ``_SUCCESS``) holds that record as JSON.

On a rerun (:func:`plan_run`) a step is redone, together with every step after it, when its fingerprint changed;
its outputs and markers, and those of the steps after it, are removed first (:func:`invalidate`). Settings that
cannot change the bytes are free (:data:`FREE_SETTINGS`: the executor, download threads, timeouts, retries and
backoff of failed downloads): they are never part of a fingerprint, so changing them redoes nothing.

Markers written before fingerprints existed are empty. Such a step is "unknown": its settings are compared with the
run folder's ``config.yaml`` (the settings of the last run in that folder); the step is kept when they match (the
inputs, tag list and source files, cannot be checked and are assumed unchanged; the plan says so) and redone, with
the changed keys named, when they differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from mrbench.layout import RunLayout

if TYPE_CHECKING:
    from mrbench.stage import Step

# Settings that decide only how the work is scheduled, or whether a fetch succeeds in time (a failed fetch is a named
# failure row that ``--retry-failed`` redoes): they never invalidate a step.
FREE_SETTINGS = (
    "executor",
    "crawl.thread_count",
    "crawl.timeout",
    "crawl.retries",
    "crawl.backoff_base",
    "crawl.backoff_max",
    "crawl.retry_after_max",
    "crawl.max_per_domain",
    "crawl.user_agent_token",
    "crawl.output_format",  # ignored by every step (kept so that older configs load)
    # Fixed for a run folder like num_shards (run_state.json: a change is refused) and read only with num_shards: 0;
    # free, so run folders started before it existed resume without redoing anything.
    "rows_per_shard",
)


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def flat_settings(config: Any, path: str = "") -> dict[str, Any]:
    """A config dataclass as ``{"group.max_group_size": 64, ...}``: nested configs flattened into dotted keys; lists
    (of values or of configs, like ``sources``) and mappings are one value each."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flat_settings(value, key + "."))
        elif isinstance(value, list):
            out[key] = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
        else:
            out[key] = value
    return out


def select_settings(keys: Iterable[str] | None, flat: dict[str, Any]) -> dict[str, Any]:
    """The settings under ``keys`` (dotted; a section covers its keys; None: all) of a flattened config
    (:func:`flat_settings`), free settings left out."""
    keys = None if keys is None else tuple(keys)
    return {k: v for k, v in flat.items() if (keys is None or _under(k, keys)) and not _under(k, FREE_SETTINGS)}


def step_settings(step: "Step", flat: dict[str, Any]) -> dict[str, Any]:
    """The settings ``step`` reads (:attr:`~mrbench.stage.Step.settings`), free settings left out."""
    return select_settings(step.settings, flat)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


def step_records(steps: list["Step"], config: Any) -> dict[str, dict[str, Any]]:
    """Each step's record for ``config``, in run order: ``{"fingerprint", "settings", "inputs", "after"}``; a step
    that is off for this config records only that (``settings`` None) and still links the chain."""
    flat = flat_settings(config)
    records: dict[str, dict[str, Any]] = {}
    after = ""
    for step in steps:
        if step.enabled(config):
            settings = step_settings(step, flat)
            inputs = step.inputs(config) if step.inputs is not None else {}
        else:
            settings, inputs = None, {}
        record = {"settings": settings, "inputs": inputs, "after": after}
        record["fingerprint"] = _digest(record)
        records[step.name] = record
        after = record["fingerprint"]
    return records


def marker_text(record: dict[str, Any] | None) -> str:
    """What a completion marker holds: the step's record as JSON (empty without one)."""
    return json.dumps(record, sort_keys=True, default=str) if record else ""


def read_marker(path: Path) -> dict[str, Any] | None:
    """The record in a completion marker; None for a marker without one (written before fingerprints)."""
    try:
        text = path.read_text()
        record = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "fingerprint" in record else None


def step_markers(layout: RunLayout, step: "Step") -> list[Path]:
    """The completion markers of ``step`` present in the run folder."""
    if step.sharded:
        return layout.shards(step).markers()
    marker = layout.step_marker(step)
    return [marker] if marker.exists() else []


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def changed_keys(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """``key old -> new`` for every key whose value differs (keys only one side has included)."""
    old, new = old or {}, new or {}
    return [f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


@dataclass
class StepPlan:
    """What a run does with one step.

    Attributes:
        step: The step.
        action: ``run`` (not started), ``resume`` (some shards left), ``done`` (nothing to do), ``redo`` (its
            outputs are removed and it runs again), ``off`` (disabled for this config), ``remove`` (disabled now,
            its outputs of an earlier run are removed).
        why: The reasons, for people: changed keys (``group.max_group_size 64 -> 8``), changed inputs, the earlier
            step that is redone, or that the step's markers carry no fingerprint.
        record: The step's record for this config (what its markers will hold).
    """

    step: "Step"
    action: str
    why: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def invalidates(self) -> bool:
        return self.action in ("redo", "remove")

    def describe(self) -> str:
        return f"{self.action}" + (f": {'; '.join(self.why)}" if self.why else "")


def _previous_settings(layout: RunLayout, config_type: type) -> dict[str, Any] | None:
    """The flattened settings of the run folder's ``config.yaml`` (the last run's), or None when unreadable."""
    from mrbench.config import ConfigError, from_dict, load_yaml

    if not layout.config.is_file():
        return None
    try:
        return flat_settings(from_dict(config_type, load_yaml(layout.config)))
    except (ConfigError, TypeError, ValueError):
        return None


def plan_run(steps: list["Step"], config: Any, run_dir: str | Path) -> list[StepPlan]:
    """What a run of ``config`` in ``run_dir`` does with each step, and why (``mrbench curate --dry-run`` prints it).

    A step is redone when its markers hold another fingerprint (the changed keys and inputs are named), when a step
    before it is redone, or when its markers hold none and its settings differ from the folder's ``config.yaml``.
    """
    layout = RunLayout(run_dir)
    records = step_records(steps, config)
    previous: dict[str, Any] | None | bool = False  # False: not read yet
    plans: list[StepPlan] = []
    redone = ""  # the first step redone: every enabled step after it is redone too
    for step in steps:
        record = records[step.name]
        markers = step_markers(layout, step)
        if record["settings"] is None:
            has_outputs = bool(markers) or any(p.exists() for p in layout.owned(step))
            plans.append(StepPlan(step, "remove" if has_outputs else "off", ["off for this config"] if has_outputs else [],
                                  record))
            if has_outputs:
                redone = redone or step.name
            continue
        if not markers:  # runs from scratch: whatever a later step made of its old outputs is stale
            plans.append(StepPlan(step, "run", [], record))
            redone = redone or step.name
            continue
        stored = [read_marker(m) for m in markers]
        why: list[str] = []
        if any(s is None for s in stored):
            if previous is False:
                previous = _previous_settings(layout, type(config))
            if previous is not None:
                why = changed_keys(step_settings(step, previous), record["settings"])
            if not why and not redone:
                note = ("its settings match config.yaml, kept; its input files could not be checked"
                        if previous is not None else "and no readable config.yaml: kept")
                plans.append(StepPlan(step, _done_or_resume(layout, step, config, markers),
                                      [f"no fingerprint (an older run folder): {note}"], record))
                continue
        else:
            for old in {s["fingerprint"]: s for s in stored if s["fingerprint"] != record["fingerprint"]}.values():
                why += changed_keys(old.get("settings"), record["settings"])
                why += [f"input {k} changed" for k in sorted(set(old.get("inputs") or {}) | set(record["inputs"]))
                        if (old.get("inputs") or {}).get(k) != record["inputs"].get(k)]
                if not why and not redone and old.get("after") != record["after"]:
                    why.append("an earlier step's settings changed")
            why = list(dict.fromkeys(why))
        if redone:
            why.append(f"after {redone}")
        if why:
            plans.append(StepPlan(step, "redo", why, record))
            redone = redone or step.name
        else:
            plans.append(StepPlan(step, _done_or_resume(layout, step, config, markers), [], record))
    return plans


def _done_or_resume(layout: RunLayout, step: "Step", config: Any, markers: list[Path]) -> str:
    if not step.sharded:
        return "done"
    n = step.run.num_shards(layout.with_shard_count(config))  # 0: chosen by a select step still to run
    return "done" if n and len(markers) >= n else "resume"


def invalidate(run_dir: str | Path, plans: list[StepPlan]) -> list[str]:
    """Remove the markers, then the outputs, of every step the plan redoes or removes (only the files and folders
    :meth:`~mrbench.layout.RunLayout.owned` names: MRBench's own); returns the names of those steps."""
    layout = RunLayout(run_dir)
    gone = [p.step for p in plans if p.invalidates]
    for step in gone:  # markers first: an interrupted removal never leaves a step marked done over missing outputs
        for marker in step_markers(layout, step):
            marker.unlink(missing_ok=True)
    for step in gone:
        if step.sharded:
            for path in layout.shards(step).files():
                path.unlink(missing_ok=True)
        for path in layout.owned(step):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    if gone:
        layout.stats.unlink(missing_ok=True)
    return [s.name for s in gone]
