"""The leaderboard page (``leaderboard.html``): rendering only.

:mod:`mrbench.evaluation.leaderboard` aggregates run folders into :class:`BoardTable` s (one per benchmark and
split: columns with their direction, one row per run with its estimates); :func:`render_html` turns them into one
self-contained page:

* per table: friendly metric names with their direction (higher/lower is better), the best model value of each
  column marked (the ``reference`` ceiling and ``chance`` rows are scale marks, not contenders), sorting by any column
  on click, ``n/a`` for a confidence interval over a single group;
* per table, a per-sample gallery: references | target | the images of every model side by side;
* per table, plots of the per-group score distribution of every model (one panel per main metric field).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mrbench.pages import Raw, esc, figure, new_figure, page, plot_uri

# Friendly names of the built-in metrics and fields; unknown ones (plug-ins) show their registered key.
METRIC_LABELS = {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino_i": "DINO-I", "image_sim": "image similarity",
                 "face": "face identity"}
FIELD_LABELS = {"target": "to target", "refs": "to references", "target_zero": "to target (no face = 0)",
                "refs_zero": "to references (no face = 0)", "detected": "face detected",
                "all": "to all real photos"}
ARROW = {"higher": "\u2191", "lower": "\u2193"}


@dataclass
class Column:
    """One metric column: ``key`` is the summary's field key (``image_sim@mobilenet_v2.target``)."""

    key: str
    direction: str = "higher"  # the metric's registered direction (leaderboard.column_direction)
    description: str = ""
    scale: float | None = None
    aggregation: str = ""  # the metric's registered aggregation, shown in the header's tooltip

    @property
    def label(self) -> str:
        return friendly_name(self.key, self.scale)


@dataclass
class BoardRow:
    """One run in a table: its display label, plain info cells (groups, images, failure rate, ...) and its
    estimates (``{field key: {"mean", "ci", "n_groups", ...}}`` as in ``summary.json``)."""

    model: str
    label: str
    info: dict[str, Any]
    estimates: dict[str, dict[str, Any]]
    random_weights: bool = False
    real: bool = False  # reference / chance rows: scale marks, not contenders
    note: str = ""
    run: Any = None  # the loaded run (rows, path), for the gallery and the plots
    pair_name: str = ""  # the row's name in the paired comparisons (its label with the random-weights tag)

    @property
    def contender(self) -> bool:
        """Can be a column's best: neither a scale row nor random weights."""
        return not self.real and not self.random_weights


@dataclass
class BoardTable:
    """One benchmark and split."""

    benchmark: str
    split: str
    columns: list[Column]
    rows: list[BoardRow]
    notes: list[str] = field(default_factory=list)
    failures_as_zero: list[BoardRow] = field(default_factory=list)  # the same rows, failed rows counted as 0
    gain_columns: list[Column] = field(default_factory=list)  # gain over prompt-only per headline field
    near_best: dict[str, set[str]] = field(default_factory=dict)  # field -> rows not separable from its best
    headline: list[str] = field(default_factory=list)  # each metric's headline field
    buckets: list[str] = field(default_factory=list)  # reference-count buckets present
    slices: dict[str, tuple[bool, dict[str, Any]]] = field(default_factory=dict)  # row -> (random, slices)
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> paired comparisons
    direction: dict[str, str] = field(default_factory=dict)  # headline field -> direction


def friendly_name(key: str, scale: float | None = None) -> str:
    """``image_sim@mobilenet_v2.target`` -> ``image similarity to target (mobilenet_v2)``."""
    name, _, rest = key.partition("@")
    encoder, _, fld = rest.partition(".") if rest else ("", "", "")
    if not rest and "." in name:
        name, _, fld = name.partition(".")
    if name.startswith("gain:"):
        return "gain over prompt-only: " + friendly_name(key[len("gain:"):], scale)
    label = METRIC_LABELS.get(name, name)
    if fld == "detected":
        label = "face detection rate"
    elif fld:
        label += " " + FIELD_LABELS.get(fld, fld)
    if encoder:
        label += f" ({encoder})"
    if scale:
        label += f" \u00d7{scale:g}"
    return label


