"""Leaderboards from run folders: ``leaderboard.md``, ``leaderboard.csv`` and a self-contained ``leaderboard.html``.

One table per evaluated sample set -- (benchmark, split, benchmark fingerprint, limit, seeds): runs of different
benchmark fingerprints (another release, another DreamBench copy) are never merged into one table. A row per run
(model), a column per metric field, cells ``mean [95 % CI]`` over groups of the ok rows; every table shows each
model's failure rate (rows whose status is not ``ok``) and is followed by the same table with failed rows counted as
0 (higher-is-better fields), so a model that fails on hard samples is not ranked on an easier subset. Rows from
random weights (tiny profile or random encoders) are marked in every format. The ceiling
(``reference``) and ``chance`` rows close each table when present. The HTML page adds, per model, image grids:
references | target | generations, for the first samples of the benchmark (images embedded as base64 thumbnails).
The HTML rendering itself (best values, sorting, gallery, plots) is :mod:`mrbench.evaluation.leaderboard_html`.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mrbench.evaluation.results import CONFIG_FILE, SAMPLES_FILE, SUMMARY_FILE, read_jsonl
from mrbench.shards import atomic_write_text

REAL_ROWS = ("reference", "chance")
ROW_NOTE = {"reference": "ceiling, another real image of the same group (leave-one-out)",
            "chance": "chance, a real image of another group"}


@dataclass
class Run:
    """One run folder, loaded."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def model(self) -> str:
        return self.summary["model"]

    @property
    def label(self) -> str:
        tags = []
        if self.summary.get("model_random_weights"):
            tags.append("random weights")
        elif self.summary.get("random_weights"):
            tags.append("random-weight encoders")
        return self.model + (f" [{', '.join(tags)}]" if tags else "")

    @property
    def table_key(self) -> tuple[str, str, str, str]:
        """(benchmark, split, fingerprint, limit and seeds): runs share a table only when they saw the same samples."""
        b = self.summary["benchmark"]
        return b["name"], b["split"], b.get("fingerprint", ""), f"limit={b.get('limit')} seeds={b.get('seeds')}"

    def split_summary(self, split: str) -> dict[str, Any]:
        """The split's summary; one written before failure rates existed is recomputed from the run's rows."""
        s = self.summary["splits"].get(split, {})
        if not s or "failure_rate" in s:
            return s
        from mrbench.evaluation.results import summarize

        fields = {k: {"direction": e.get("direction", "higher"), "description": e.get("description", ""),
                      "display_scale": (e.get("scaled") or {}).get("factor")} for k, e in s.get("metrics", {}).items()}
        n_boot = int(self.config.get("eval", {}).get("n_boot", 1000))
        return summarize([r for r in self.rows if r["split"] == split], fields, n_boot=n_boot).get(split, s)


def load_run(path: str | Path) -> Run:
    """Read a run folder written by :func:`~mrbench.evaluation.runner.run_eval`."""
    p = Path(path)
    for f in (CONFIG_FILE, SUMMARY_FILE, SAMPLES_FILE):
        if not (p / f).is_file():
            raise FileNotFoundError(f"{p} is not a complete run folder ({f} missing)")
    return Run(p, json.loads((p / CONFIG_FILE).read_text()), json.loads((p / SUMMARY_FILE).read_text()),
               read_jsonl(p / SAMPLES_FILE))


def _order(runs: Sequence[Run]) -> list[Run]:
    def key(r: Run) -> tuple[int, str, str]:
        rank = 1 + REAL_ROWS.index(r.model) if r.model in REAL_ROWS else 0
        return rank, r.model, r.path.name

    return sorted(runs, key=key)


def _columns(runs: Sequence[Run], split: str) -> list[tuple[str, float | None]]:
    """(field key, scale) columns in first-seen order; a scaled copy follows fields that declare one."""
    cols: list[tuple[str, float | None]] = []
    for r in runs:
        metrics = r.split_summary(split).get("metrics", {})
        # The run's own metric order (config.json), not the summary's sorted keys.
        ordered = [f for m in r.config.get("metrics", []) for f in m.get("fields", [])]
        for key in ordered + sorted(set(metrics) - set(ordered)):
            est = metrics.get(key)
            if est is None or (key, None) in cols:
                continue
            cols.append((key, None))
            if est.get("scaled"):
                cols.append((key, est["scaled"]["factor"]))
    return cols


