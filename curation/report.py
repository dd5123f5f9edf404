"""``mrbench report RUN_DIR``: one self-contained HTML page that shows what a curation run did.

Written at the end of ``mrbench curate`` as ``RUN_DIR/report.html``. It only reads the run folder, in the formats
the steps write them (nothing here defines a format):

* ``stats.json`` (merged counters per step) -> the funnel: rows in play after each step, and rows per status
  and the step that set it;
* ``rejects/rejects_*.parquet`` (id, url, status, error_message, caption, tags) -> rejects per reason, with thumbnails of the
  first few ids of each reason (image bytes from ``download/shard_*.parquet``; download failures have none);
* ``dedup/duplicates.parquet`` (id, duplicate_of, similarity) -> the near-duplicate pairs removed, most similar
  first, dropped image next to the one kept;
* ``groups/groups.parquet`` (group, tag, category, split, target, references) -> a gallery of groups per split
  (target framed, then references) and the group-size and category histograms;
* ``audit/leakage.json`` and ``release/manifest.json`` when present.

Sizes stay bounded on paper-scale runs: counts come from the stats, examples are capped per section, and image
bytes are read only for the ids shown.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.curation.audit import shown_leak_pairs
from mrbench.curation.drops import drop_step, drop_step_order
from mrbench.curation.release_format import release_data_files
from mrbench.layout import RunLayout
from mrbench.pages import Raw, esc, figure, new_figure, page, plot_uri, table, try_thumb
from mrbench.records import SPLITS
from mrbench.shards import atomic_write_text



class ReportError(ValueError):
    """The folder is not a curation run folder the report can read (a user's mistake, not a crash)."""


def _read_stats(run_dir: Path) -> dict[str, dict[str, int]]:
    path = RunLayout(run_dir).stats
    if not path.is_file():
        if not RunLayout(run_dir).run_state.is_file():
            raise ReportError(f"{run_dir} is not a curation run folder (no run_state.json); "
                              "give the --out folder of `mrbench curate`")
        raise ReportError(f"{run_dir} has no stats.json yet: the run has not finished; rerun `mrbench curate` "
                          "with the same --out to resume it, then `mrbench report` again")
    return {step: body.get("counts", {}) for step, body in json.loads(path.read_text()).items()}


def _prefixed(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}


def run_images(run_dir: Path, ids: set[str]) -> dict[str, bytes]:
    """Image bytes of ``ids`` from the download shards (ids are sorted within a shard, so row groups prune)."""
    out: dict[str, bytes] = {}
    if not ids:
        return out
    wanted = pa.array(sorted(ids), pa.string())
    for f in RunLayout(run_dir).download.existing():
        t = pq.read_table(f, columns=["id", "image"], filters=[("id", "in", wanted)])
        for rid, data in zip(t.column("id").to_pylist(), t.column("image").to_pylist()):
            if data:
                out[rid] = data
        if len(out) == len(ids):
            break
    return out


def _reject_examples(run_dir: Path, reasons: set[str], per_reason: int) -> dict[str, list[dict[str, Any]]]:
    """The first ``per_reason`` reject rows of each reason (shard order, then id order)."""
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in RunLayout(run_dir).rejects.existing():
        # Only the status column becomes Python objects; the rows shown are taken by index (paper-scale rejects).
        table = pq.read_table(f)
        need = {r: per_reason - len(got[r]) for r in reasons}
        take: list[int] = []
        for k, status in enumerate(table.column("status").to_pylist()):
            if need.get(status, 0) > 0:
                need[status] -= 1
                take.append(k)
        for row in table.take(pa.array(take, pa.int64())).to_pylist():
            got[row["status"]].append(row)
        if all(len(got[r]) >= per_reason for r in reasons):
            break
    return got


def _funnel(status: dict[str, int]) -> list[tuple[str, int, int, int]]:
    """(step, rows in, dropped, rows out) from the release step's status counts (every URL ends in one status)."""
    dropped = Counter()
    for reason, n in status.items():
        if reason != "ok":
            dropped[drop_step(reason)] += n
    rows = []
    left = sum(status.values())
    for step in drop_step_order():
        if step not in dropped and step in ("select", "embed", "safety", "dedup", "audit"):
            continue  # model steps that did not run (or dropped nothing) stay out of the funnel
        rows.append((step, left, dropped[step], left - dropped[step]))
        left -= dropped[step]
    return rows


MAX_TAGS = 50  # rows of the per-tag table


def _tag_counts(files: list[Path], ok_only: bool = False) -> Counter:
    """Rows per tag over parquet ``files`` (their ``tags`` list column; only ``status == ok`` rows with ``ok_only``)."""
    import pyarrow.compute as pc

    counts: Counter = Counter()
    for f in files:
        cols = ["tags", "status"] if ok_only else ["tags"]
        t = pq.read_table(f, columns=cols)
        tags = t.column("tags")
        if ok_only:
            tags = tags.filter(pc.equal(t.column("status"), "ok"))
        flat = pc.list_flatten(tags)
        if len(flat):
            for item in pc.value_counts(flat).to_pylist():
                counts[item["values"]] += item["counts"]
    return counts


def _per_tag(layout: RunLayout) -> list[tuple[str, int, int, int, int]]:
    """(tag, candidates, selected, downloaded ok, released) per tag, most candidates first."""
    candidates = _tag_counts(layout.shards("ingest").existing())
    if not candidates:
        return []
    selected = _tag_counts(layout.shards("select").existing())
    ok = _tag_counts(layout.download.existing(), ok_only=True)
    released = _tag_counts(release_data_files(layout.release))
    return [(tag, n, selected[tag], ok[tag], released[tag])
            for tag, n in sorted(candidates.items(), key=lambda kv: (-kv[1], kv[0]))]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _bar(n: int, total: int, width: int = 200) -> Raw:
    w = 0 if not total else max(1, round(width * n / total)) if n else 0
    return Raw(f"<span class='bar' style='width:{w}px'></span> {n}")


def _histograms(groups: list[dict[str, Any]]) -> list[str]:
    """Group-size histogram (stacked by split), groups per category and split, images per category."""
    if not groups:
        return ["<p class='muted'>no groups</p>"]
    import numpy as np

    plots = []
    sizes: dict[str, list[int]] = defaultdict(list)
    for g in groups:
        sizes[g["split"]].append(1 + len(g["references"] or []))
    splits = [s for s in SPLITS if s in sizes] + sorted(set(sizes) - set(SPLITS))
    lo, hi = min(min(v) for v in sizes.values()), max(max(v) for v in sizes.values())
    edges = np.arange(lo, hi + 2) - 0.5 if hi - lo < 40 else np.linspace(lo - 0.5, hi + 0.5, 41)
    fig, ax = new_figure()
    ax.hist([sizes[s] for s in splits], bins=edges, stacked=True, label=splits)
    ax.set_xlabel("images per group (target + references)")
    ax.set_ylabel("groups")
    ax.set_title("group sizes")
    if hi - lo < 40:
        ax.set_xticks(range(lo, hi + 1, max(1, (hi - lo) // 12 or 1)))
    ax.legend(frameon=False)
    plots.append(plot_uri(fig))

    cats = sorted({g["category"] or "-" for g in groups})
    per = Counter((g["category"] or "-", g["split"]) for g in groups)
    imgs = Counter()
    for g in groups:
        imgs[g["category"] or "-"] += 1 + len(g["references"] or [])
    fig, ax = new_figure()
    left = np.zeros(len(cats))
    for s in splits:
        vals = np.array([per[(c, s)] for c in cats], dtype=float)
        ax.barh(cats, vals, left=left, label=s)
        left += vals
    for k, c in enumerate(cats):
        ax.text(left[k], k, f"  {_plural(int(left[k]), 'group')}, {_plural(imgs[c], 'image')}", va="center", fontsize=8)
    ax.set_xlim(0, left.max() * 1.6 if left.max() else 1)
    ax.set_xlabel("groups")
    ax.set_title("groups per category")
    ax.legend(frameon=False, loc="lower right")
    plots.append(plot_uri(fig))
    summary = table(["split", "groups", "images", "min size", "median size", "max size"],
                    [(s, len(sizes[s]), sum(sizes[s]), min(sizes[s]), f"{float(np.median(sizes[s])):g}", max(sizes[s]))
                     for s in splits], numeric=(1, 2, 3, 4, 5))
    return ["<div class='plots'>" + "".join(f"<img src='{u}' alt='histogram'> " for u in plots) + "</div>", summary]


def build_report(run_dir: str | Path, *, per_reason: int = 8, max_groups: int = 12, max_pairs: int = 30,
                 thumb: int = 112) -> str:
    """The report page of ``run_dir`` as HTML text.

    Args:
        run_dir: A ``mrbench curate`` run folder (finished: it has ``stats.json``).
        per_reason: Reject thumbnails shown per reason.
        max_groups: Groups shown per split in the gallery.
        max_pairs: Near-duplicate pairs shown (most similar first).
        thumb: Thumbnail size in pixels (longest side).

    Raises:
        ReportError: ``run_dir`` is not a finished run folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    stats = _read_stats(run_dir)
    status = _prefixed(stats.get("release", {}), "status/")
    body: list[str] = []

    # --- overview
    layout = RunLayout(run_dir)
    manifest_path = layout.manifest
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    cfg = manifest.get("config", {})
    total = sum(status.values())
    release_rows = manifest.get("rows", status.get("ok", 0))
    settings = []
    emb = cfg.get("embed", {})
    if emb.get("encoder"):
        settings.append(f"encoder <code>{esc(str(emb['encoder']))}</code>")
    if emb.get("face_encoder"):
        settings.append(f"face encoder <code>{esc(str(emb['face_encoder']))}</code>")
    if cfg.get("dedup", {}).get("threshold") is not None and emb.get("encoder"):
        settings.append(f"dedup cosine &ge; {cfg['dedup']['threshold']}")
    if cfg.get("group"):
        g = cfg["group"]
        settings.append(f"group size {g.get('min_group_size')}&ndash;{g.get('max_group_size')}")
    body.append(
        f"<p class='note'>Run folder <code>{esc(str(run_dir.resolve()))}</code>"
        + (f"; release <b>{esc(str(manifest.get('name', '')))}</b>" if manifest else "")
        + f": {total} URLs in, <b>{release_rows}</b> images released ({release_rows / total:.1%})." if total else "")
    if settings:
        body.append("<p class='note'>Settings: " + "; ".join(settings) + ".</p>")

    # --- funnel
    body.append("<h2 id='funnel'>Funnel</h2><p class='note'>Every URL selected for download ends in exactly one "
                "status; a step's drops are the rows whose status it set.</p>")
    ingest, select = stats.get("ingest", {}), stats.get("select", {})
    rows: list[tuple[Any, ...]] = []
    if "ingest/rows" in ingest:  # source rows read -> rows whose caption (or folder) names a tag
        n_in, n_out = ingest["ingest/rows"], ingest.get("ingest/candidates", 0)
        failed = ingest.get("ingest/where_failed", 0)
        if failed:  # rows failing their source's where: counted, never downloaded
            rows.append(("ingest (where: never downloaded)", n_in, failed, Raw(f"{n_in - failed}")))
            n_in -= failed
        rows.append(("ingest (tag match)", n_in, n_in - n_out, Raw(f"{n_out}")))
    if "select/selected" in select:  # candidates -> URLs selected (cap per tag, repeated URLs)
        n_in = ingest.get("ingest/candidates", select["select/selected"])
        # block-listed URLs stay as rows (their status is in the funnel below): they leave there, not here
        n_out = select["select/selected"] + sum(v for k, v in select.items() if k.startswith("select/blocked_"))
        rows.append(("select (caps, repeats)", n_in, n_in - n_out, Raw(f"{n_out}")))
    rows += [(step, vin, drop, _bar(vout, total)) for step, vin, drop, vout in _funnel(status)]
    body.append(table(["step", "rows in", "dropped", "rows out"], rows, sortable=False, numeric=(1, 2)))
    per_tag = _per_tag(layout)
    if per_tag:
        body.append(f"<h3>Per tag <span class='muted'>({_plural(len(per_tag), 'tag')}"
                    f"{'; the ' + str(MAX_TAGS) + ' with most candidates' if len(per_tag) > MAX_TAGS else ''})</span>"
                    "</h3>")
        body.append(table(["tag", "candidates", "selected", "downloaded ok", "released"], per_tag[:MAX_TAGS],
                          numeric=(1, 2, 3, 4)))
    order = drop_step_order()
    status_rows = sorted(status.items(), key=lambda kv: (kv[0] != "ok", order.index(drop_step(kv[0]))
                                                         if drop_step(kv[0]) in order else 99, -kv[1], kv[0]))
    body.append("<h3>Rows per status and step</h3>")
    body.append(table(["status", "step", "rows", "share"],
                      [(k, "release" if k == "ok" else drop_step(k), v, f"{v / total:.1%}" if total else "-")
                       for k, v in status_rows], numeric=(2, 3)))

    # --- rejects
    reasons = {k for k in status if k != "ok"}
    examples = _reject_examples(run_dir, reasons, per_reason) if reasons else {}
    dups_path = layout.duplicates
    dups = pq.read_table(dups_path).to_pylist() if dups_path.is_file() else []
    dups.sort(key=lambda r: (-r["similarity"], r["id"]))
    dups = dups[:max_pairs]
    groups_path = layout.groups_table
    groups = pq.read_table(groups_path).to_pylist() if groups_path.is_file() else []
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in sorted(groups, key=lambda g: g["group"]):
        by_split[g["split"]].append(g)
    shown_groups = {s: v[:max_groups] for s, v in by_split.items()}
    wanted = {r["id"] for rs in examples.values() for r in rs}
    wanted |= {r["id"] for r in dups} | {r["duplicate_of"] for r in dups}
    wanted |= {i for gs in shown_groups.values() for g in gs for i in [g["target"], *(g["references"] or [])]}
    leaks = shown_leak_pairs(run_dir)
    wanted |= {r["id_a"] for r in leaks} | {r["id_b"] for r in leaks}
    images = run_images(run_dir, wanted)

    body.append("<h2 id='rejects'>Rejects per reason</h2><p class='note'>The first "
                f"{per_reason} rows of each reason (by shard and id); hover for the URL and message. Download "
                "failures have no image. Every reject is in <code>rejects/</code>.</p>")
    for reason, n in [kv for kv in status_rows if kv[0] != "ok"]:
        rows_r = examples.get(reason, [])
        head = (f"<h3>{esc(reason)} <span class='muted'>({esc(drop_step(reason))}, {_plural(n, 'row')})</span>"
                "</h3>")
        if not any(r["id"] in images for r in rows_r):  # failed downloads: no bytes, so URL and message
            body.append(head + (table(["id", "url", "message", "tags", "caption"],
                                      [(r["id"], r["url"], r["error_message"], ", ".join(r.get("tags") or []),
                                        r.get("caption") or "") for r in rows_r], sortable=False)
                                if rows_r else "<p class='muted'>no rows listed</p>"))
            continue
        figs = [figure(try_thumb(images.get(r["id"]), thumb), r["error_message"] or r["id"],
                       title=f"{r['id']}  {r['url']}\n{r['error_message']}", size=thumb) for r in rows_r]
        body.append(head + f"<div class='thumbs'>{''.join(figs)}</div>")

    # --- near-duplicates
    body.append("<h2 id='dedup'>Near-duplicate pairs removed</h2>")
    if not dups_path.is_file():
        body.append("<p class='muted'>dedup did not run (no image encoder configured).</p>")
    elif not dups:
        body.append("<p class='muted'>no near-duplicates found.</p>")
    else:
        n_all = stats.get("dedup", {}).get("dedup/dropped/near_duplicate", len(dups))
        body.append(f"<p class='note'>{n_all} images removed as near-duplicates; the {len(dups)} most similar "
                    "pairs are shown: removed image, the image kept, cosine similarity. Duplicates found again "
                    "inside a group are under <code>duplicate_in_group</code> above.</p>")
        body.append(table(["removed", "kept", "cosine similarity"],
                          [(Raw(figure(try_thumb(images.get(r["id"]), thumb), r["id"], size=thumb)),
                            Raw(figure(try_thumb(images.get(r["duplicate_of"]), thumb), r["duplicate_of"], size=thumb)),
                            f"{r['similarity']:.4f}") for r in dups], numeric=(2,)))

    # --- groups
    body.append("<h2 id='groups'>Groups</h2><p class='note'>Per split, the first groups by id: the target "
                "(green frame), then its references.</p>")
    for s in [s for s in SPLITS if s in by_split] + sorted(set(by_split) - set(SPLITS)):
        body.append(f"<h3>{esc(s)} <span class='muted'>({_plural(len(by_split[s]), 'group')})</span></h3><div>")
        for g in shown_groups[s]:
            refs = g["references"] or []
            figs = [figure(try_thumb(images.get(g["target"]), thumb), "target", title=g["target"], cls="target",
                           size=thumb)]
            figs += [figure(try_thumb(images.get(i), thumb // 4 * 3), "", title=i, size=thumb // 4 * 3) for i in refs]
            body.append(f"<div class='card'><b>{esc(g['tag'] or g['group'])}</b> <span class='muted'>"
                        f"{esc(g['category'] or '')} &middot; {1 + len(refs)} images &middot; {esc(g['group'])}</span>"
                        f"<div class='thumbs'>{''.join(figs)}</div></div>")
        body.append("</div>")

    # --- histograms
    body.append("<h2 id='histograms'>Group sizes and categories</h2>")
    body += _histograms(groups)

    # --- audit
    leak_path = layout.leakage_report
    if leak_path.is_file():
        audit = json.loads(leak_path.read_text())
        body.append("<h2 id='audit'>Leakage audit</h2>")
        pairs = audit.get("pairs", {})
        by_kind = audit.get("removed_train_images_by_kind", {})
        cuts = [f"{k.replace('_', '-')} cosine &ge; {audit[f]}" for k, f in (("near_duplicate", "near_dup_threshold"),
                                                                           ("identity", "identity_threshold"))
                if audit.get(f) is not None]
        body.append(f"<p class='note'>Thresholds: {'; '.join(cuts) or 'none'}. <b>{audit.get('removed_train_images', 0)}"
                    "</b> training images removed as leaks"
                    + (" (" + ", ".join(f"{n} as {esc(k.replace('_', '-'))} leaks" for k, n in by_kind.items()) + ")"
                       if by_kind else "") + ".</p>")
        body.append(table(["pairs across splits", "count"], sorted(pairs.items()), numeric=(1,)) if pairs
                    else "<p class='muted'>no pairs across splits.</p>")
        if leaks:
            body.append("<h3>Leaking pairs</h3><p class='note'>Per kind the most similar pairs and those nearest the "
                        "threshold, where a false leak (two different images or people) would be: look before "
                        "trusting the removals.</p>")
            body.append(table(["kind", "earlier split", "later split", "cosine", "action"], [
                (r["kind"].replace("_", "-"),
                 Raw(figure(try_thumb(images.get(r["id_a"]), thumb), f"{r['split_a']} {r['group_a']}", title=r["id_a"],
                            size=thumb)),
                 Raw(figure(try_thumb(images.get(r["id_b"]), thumb), f"{r['split_b']} {r['group_b']}", title=r["id_b"],
                            size=thumb)),
                 f"{r['similarity']:.4f}", r["action"]) for r in leaks], numeric=(3,)))
    nav = " &middot; ".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("funnel", "funnel"), ("rejects", "rejects"), ("dedup", "near-duplicates"), ("groups", "groups"),
        ("histograms", "histograms"), *([("audit", "leakage audit")] if leak_path.is_file() else [])))
    return page(f"Curation report: {manifest.get('name') or run_dir.name}", [f"<p>{nav}</p>", *body])


def write_report(run_dir: str | Path, out: str | Path | None = None, **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``out`` (default ``RUN_DIR/report.html``); returns the path."""
    path = Path(out) if out is not None else RunLayout(run_dir).report
    atomic_write_text(path, build_report(run_dir, **kwargs))
    return path