def format_cell(est: dict[str, Any] | None, scale: float | None = None,
                signed: bool = False) -> tuple[str, float | None]:
    """(text, sort value): ``mean [lo, hi]``; ``mean [n/a]`` when the interval rests on one group; ``-`` when none;
    ``signed``: differences, shown with their sign (``+0.012 [-0.004, +0.030]``)."""
    if not est or est.get("mean") is None:
        return "-", None
    s = scale or 1.0
    m = est["mean"] * s
    f = "+.3f" if signed else ".3f"
    if est.get("n_groups", 2) <= 1 or not est.get("ci") or est["ci"][0] is None:
        return f"{m:{f}} [n/a]", m
    lo, hi = est["ci"]
    return f"{m:{f}} [{lo * s:{f}}, {hi * s:{f}}]", m


def _best(table: BoardTable, col: Column) -> float | None:
    vals = [format_cell(r.estimates.get(col.key), col.scale)[1] for r in table.rows if r.contender]
    vals = [v for v in vals if v is not None]
    if len(vals) < 2 or col.direction not in ARROW:
        return None  # one contender (or no direction) is not a ranking
    return max(vals) if col.direction == "higher" else min(vals)


def _table_html(t: BoardTable) -> str:
    info_keys = list(dict.fromkeys(k for r in t.rows for k in r.info))
    head = "".join(f"<th>{esc(k)}</th>" for k in ["model", *info_keys])
    # A field no run has a value for (face metrics on a benchmark without faces) is named under the table instead.
    empty = [c for c in t.columns if all(format_cell(r.estimates.get(c.key), c.scale)[1] is None for r in t.rows)]
    columns = [c for c in t.columns if c not in empty] + list(t.gain_columns)
    for c in columns:
        arrow = ARROW.get(c.direction, "")
        tip = f"{c.key}: {c.description} ({c.direction} is better)" if c.description else c.key
        if c.aggregation:
            tip += f"; {c.aggregation}"
        # data-better: the page's sorting puts the best values first on the first click (mrbench.pages.SORT_JS)
        better = f" data-better='{c.direction}'" if c.direction in ARROW else ""
        head += f"<th title='{esc(tip)}'{better}>{esc(c.label)} {arrow}</th>"
    best = {id(c): _best(t, c) for c in t.columns}  # gain columns: no best (their rows are shown, not ranked)
    rows = []
    for r in t.rows:
        label = esc(r.label) + (" <span class='rw'>[random weights]</span>" if r.random_weights else "")
        if r.note:
            label += f"<br><small>{esc(r.note)}</small>"
        cells = [f"<td data-v='{esc(r.model)}'>{label}</td>"]
        cells += [f"<td class='num'>{esc(str(r.info.get(k, '')))}</td>" for k in info_keys]
        for c in columns:
            text, v = format_cell(r.estimates.get(c.key), c.scale, signed=c.key.startswith("gain:"))
            mark, tip = "", ""
            if v is not None and r.contender and best.get(id(c)) is not None and abs(v - best[id(c)]) < 1e-12:
                mark = " best"
            elif c.scale is None and r.pair_name in t.near_best.get(c.key, ()):
                mark, tip = " near", " title='not separable from the best (paired bootstrap over groups, 95 %)'"
            dv = "" if v is None else f" data-v='{v:.12g}'"
            cells.append(f"<td class='num{mark}'{dv}{tip}>{esc(text)}</td>")
        rows.append(f"<tr class='{'real' if r.real else ''}'>{''.join(cells)}</tr>")
    notes = list(t.notes)
    if empty:
        notes.append("No value in any row (not shown): " + ", ".join(c.label for c in empty) + ".")
    return (f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + "".join(f"<p class='note'>{esc(shareable(n))}</p>" for n in notes))