def format_estimate(est: dict[str, Any] | None, scale: float | None = None) -> str:
    """``mean [lo, hi]`` of a summary estimate (times ``scale``), or ``-`` when there is none."""
    if not est or est.get("mean") is None:
        return "-"
    m, (lo, hi) = est["mean"], est["ci"]
    s = scale or 1.0
    if est.get("n_groups", 2) <= 1:  # a bootstrap over one group is that group: no interval to show
        return f"{m * s:.3f} [n/a]"
    return f"{m * s:.3f} [{lo * s:.3f}, {hi * s:.3f}]"


def _col_name(key: str, scale: float | None) -> str:
    return f"{key} x{scale:g}" if scale else key


def _tables(runs: Sequence[Run]) -> dict[tuple[str, str, str, str], list[Run]]:
    by: dict[tuple[str, str, str, str], list[Run]] = defaultdict(list)
    for r in runs:
        by[r.table_key].append(r)
    return {k: _order(v) for k, v in sorted(by.items())}


def _title(key: tuple[str, str, str, str], keys: Sequence[tuple[str, str, str, str]]) -> str:
    """``bench / split``, plus the fingerprint and sample selection when another table has the same benchmark and
    split (different data or selection: never merged)."""
    bench, split, fp, sel = key
    if sum(1 for k in keys if k[:2] == key[:2]) > 1:
        return f"{bench} / {split} (fingerprint {fp[:12]}, {sel})"
    return f"{bench} / {split}"


def _benchmark_line(rs: Sequence[Run]) -> str:
    b = rs[0].summary["benchmark"]
    return (f"Benchmark `{b['name']}` at `{b.get('path', '')}`, split {b['split']}, fingerprint "
            f"`{b.get('fingerprint', '')[:12]}`, {b.get('num_samples', '?')} samples, limit {b.get('limit')}, "
            f"seeds {b.get('seeds')}.")


def format_failures(s: dict[str, Any]) -> str:
    """``failed/rows (rate %)`` of a split summary."""
    n = s.get("rows", 0)
    failed = s.get("failed", n - s.get("rows_per_status", {}).get("ok", 0))
    return f"{failed}/{n} ({100 * failed / n:.1f} %)" if n else "-"


def _zero_estimate(est: dict[str, Any] | None, scale: float | None) -> str:
    """The failures-counted-as-0 view of an estimate, or ``-`` (lower-is-better fields have none)."""
    return format_estimate((est or {}).get("failures_as_zero"), scale)


