"""Per-sample results (JSONL first), the generation cache, and aggregation with bootstrap confidence intervals.

``samples.jsonl`` holds one row per generated image; it is appended (and fsync'd) row by row while a run goes, so a
killed run loses at most the row being written, and it is rewritten in benchmark order when the run completes, so
two runs of the same command give identical files. Tables are computed from it afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mrbench.shards import atomic_write_bytes, atomic_write_text, write_text_if_changed

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"


def safe_name(text: str) -> str:
    """A file-name-safe, collision-free form of an id: readable prefix + short hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a truncated last line (a run killed mid-write) is ignored."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class JsonlAppender:
    """Appends rows durably (flush + fsync per row)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomic; a file that already holds exactly these rows is left untouched."""
    write_text_if_changed(path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows))


class GenerationCache:
    """Generated images keyed on (model, options hash, sample key, seed).

    Layout: ``ROOT/<model>/<options hash>/<safe sample key>__s<seed>.png`` plus a ``.json`` written after it (the
    marker that the entry is complete, same order rule as shards).
    """

    def __init__(self, root: Path, model: str, options_hash: str) -> None:
        self.dir = Path(root) / model / options_hash

    def _stem(self, sample_key: str, seed: int) -> Path:
        return self.dir / f"{safe_name(sample_key)}__s{seed}"

    def get(self, sample_key: str, seed: int) -> tuple[bytes, dict[str, Any]] | None:
        stem = self._stem(sample_key, seed)
        meta, png = stem.with_suffix(".json"), stem.with_suffix(".png")
        if not (meta.is_file() and png.is_file()):
            return None
        return png.read_bytes(), json.loads(meta.read_text())

    def put(self, sample_key: str, seed: int, png: bytes, meta: dict[str, Any]) -> None:
        stem = self._stem(sample_key, seed)
        atomic_write_bytes(stem.with_suffix(".png"), png)
        atomic_write_text(stem.with_suffix(".json"), json.dumps(meta, sort_keys=True))


# ------------------------------------------------------------------------------------------------ aggregation


@dataclass
class Estimate:
    """A split-level value: mean over groups with a bootstrap CI over groups."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n_groups: int
    n_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci": [self.ci_low, self.ci_high], "n_groups": self.n_groups, "n_rows": self.n_rows}


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampling the values, here: groups), seeded."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def group_means(rows: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """Per-group mean of metric ``key`` over the rows where it has a value."""
    acc: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = (r.get("metrics") or {}).get(key)
        if v is not None:
            acc[r["group"]].append(float(v))
    return {g: float(np.mean(vs)) for g, vs in sorted(acc.items())}


def estimate(rows: Sequence[dict[str, Any]], key: str, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Mean over groups of per-group means of ``key``, with a bootstrap 95 % CI over groups."""
    gm = group_means(rows, key)
    n_rows = sum(1 for r in rows if (r.get("metrics") or {}).get(key) is not None)
    if not gm:
        return Estimate(None, None, None, 0, 0)
    vals = list(gm.values())
    lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
    return Estimate(float(np.mean(vals)), lo, hi, len(vals), n_rows)