def _gallery(t: BoardTable, real_images: Callable[[Any], dict[str, Any]], samples: int, thumb: int) -> str:
    """references | target | every model's images, one row per sample (the first ``samples`` of the first run)."""
    from PIL import Image

    from mrbench.pages import thumb_uri

    runs = [r for r in t.rows if r.run is not None]
    if not runs or samples <= 0:
        return ""
    per_run: list[dict[str, list[dict[str, Any]]]] = []
    for r in runs:
        by: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in r.run.rows:  # a run holds one benchmark split: every row belongs to this table
            by[row["sample_id"]].append(row)
        per_run.append(by)
    order = list(dict.fromkeys(sid for by in per_run for sid in by))[:samples]
    real = real_images(runs[0].run)
    head = "<th>references</th><th>target</th>" + "".join(
        f"<th>{esc(r.label)}{' <span class=rw>[rw]</span>' if r.random_weights else ''}</th>" for r in runs)
    body = []
    for sid in order:
        first = next(by[sid][0] for by in per_run if sid in by)
        refs = "".join(figure(thumb_uri(real[i].load(), thumb // 2) if i in real else None, "", title=i,
                              size=thumb // 2) for i in first.get("reference_ids", []))
        tid = first.get("target_id")
        target = figure(thumb_uri(real[tid].load(), thumb) if tid in real else None, "", title=str(tid),
                        cls="target", size=thumb)
        cells = [f"<td><div class='thumbs'>{refs or '-'}</div><div class='note'>{esc(sid)}: "
                 f"{esc(first.get('prompt', ''))}</div></td>", f"<td>{target}</td>"]
        for r, by in zip(runs, per_run):
            figs = []
            for row in by.get(sid, []):
                img = r.run.path / row["image"] if row.get("image") else None
                if img is not None and img.is_file():
                    with Image.open(img) as im:
                        figs.append(figure(thumb_uri(im, thumb), f"seed {row['seed']}", size=thumb))
                else:
                    figs.append(figure(None, shareable(f"[{row['status']}] {row.get('error_message') or ''}"),
                                       size=thumb))
            cells.append(f"<td><div class='thumbs'>{''.join(figs) or '-'}</div></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<h3>Samples: references | target | every model</h3><table class='grid'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


# An absolute POSIX path inside a text (weights file, benchmark folder, error message): the curator's file system.
_ABS_PATH = re.compile(r"(?<![\w:/.])(?:~/|/)(?:[^\s()'\"\[\],;/]+/)+([^\s()'\"\[\],;/]+)/?")


def shareable(text: str) -> str:
    """``text`` with every absolute path reduced to its last part (``/home/me/cache/w.pth`` -> ``.../w.pth``): the
    shared page must not carry the curator's paths."""
    return _ABS_PATH.sub(lambda m: ".../" + m.group(1), text)


def _slice_plots(t: BoardTable, max_panels: int = 3) -> str:
    """Each headline field per reference-count bucket: one line per model with its 95 % interval."""
    if not t.buckets or not t.slices or not t.headline:
        return ""
    imgs = []
    for key in t.headline[:max_panels]:
        fig, ax = new_figure(max(4.5, 1.6 * len(t.buckets) + 2.5), 3.2)
        x = list(range(len(t.buckets)))
        for k, (name, (random, sl)) in enumerate(t.slices.items()):
            pts = [(i, sl.get(b, {}).get("metrics", {}).get(key) or {}) for i, b in enumerate(t.buckets)]
            pts = [(i, e) for i, e in pts if e.get("mean") is not None]
            if not pts:
                continue
            xs = [i + 0.04 * (k - len(t.slices) / 2) for i, _ in pts]  # a small offset keeps intervals apart
            ys = [e["mean"] for _, e in pts]
            err = [[max(0.0, e["mean"] - (e["ci"][0] if e["ci"][0] is not None else e["mean"])) for _, e in pts],
                   [max(0.0, (e["ci"][1] if e["ci"][1] is not None else e["mean"]) - e["mean"]) for _, e in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, lw=1.2,
                        ls="--" if random else "-", label=name)
        ax.set_xticks(x)
        samples = [max((sl.get(b, {}).get("samples", 0) for _, sl in t.slices.values()), default=0) for b in t.buckets]
        ax.set_xticklabels([f"{b}\n({n} sample{'s' if n != 1 else ''})" for b, n in zip(t.buckets, samples)],
                           fontsize=8)
        ax.set_xlim(-0.5, len(t.buckets) - 0.5)
        ax.set_xlabel("references per sample", fontsize=8)
        ax.set_title(f"{friendly_name(key)} {ARROW.get(t.direction.get(key, ''), '')}", fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        imgs.append(plot_uri(fig))
    return ("<h3>By number of references</h3><p class='note'>Each headline field per reference-count bucket of the "
            "samples: mean over the bucket's groups with its bootstrap 95 % interval; dashed lines: random weights. "
            "Every model's bucket holds the same samples. The values are in leaderboard.csv (column "
            "<code>references</code>) and summary.json (<code>by_references</code>).</p><div class='plots'>"
            + "".join(f"<img src='{u}' alt='scores by number of references'> " for u in imgs) + "</div>")


def _paired_html(t: BoardTable) -> str:
    """Every pair of model rows on every headline field: a - b [95 % CI], win rate, separable; best and ties."""
    from mrbench.pages import table

    blocks = []
    for key, comp in t.paired.items():
        if not comp.get("pairs"):
            continue
        rows = []
        empty = sum(1 for p in comp["pairs"] if p["mean_diff"] is None)
        for p in comp["pairs"]:
            d = p["mean_diff"]
            if d is None:
                continue
            text = "-" if d is None else (f"{d:+.3f} [n/a]" if p["n_groups"] <= 1
                                          else f"{d:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]")
            win = "-" if p["win_rate"] is None else f"{100 * p['win_rate']:.0f} %"
            rows.append([p["a"], p["b"], text, win, p["n_groups"], "yes" if p["separable"] else "no"])
        if comp.get("best"):
            verdict = (f"Best: {comp['best']}; not separable from it: "
                       f"{', '.join(comp['not_separable']) or 'none'}.")
        else:
            verdict = "No best named: fewer than two contenders without random weights."
        if empty:
            verdict += f" {empty} pair{'s' if empty > 1 else ''} with no sample scored by both: not listed."
        blocks.append(f"<h4>{esc(friendly_name(key))} {ARROW.get(t.direction.get(key, ''), '')}</h4>"
                      + table(["a", "b", "a \u2212 b [95 % CI]", "win rate of a", "groups", "separable"], rows,
                              numeric=(2, 3, 4)) + f"<p class='note'>{esc(verdict)}</p>")
    if not blocks:
        return ""
    return ("<h3>Paired comparisons</h3><p class='note'>a \u2212 b on the same samples and seeds: mean over groups "
            "with a paired bootstrap 95 % interval over groups (seeded); win rate: share of (sample, seed) pairs "
            "where a is better, ties half; separable: the interval excludes 0. In the table above, light green "
            "cells are not separable from the column's best.</p>" + "".join(blocks))


def group_scores(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    """Per-group means of field ``key`` over a run's ok rows (the values the split mean averages)."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = r.get("metrics", {}).get(key)
        if r.get("status") == "ok" and v is not None:
            by[r["group"]].append(float(v))
    return [sum(v) / len(v) for _, v in sorted(by.items())]


def _plots(t: BoardTable, max_panels: int = 4) -> str:
    """Per-group score distributions per model: one box plot panel per main column (unscaled fields)."""
    runs = [r for r in t.rows if r.run is not None]
    cols = [c for c in t.columns if c.scale is None][:max_panels]
    if not runs or not cols:
        return ""
    imgs = []
    for c in cols:
        data = [group_scores(r.run.rows, c.key) for r in runs]
        if max(map(len, data)) < 2:
            continue  # one group at most per model: the table's value says all there is
        fig, ax = new_figure(max(4.0, 1.0 + 0.9 * len(runs)), 3.0)
        pos = [k for k, d in enumerate(data) if d]
        ax.boxplot([data[k] for k in pos], positions=pos, widths=0.5, showfliers=False)
        for k in pos:  # every group as a dot: with few groups a box alone hides how few there are
            xs = [k + 0.12 * ((j % 5) - 2) / 2 for j in range(len(data[k]))]
            ax.scatter(xs, data[k], s=10, alpha=0.6, color="#c33" if runs[k].random_weights else "#36c", zorder=3)
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([r.model for r in runs], rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(runs) - 0.4)
        ax.set_title(f"{c.label} {ARROW.get(c.direction, '')}", fontsize=9)
        ax.set_ylabel("per-group mean", fontsize=8)
        imgs.append(plot_uri(fig))
    if not imgs:
        return ""
    return ("<h3>Per-group score distributions</h3><p class='note'>One dot per group (its mean over ok images); "
            "boxes: quartiles. Red dots: random weights.</p><div class='plots'>"
            + "".join(f"<img src='{u}' alt='per-group scores'> " for u in imgs) + "</div>")


def render_html(tables: Sequence[BoardTable], *, encoders: dict[str, dict[str, Any]] | None = None,
                real_images: Callable[[Any], dict[str, Any]] | None = None, grid_samples: int = 4,
                thumb: int = 128) -> str:
    """The whole leaderboard page from aggregated tables.

    Args:
        tables: One per benchmark and split, rows already ordered.
        encoders: Encoder key -> info (``weights``, ``random_weights``) for the footer.
        real_images: Run -> {image id: ImageRef} of its benchmark (references and targets of the gallery).
        grid_samples: Samples shown per table in the gallery (0: no gallery).
        thumb: Thumbnail size of generations and targets (references are half).
    """
    body = ["<p class='note'>Cells: mean over groups of per-group means [bootstrap 95 % CI over groups]; "
            "n/a when a split has a single group. Arrows give the better direction; the best model value of each "
            "column is highlighted (the reference ceiling and chance rows are scale marks, not contenders), light "
            "green: not separable from it (paired bootstrap). Click a header to sort. <span class='rw'>[random "
            "weights]</span> rows come from tiny random models: their numbers test the path, not quality, and they "
            "are never marked best. <i>gain over prompt-only</i>: the row minus the prompt-only row (the base model "
            "without references) on the same samples and seeds, paired 95 % interval.</p>"]
    nav = []
    for k, t in enumerate(tables):
        anchor = f"t{k}"
        nav.append(f"<a href='#{anchor}'>{esc(t.benchmark)} / {esc(t.split)}</a>")
        body.append(f"<h2 id='{anchor}'>{esc(t.benchmark)} / {esc(t.split)}</h2>")
        body.append(_table_html(t))
        if t.failures_as_zero:
            body.append("<h4>Failures counted as 0</h4><p class='note'>Failed rows score 0 (higher-is-better fields "
                        "only), so a model that fails on hard samples is not ranked on an easier subset.</p>")
            body.append(_table_html(BoardTable(t.benchmark, t.split, t.columns, t.failures_as_zero)))
        else:
            body.append("<p class='note'>No row failed: the table with failures counted as 0 would repeat this "
                        "one.</p>")
        body.append(_paired_html(t))
        body.append(_slice_plots(t))
        body.append(_plots(t))
        if real_images is not None:
            body.append(_gallery(t, real_images, grid_samples, thumb))
    if encoders:
        body.append("<h2>Encoders</h2><ul>")
        for key, info in sorted(encoders.items()):
            flag = " <span class='rw'>[random weights]</span>" if info.get("random_weights") else ""
            body.append(f"<li><code>{esc(key)}</code>: {esc(shareable(str(info.get('weights', ''))))}{flag}</li>")
        body.append("</ul>")
    return page("MRBench leaderboard", [Raw(" &middot; ".join(nav)).html if nav else "", *body])