def _encoders(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        for key, info in r.summary.get("encoders", {}).items():
            out.setdefault(key, info)
    return out


def _direction(rs: Sequence[Run], split: str, key: str) -> str:
    est = next((r.split_summary(split)["metrics"][key] for r in rs if key in r.split_summary(split).get("metrics", {})),
               {})
    return column_direction(key, est)[0]


def _best_mean(rs: Sequence[Run], split: str, key: str, zero: bool, direction: str) -> float | None:
    """The best mean of column ``key`` over the model rows (not the reference / chance scale rows), by the metric's
    registered direction; None when fewer than two models have a value (one contender is not a ranking)."""
    vals = []
    for r in rs:
        est = r.split_summary(split).get("metrics", {}).get(key) or {}
        est = (est.get("failures_as_zero") or {}) if zero else est
        if r.model not in REAL_ROWS and est.get("mean") is not None:
            vals.append(est["mean"])
    if len(vals) < 2:
        return None
    return min(vals) if direction == "lower" else max(vals)


def _bold(text: str, est: dict[str, Any] | None, best: float | None, real: bool) -> str:
    hit = best is not None and not real and est and est.get("mean") is not None and abs(est["mean"] - best) < 1e-12
    return f"**{text}**" if hit else text


def write_markdown(runs: Sequence[Run], path: Path) -> None:
    lines = ["# MRBench leaderboard", "",
             "Cells: mean over groups of per-group means, with a bootstrap 95 % confidence interval over groups.",
             "`failed`: rows without a scored image (any status but ok), out of all rows; the first table of each "
             "benchmark averages ok rows only, the second counts failed rows as 0.",
             "Runs of different benchmark fingerprints are never merged: each sample set has its own tables.",
             "Rows marked [random weights] come from tiny random models: their numbers say nothing about quality.",
             "Bold: the best model value of each column, by the metric's registered direction (the reference and chance "
             "rows are scale marks, not contenders).", ""]
    tables = _tables(runs)
    for key, rs in tables.items():
        split = key[1]
        cols = _columns(rs, split)
        title = _title(key, list(tables))
        head = "| model | groups | images | failed | " + " | ".join(_col_name(*c) for c in cols) + " |"
        rule = "|---|---|---|---|" + "---|" * len(cols)
        lines += [f"## {title}", "", _benchmark_line(rs), "", head, rule]
        zero = [f"### {title}: failures counted as 0", "", head, rule]
        direction = {k: _direction(rs, split, k) for k, _ in cols}
        lower = [_col_name(k, sc) for k, sc in cols if direction[k] == "lower"]
        best = {k: _best_mean(rs, split, k, False, direction[k]) for k, _ in cols}
        best_zero = {k: _best_mean(rs, split, k, True, direction[k]) for k, _ in cols}
        for r in rs:
            s = r.split_summary(split)
            front = f"| {r.label} | {s.get('groups', 0)} | {s.get('rows_per_status', {}).get('ok', 0)} | {format_failures(s)} | "
            m = s.get("metrics", {})
            real = r.model in REAL_ROWS
            lines.append(front + " | ".join(_bold(format_estimate(m.get(k), sc), m.get(k), best[k], real)
                                            for k, sc in cols) + " |")
            zero.append(front + " | ".join(_bold(_zero_estimate(m.get(k), sc), (m.get(k) or {}).get("failures_as_zero"),
                                                 best_zero[k], real) for k, sc in cols) + " |")
        if lower:
            lines += ["", "Lower is better: " + ", ".join(f"`{c}`" for c in lower) + "."]
        lines += ["", *zero]
        notes = [f"`{m}` = {ROW_NOTE[m]}" for m in REAL_ROWS if any(r.model == m for r in rs)]
        if notes:
            lines += ["", "Scale rows: " + "; ".join(notes) + "."]
        lines += ["", "Runs: " + ", ".join(f"`{r.path.name}`" for r in rs), ""]
    lines += ["## Encoders", ""]
    for key, info in sorted(_encoders(runs).items()):
        flag = " **[random weights]**" if info.get("random_weights") else ""
        lines.append(f"- `{key}`: {info.get('weights', '')} ({info.get('version', '')}){flag}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_csv(runs: Sequence[Run], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["benchmark", "split", "model", "run", "metric", "encoder", "mean", "ci_low", "ci_high", "n_groups",
                "n_rows", "direction", "random_weights", "model_random_weights", "fingerprint", "limit", "rows",
                "failed", "failure_rate", "mean_failures_as_zero", "ci_low_failures_as_zero",
                "ci_high_failures_as_zero"])
    for (bench, split, fingerprint, _), rs in _tables(runs).items():
        for r in rs:
            s = r.split_summary(split)
            for key, est in s.get("metrics", {}).items():
                enc = key.split("@", 1)[1].split(".", 1)[0] if "@" in key else ""
                z = est.get("failures_as_zero") or {"mean": None, "ci": [None, None]}
                w.writerow([bench, split, r.model, r.path.name, key, enc, est["mean"], est["ci"][0], est["ci"][1],
                            est["n_groups"], est["n_rows"], column_direction(key, est)[0], r.summary.get("random_weights"),
                            r.summary.get("model_random_weights"), fingerprint, r.summary["benchmark"].get("limit"),
                            s.get("rows"), s.get("failed"), s.get("failure_rate"), z["mean"], z["ci"][0], z["ci"][1]])
    atomic_write_text(path, buf.getvalue())


