"""Leaderboards from run folders: ``leaderboard.md``, ``leaderboard.csv`` and a self-contained ``leaderboard.html``.

One table per (benchmark, split): a row per run (model), a column per metric field, cells ``mean [95 % CI]`` over
groups. Rows from random weights (tiny profile or random encoders) are marked in every format. The ceiling
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
ROW_NOTE = {"reference": "ceiling, a real image of the same group", "chance": "chance, a real image of another group"}


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
    def table_key(self) -> tuple[str, str]:
        b = self.summary["benchmark"]
        return b["name"], b["split"]


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
        metrics = r.summary["splits"].get(split, {}).get("metrics", {})
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


def _tables(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    by: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        by[r.table_key].append(r)
    return {k: _order(v) for k, v in sorted(by.items())}


def _encoders(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        for key, info in r.summary.get("encoders", {}).items():
            out.setdefault(key, info)
    return out


def write_markdown(runs: Sequence[Run], path: Path) -> None:
    lines = ["# MRBench leaderboard", "",
             "Cells: mean over groups of per-group means, with a bootstrap 95 % confidence interval over groups.",
             "Rows marked [random weights] come from tiny random models: their numbers say nothing about quality.", ""]
    for (bench, split), rs in _tables(runs).items():
        cols = _columns(rs, split)
        lines += [f"## {bench} / {split}", "", "| model | groups | images | " + " | ".join(_col_name(*c) for c in cols) + " |",
                  "|---|---|---|" + "---|" * len(cols)]
        for r in rs:
            s = r.summary["splits"].get(split, {})
            cells = [format_estimate(s.get("metrics", {}).get(k), sc) for k, sc in cols]
            lines.append(f"| {r.label} | {s.get('groups', 0)} | {s.get('rows_per_status', {}).get('ok', 0)} | "
                         + " | ".join(cells) + " |")
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
                "n_rows", "direction", "random_weights", "model_random_weights"])
    for (bench, split), rs in _tables(runs).items():
        for r in rs:
            for key, est in r.summary["splits"].get(split, {}).get("metrics", {}).items():
                enc = key.split("@", 1)[1].split(".", 1)[0] if "@" in key else ""
                w.writerow([bench, split, r.model, r.path.name, key, enc, est["mean"], est["ci"][0], est["ci"][1],
                            est["n_groups"], est["n_rows"], est["direction"], r.summary.get("random_weights"),
                            r.summary.get("model_random_weights")])
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


def board_tables(runs: Sequence[Run]) -> list[Any]:
    """The aggregated tables the HTML page renders (one per benchmark and split, rows in leaderboard order)."""
    from mrbench.evaluation.leaderboard_html import BoardRow, BoardTable, Column

    out = []
    for (bench, split), rs in _tables(runs).items():
        cols = []
        for key, scale in _columns(rs, split):
            est = next((r.summary["splits"].get(split, {}).get("metrics", {}).get(key) for r in rs
                        if key in r.summary["splits"].get(split, {}).get("metrics", {})), None) or {}
            cols.append(Column(key, est.get("direction", "higher"), est.get("description", ""), scale))
        rows = []
        for r in rs:
            s = r.summary["splits"].get(split, {})
            rows.append(BoardRow(
                model=r.model, label=r.model, info={"groups": s.get("groups", 0),
                                                    "images": s.get("rows_per_status", {}).get("ok", 0)},
                estimates=s.get("metrics", {}), random_weights=bool(r.summary.get("random_weights")),
                real=r.model in REAL_ROWS, note=ROW_NOTE.get(r.model, ""), run=r))
        out.append(BoardTable(bench, split, cols, rows, notes=["Runs: " + ", ".join(r.path.name for r in rs)]))
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
