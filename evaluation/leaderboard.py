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
PROMPT_ONLY = "prompt-only"  # the base model without references: every other row's gain over it is shown
SKIP_HEADLINE_FIELDS = ("parsed", "detected")  # rates, not scores: never a metric's headline field
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
    def random(self) -> bool:
        """Scored with random weights (the model's or an encoder's): labelled, and never a table's best."""
        return bool(self.summary.get("random_weights") or self.summary.get("model_random_weights"))

    @property
    def n_boot(self) -> int:
        return int(self.config.get("eval", {}).get("n_boot", 1000))

    def reference_slices(self, split: str) -> dict[str, Any]:
        """The split's estimates per reference-count bucket (recomputed from the rows for older summaries)."""
        s = self.split_summary(split)
        if "by_references" in s:
            return s["by_references"]
        from mrbench.evaluation.results import reference_slices

        fields = {k: {"direction": e.get("direction", "higher")} for k, e in s.get("metrics", {}).items()}
        return reference_slices(self.rows, fields, n_boot=self.n_boot)

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
        return summarize([r for r in self.rows if r["split"] == split], fields, n_boot=self.n_boot).get(split, s)


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
    # The folder's name only: the shared files must not carry the curator's absolute paths.
    where = Path(str(b.get("path", ""))).name
    return (f"Benchmark `{b['name']}` at `{where}`, split {b['split']}, fingerprint "
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
        if contender(r) and est.get("mean") is not None:
            vals.append(est["mean"])
    if len(vals) < 2:
        return None
    return min(vals) if direction == "lower" else max(vals)


def contender(r: Run) -> bool:
    """A row that can be a column's best: not a scale row (reference, chance), not random weights."""
    return r.model not in REAL_ROWS and not r.random


def headline_keys(cols: Sequence[tuple[str, float | None]]) -> list[str]:
    """Each metric's headline field among a table's columns: its first unscaled field (rates such as ``parsed`` and
    ``detected`` excepted), in column order. Slices, paired comparisons and gains are computed for these."""
    out: dict[str, str] = {}
    for key, scale in cols:
        base, _, fld = key.partition("@")[2].partition(".")
        metric = key.partition("@")[0] + "@" + base
        if scale is None and fld not in SKIP_HEADLINE_FIELDS and metric not in out:
            out[metric] = key
    return list(out.values())


@dataclass
class Analysis:
    """What a table adds to its means: headline fields, paired comparisons and gains over prompt-only."""

    headline: list[str]
    direction: dict[str, str]
    paired: dict[str, dict[str, Any]]  # field -> compare_all(...) over the model rows
    gains: dict[str, dict[str, dict[str, Any]]]  # run path name -> field -> paired diff vs prompt-only

    def not_separable(self, key: str) -> list[str]:
        return (self.paired.get(key) or {}).get("not_separable", [])


def analyze(rs: Sequence[Run], split: str, cols: Sequence[tuple[str, float | None]]) -> Analysis:
    """Paired bootstrap over groups for every pair of model rows and every headline field; each row's gain over the
    ``prompt-only`` row when the table has one (seeded: a pure function of the rows)."""
    from mrbench.evaluation.paired import compare_all, paired_diff

    headline = headline_keys(cols)
    direction = {k: _direction(rs, split, k) for k in headline}
    models = [r for r in rs if r.model not in REAL_ROWS]
    n_boot = max((r.n_boot for r in rs), default=1000)
    paired = {}
    for k in headline:
        means = [((r.split_summary(split).get("metrics", {}).get(k) or {}).get("mean") if contender(r) else None)
                 for r in models]  # random-weights rows are compared, never named best
        paired[k] = compare_all([(r.label, r.rows, m) for r, m in zip(models, means)], k, direction[k], n_boot=n_boot)
    gains: dict[str, dict[str, dict[str, Any]]] = {}
    base = next((r for r in rs if r.model == PROMPT_ONLY), None)
    if base is not None:
        for r in rs:
            if r is not base:
                gains[r.path.name] = {k: paired_diff(r.rows, base.rows, k, direction[k], n_boot).to_dict()
                                      for k in headline}
    return Analysis(headline, direction, paired, gains)


def gain_estimate(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """A paired difference as a summary-style estimate (``mean``, ``ci``, ``n_groups``) for the table cells."""
    if not d or d.get("mean_diff") is None:
        return None
    return {"mean": d["mean_diff"], "ci": d["ci"], "n_groups": d["n_groups"], "n_rows": d["n_pairs"]}


def format_gain(d: dict[str, Any] | None) -> str:
    """``+0.012 [-0.004, +0.030]`` (``n/a`` interval over one group), or ``-``."""
    est = gain_estimate(d)
    if est is None:
        return "-"
    if est["n_groups"] <= 1:
        return f"{est['mean']:+.3f} [n/a]"
    return f"{est['mean']:+.3f} [{est['ci'][0]:+.3f}, {est['ci'][1]:+.3f}]"


def _bold(text: str, est: dict[str, Any] | None, best: float | None, real: bool) -> str:
    hit = best is not None and not real and est and est.get("mean") is not None and abs(est["mean"] - best) < 1e-12
    return f"**{text}**" if hit else text


def _slice_label(label: str, rs: Sequence[Run], split: str) -> str:
    n = max((r.reference_slices(split)["slices"].get(label, {}).get("samples", 0) for r in rs), default=0)
    return f"{label} ref{'s' if label != '1' else ''} ({n} sample{'s' if n != 1 else ''})"


def write_markdown(runs: Sequence[Run], path: Path) -> None:
    lines = ["# MRBench leaderboard", "",
             "Cells: mean over groups of per-group means, with a bootstrap 95 % confidence interval over groups.",
             "`failed`: rows without a scored image (any status but ok), out of all rows; the first table of each "
             "benchmark averages ok rows only, the second (shown when a row failed) counts failed rows as 0.",
             "Runs of different benchmark fingerprints are never merged: each sample set has its own tables.",
             "Rows marked [random weights] come from tiny random models: their numbers say nothing about quality, "
             "and they are never marked best.",
             "Bold: the best model value of each column, by the metric's registered direction (the reference and chance "
             "rows are scale marks, not contenders).",
             f"`gain over {PROMPT_ONLY}`: the row minus the `{PROMPT_ONLY}` row (the base model without references) "
             "on the same samples and seeds, paired bootstrap 95 % interval over groups.", ""]
    tables = _tables(runs)
    for key, rs in tables.items():
        split = key[1]
        cols = _columns(rs, split)
        an = analyze(rs, split, cols)
        gain_cols = an.headline if an.gains else []
        title = _title(key, list(tables))
        head = ("| model | groups | images | failed | " + " | ".join(_col_name(*c) for c in cols)
                + "".join(f" | gain over {PROMPT_ONLY}: {k}" for k in gain_cols) + " |")
        rule = "|---|---|---|---|" + "---|" * (len(cols) + len(gain_cols))
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
            real = not contender(r)
            gains = "".join(f" | {format_gain(an.gains.get(r.path.name, {}).get(k))}" for k in gain_cols)
            lines.append(front + " | ".join(_bold(format_estimate(m.get(k), sc), m.get(k), best[k], real)
                                            for k, sc in cols) + gains + " |")
            zero.append(front + " | ".join(_bold(_zero_estimate(m.get(k), sc), (m.get(k) or {}).get("failures_as_zero"),
                                                 best_zero[k], real) for k, sc in cols) + gains + " |")
        if lower:
            lines += ["", "Lower is better: " + ", ".join(f"`{c}`" for c in lower) + "."]
        if any(r.split_summary(split).get("failed", 0) for r in rs):
            lines += ["", *zero]
        else:
            lines += ["", "No row failed: the table with failures counted as 0 would repeat this one."]
        notes = [f"`{m}` = {ROW_NOTE[m]}" for m in REAL_ROWS if any(r.model == m for r in rs)]
        if notes:
            lines += ["", "Scale rows: " + "; ".join(notes) + "."]
        lines += _markdown_slices(rs, split, title, an)
        lines += _markdown_paired(title, an)
        lines += ["", "Runs: " + ", ".join(f"`{r.path.name}`" for r in rs), ""]
    lines += ["## Encoders", ""]
    for key, info in sorted(_encoders(runs).items()):
        flag = " **[random weights]**" if info.get("random_weights") else ""
        lines.append(f"- `{key}`: {info.get('weights', '')} ({info.get('version', '')}){flag}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def slice_buckets(rs: Sequence[Run], split: str) -> list[str]:
    """The reference-count buckets any row of the table has, in bucket order."""
    from mrbench.evaluation.results import REFERENCE_BUCKETS

    order = [b[0] for b in REFERENCE_BUCKETS]
    seen = {b for r in rs for b in r.reference_slices(split)["buckets"]}
    return sorted(seen, key=lambda b: order.index(b) if b in order else -1)


def _markdown_slices(rs: Sequence[Run], split: str, title: str, an: Analysis) -> list[str]:
    buckets = slice_buckets(rs, split)
    if not buckets or not an.headline:
        return []
    out = ["", f"### {title}: by number of references", "",
           "Each headline field per reference-count bucket of the samples (mean over the bucket's groups [95 % CI])."]
    for k in an.headline:
        out += ["", f"`{k}`", "", "| model | " + " | ".join(_slice_label(b, rs, split) for b in buckets) + " |",
                "|---|" + "---|" * len(buckets)]
        for r in rs:
            sl = r.reference_slices(split)["slices"]
            out.append(f"| {r.label} | " + " | ".join(format_estimate(sl.get(b, {}).get("metrics", {}).get(k))
                                                     for b in buckets) + " |")
    return out


def _markdown_paired(title: str, an: Analysis) -> list[str]:
    if not any(p["pairs"] for p in an.paired.values()):
        return []
    out = ["", f"### {title}: paired comparisons", "",
           "a - b on the same samples and seeds: mean over groups [paired bootstrap 95 % CI over groups]; win rate: "
           "share of (sample, seed) pairs where a is better (ties half); separable: the interval excludes 0."]
    for k, comp in an.paired.items():
        if not comp["pairs"]:
            continue
        out += ["", f"`{k}` ({an.direction[k]} is better)", "", "| a | b | a - b | win rate of a | groups | separable |",
                "|---|---|---|---|---|---|"]
        empty = sum(1 for p in comp["pairs"] if p["mean_diff"] is None)
        for p in comp["pairs"]:
            if p["mean_diff"] is None:
                continue
            win = "-" if p["win_rate"] is None else f"{100 * p['win_rate']:.0f} %"
            out.append(f"| {p['a']} | {p['b']} | {format_gain(p)} | {win} | {p['n_groups']} | "
                       f"{'yes' if p['separable'] else 'no'} |")
        if comp["best"]:
            tied = ", ".join(comp["not_separable"]) or "none"
            out += ["", f"Best: {comp['best']}; not separable from it: {tied}."]
        else:
            out += ["", "No best named: fewer than two contenders without random weights."]
        if empty:
            out[-1] += f" {empty} pair{'s' if empty > 1 else ''} with no sample scored by both: not listed."
    return out


CSV_GAIN = f"gain_over_{PROMPT_ONLY.replace('-', '_')}"


def write_csv(runs: Sequence[Run], path: Path) -> None:
    """One row per (run, metric field, reference slice): ``references`` is ``all`` for the split's estimate, or a
    reference-count bucket; headline fields of the ``all`` rows carry the gain over prompt-only when there is one."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["benchmark", "split", "model", "run", "metric", "encoder", "mean", "ci_low", "ci_high", "n_groups",
                "n_rows", "direction", "random_weights", "model_random_weights", "fingerprint", "limit", "rows",
                "failed", "failure_rate", "mean_failures_as_zero", "ci_low_failures_as_zero",
                "ci_high_failures_as_zero", "references", CSV_GAIN, f"{CSV_GAIN}_ci_low", f"{CSV_GAIN}_ci_high"])
    for (bench, split, fingerprint, _), rs in _tables(runs).items():
        an = analyze(rs, split, _columns(rs, split))
        for r in rs:
            s = r.split_summary(split)
            front = [bench, split, r.model, r.path.name]
            common = [r.summary.get("random_weights"), r.summary.get("model_random_weights"), fingerprint,
                      r.summary["benchmark"].get("limit")]
            for key, est in s.get("metrics", {}).items():
                enc = key.split("@", 1)[1].split(".", 1)[0] if "@" in key else ""
                z = est.get("failures_as_zero") or {"mean": None, "ci": [None, None]}
                g = gain_estimate(an.gains.get(r.path.name, {}).get(key)) or {"mean": None, "ci": [None, None]}
                w.writerow([*front, key, enc, est["mean"], est["ci"][0], est["ci"][1], est["n_groups"], est["n_rows"],
                            column_direction(key, est)[0], *common, s.get("rows"), s.get("failed"),
                            s.get("failure_rate"), z["mean"], z["ci"][0], z["ci"][1], "all", g["mean"], *g["ci"]])
            sl = r.reference_slices(split)
            for bucket in sl["buckets"]:
                body = sl["slices"][bucket]
                for key, est in body["metrics"].items():
                    enc = key.split("@", 1)[1].split(".", 1)[0] if "@" in key else ""
                    w.writerow([*front, key, enc, est["mean"], est["ci"][0], est["ci"][1], est["n_groups"],
                                est["n_rows"], column_direction(key, est)[0], *common, body["rows"], None, None,
                                None, None, None, bucket, None, None, None])
    atomic_write_text(path, buf.getvalue())


def write_paired_csv(runs: Sequence[Run], path: Path) -> None:
    """``leaderboard_paired.csv``: every pair of model rows of a table on every headline field."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["benchmark", "split", "fingerprint", "metric", "direction", "model_a", "model_b", "mean_diff",
                "ci_low", "ci_high", "win_rate_a", "n_groups", "n_pairs", "separable", "best", "a_not_separable_from_best",
                "b_not_separable_from_best"])
    for (bench, split, fingerprint, _), rs in _tables(runs).items():
        an = analyze(rs, split, _columns(rs, split))
        for key, comp in an.paired.items():
            tied = set(comp["not_separable"])
            for p in comp["pairs"]:
                w.writerow([bench, split, fingerprint, key, an.direction[key], p["a"], p["b"], p["mean_diff"],
                            p["ci"][0], p["ci"][1], p["win_rate"], p["n_groups"], p["n_pairs"], p["separable"],
                            comp["best"], p["a"] in tied, p["b"] in tied])
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
    selection), rows in leaderboard order, each with its failures-counted-as-0 view, its gains over prompt-only,
    reference-count slices and paired comparisons."""
    from mrbench.evaluation.leaderboard_html import BoardRow, BoardTable, Column

    out = []
    tables = _tables(runs)
    for key, rs in tables.items():
        split = key[1]
        bench, _, split_title = _title(key, list(tables)).partition(" / ")
        cols = []
        col_keys = _columns(rs, split)
        an = analyze(rs, split, col_keys)
        for col, scale in col_keys:
            est = next((r.split_summary(split).get("metrics", {}).get(col) for r in rs
                        if col in r.split_summary(split).get("metrics", {})), None) or {}
            direction, aggregation = column_direction(col, est)
            cols.append(Column(col, direction, est.get("description", ""), scale, aggregation))
        gain_cols = [Column(f"gain:{k}", "", f"gain over {PROMPT_ONLY} (paired, same samples and seeds)", None, "")
                     for k in (an.headline if an.gains else [])]
        rows, zero_rows = [], []
        for r in rs:
            s = r.split_summary(split)
            info = {"groups": s.get("groups", 0), "images": s.get("rows_per_status", {}).get("ok", 0),
                    "failed": format_failures(s)}
            common = dict(model=r.model, label=r.model, pair_name=r.label, info=info, random_weights=r.random,
                          real=r.model in REAL_ROWS, note=ROW_NOTE.get(r.model, ""), run=r)
            gains = {f"gain:{k}": gain_estimate(d) for k, d in an.gains.get(r.path.name, {}).items() if gain_estimate(d)}
            estimates = s.get("metrics", {})
            rows.append(BoardRow(estimates={**estimates, **gains}, **common))
            zero_rows.append(BoardRow(estimates={k: v.get("failures_as_zero") for k, v in estimates.items()
                                                 if isinstance(v, dict) and v.get("failures_as_zero")}, **common))
        any_failed = any(r.split_summary(split).get("failed", 0) for r in rs)
        slices = {r.label: (r.random, r.reference_slices(split)["slices"]) for r in rs}
        out.append(BoardTable(
            bench, split_title, cols, rows,
            notes=[_benchmark_line(rs).replace("`", ""), "Runs: " + ", ".join(r.path.name for r in rs)],
            failures_as_zero=zero_rows if any_failed else [], gain_columns=gain_cols,
            near_best={k: set(an.not_separable(k)) for k in an.headline},
            headline=an.headline, buckets=slice_buckets(rs, split), slices=slices, paired=an.paired,
            direction=an.direction))
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
    """Write ``leaderboard.md``, ``.csv``, ``.html`` and ``leaderboard_paired.csv`` for ``run_dirs`` into ``out``;
    returns their paths (keys ``md``, ``csv``, ``html``, ``paired_csv``)."""
    if not run_dirs:
        raise ValueError("no run folders given")
    runs = [load_run(p) for p in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv", "html": out / "leaderboard.html",
             "paired_csv": out / "leaderboard_paired.csv"}
    write_markdown(runs, paths["md"])
    write_csv(runs, paths["csv"])
    write_paired_csv(runs, paths["paired_csv"])
    write_html(runs, paths["html"], grid_samples=grid_samples)
    return paths