def _real_images(run: Run) -> dict[str, Any]:
    """Image id -> ImageRef of the run's benchmark, when its data is still where the run found it."""
    from mrbench.evaluation.benchmarks import build_benchmark

    b = run.summary["benchmark"]
    try:
        bench = build_benchmark(f"{b['name']}:{b['path']}", split=b["split"])
        return {r.id: r for s in bench.all_samples() for r in s.real_images()}
    except (OSError, ValueError, KeyError):
        return {}


def column_direction(key: str, est: dict[str, Any]) -> tuple[str, str]:
    """(direction, aggregation) of the column ``key``, from the metric registry (what a metric registers is what
    ranks it); a metric this installation does not know keeps what its run recorded in ``summary.json``."""
    from mrbench.evaluation.metrics import registered_metric

    reg = registered_metric(key)
    if reg["registered"]:
        return reg["direction"], reg["aggregation"] or ""
    return est.get("direction", "higher"), ""


def board_tables(runs: Sequence[Run]) -> list[Any]:
    """The aggregated tables the HTML page renders: one per evaluated sample set (benchmark, split, fingerprint,
    selection), rows in leaderboard order, each with its failures-counted-as-0 view."""
    from mrbench.evaluation.leaderboard_html import BoardRow, BoardTable, Column

    out = []
    tables = _tables(runs)
    for key, rs in tables.items():
        split = key[1]
        bench, _, split_title = _title(key, list(tables)).partition(" / ")
        cols = []
        for col, scale in _columns(rs, split):
            est = next((r.split_summary(split).get("metrics", {}).get(col) for r in rs
                        if col in r.split_summary(split).get("metrics", {})), None) or {}
            direction, aggregation = column_direction(col, est)
            cols.append(Column(col, direction, est.get("description", ""), scale, aggregation))
        rows, zero_rows = [], []
        for r in rs:
            s = r.split_summary(split)
            info = {"groups": s.get("groups", 0), "images": s.get("rows_per_status", {}).get("ok", 0),
                    "failed": format_failures(s)}
            common = dict(model=r.model, label=r.model, info=info, random_weights=bool(r.summary.get("random_weights")),
                          real=r.model in REAL_ROWS, note=ROW_NOTE.get(r.model, ""), run=r)
            estimates = s.get("metrics", {})
            rows.append(BoardRow(estimates=estimates, **common))
            zero_rows.append(BoardRow(estimates={k: v.get("failures_as_zero") for k, v in estimates.items()
                                                 if isinstance(v, dict) and v.get("failures_as_zero")}, **common))
        out.append(BoardTable(bench, split_title, cols, rows, notes=[_benchmark_line(rs).replace("`", ""), "Runs: " + ", ".join(
            r.path.name for r in rs)], failures_as_zero=zero_rows))
    return out


def write_html(runs: Sequence[Run], path: Path, grid_samples: int = 4, thumb: int = 128) -> None:
    """``leaderboard.html``: :func:`board_tables` rendered by :func:`~mrbench.evaluation.leaderboard_html.render_html`."""
    from mrbench.evaluation.leaderboard_html import render_html

    cache: dict[tuple[str, str, str], dict[str, Any]] = {}

    def real(run: Run) -> dict[str, Any]:
        b = run.summary["benchmark"]
        ck = (b["name"], b["path"], b["split"])
        if ck not in cache:
            cache[ck] = _real_images(run)
        return cache[ck]

    atomic_write_text(path, render_html(board_tables(runs), encoders=_encoders(runs), real_images=real,
                                        grid_samples=grid_samples, thumb=thumb))


def build_leaderboard(run_dirs: Sequence[str | Path], out: str | Path, grid_samples: int = 4) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.csv`` and ``.html`` for ``run_dirs`` into ``out``; returns the three paths."""
    if not run_dirs:
        raise ValueError("no run folders given")
    runs = [load_run(p) for p in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv", "html": out / "leaderboard.html"}
    write_markdown(runs, paths["md"])
    write_csv(runs, paths["csv"])
    write_html(runs, paths["html"], grid_samples=grid_samples)
    return paths