def estimate_failures_as_zero(rows: Sequence[dict[str, Any]], key: str, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """As :func:`estimate`, over every row of the split: a failed row (status not ``ok``) counts as 0, so a model that
    fails on hard samples is not scored on an easier subset. Ok rows without a value stay excluded."""
    filled = [r if r.get("status") == "ok" else {**r, "metrics": {key: 0.0}} for r in rows]
    return estimate(filled, key, n_boot=n_boot, seed=seed)


# Reference-count slices: (label, lowest count, highest count or None). A sample's count is the number of references
# its benchmark gives every model (``n_references`` in the row), so every model's slice holds the same samples.
REFERENCE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (("1", 1, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8+", 8, None))


def reference_count(row: dict[str, Any]) -> int:
    """How many references the row's sample has (rows written before ``n_references`` existed: the references the
    row was scored against)."""
    n = row.get("n_references")
    return int(n) if n is not None else len(row.get("reference_ids") or [])


def reference_bucket(n: int, buckets: Sequence[tuple[str, int, int | None]] = REFERENCE_BUCKETS) -> str:
    """The label of the bucket holding ``n`` references (``"0"`` for none, ``"N+"``-style labels past the last)."""
    for label, lo, hi in buckets:
        if n >= lo and (hi is None or n <= hi):
            return label
    return str(n)


def reference_slices(rows: Sequence[dict[str, Any]], fields: dict[str, dict[str, Any]], n_boot: int = 1000,
                     seed: int = 0, buckets: Sequence[tuple[str, int, int | None]] = REFERENCE_BUCKETS) -> dict[str, Any]:
    """Every field's estimate over ok rows, per reference-count bucket (bootstrap over the bucket's groups).

    Returns ``{"buckets": [labels present, in bucket order], "slices": {label: {"rows", "groups", "samples",
    "metrics": {field key: estimate}}}}``.
    """
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[reference_bucket(reference_count(r), buckets)].append(r)
    order = [b[0] for b in buckets]
    labels = sorted(by, key=lambda b: (order.index(b), 0) if b in order else (-1, int(b) if b.isdigit() else 0))
    slices = {}
    for label in labels:
        brows = by[label]
        ok = [r for r in brows if r.get("status") == "ok"]
        slices[label] = {"rows": len(brows), "groups": len({r["group"] for r in brows}),
                         "samples": len({r["sample_id"] for r in brows}),
                         "metrics": {key: estimate(ok, key, n_boot=n_boot, seed=seed).to_dict() for key in fields}}
    return {"buckets": labels, "slices": slices}


def summarize(rows: Sequence[dict[str, Any]], fields: dict[str, Any], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per split: row counts per status, the failure rate (rows not ``ok`` / rows) and, per metric field, the
    estimate over ok rows (plus a scaled view where declared) and, for higher-is-better fields, the estimate with
    failed rows counted as 0 (``failures_as_zero``; a 0 would flatter a lower-is-better field, so those have none);
    ``by_references``: every field again per reference-count bucket (:func:`reference_slices`).

    Args:
        rows: ``samples.jsonl`` rows.
        fields: Field key -> :class:`~mrbench.evaluation.metrics.MetricField` (or a dict with ``direction``,
            ``display_scale``, ``description``).
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed (fixed: the summary is a pure function of the rows).
    """
    fields = {key: f if isinstance(f, dict) else {"direction": f.direction, "display_scale": f.display_scale,
                                                  "description": f.description} for key, f in fields.items()}
    out: dict[str, Any] = {}
    for split in sorted({r["split"] for r in rows}):
        srows = [r for r in rows if r["split"] == split]
        status = Counter(r["status"] for r in srows)
        ok = [r for r in srows if r["status"] == "ok"]
        metrics: dict[str, Any] = {}
        for key, f in fields.items():
            est = estimate(ok, key, n_boot=n_boot, seed=seed).to_dict()
            est.update({"direction": f["direction"], "description": f.get("description", "")})
            scale = f.get("display_scale")
            if scale and est["mean"] is not None:
                est["scaled"] = {"factor": scale, "mean": est["mean"] * scale, "ci": [c * scale for c in est["ci"]]}
            if f["direction"] == "higher":
                est["failures_as_zero"] = estimate_failures_as_zero(srows, key, n_boot=n_boot, seed=seed).to_dict()
            metrics[key] = est
        out[split] = {
            "rows": len(srows), "rows_per_status": dict(sorted(status.items())),
            "failed": len(srows) - len(ok), "failure_rate": (len(srows) - len(ok)) / len(srows) if srows else 0.0,
            "groups": len({r["group"] for r in srows}), "samples": len({r["sample_id"] for r in srows}),
            "metrics": metrics, "by_references": reference_slices(srows, fields, n_boot=n_boot, seed=seed),
        }
    return out
