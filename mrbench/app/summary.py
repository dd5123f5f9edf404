"""The summary of a curation run, as ``mrbench curate`` and ``mrbench demo`` print it (rich tables)."""

from __future__ import annotations

from mrbench.curation.drops import drop_step, drop_step_order
from mrbench.records import SPLITS


def print_summary(summary: dict) -> None:
    """Print the summary of a curation run (rows per status and step, leakage audit, splits, release)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="rows per status and step")
    t.add_column("status")
    t.add_column("step")
    t.add_column("rows", justify="right")
    order = drop_step_order()
    for k, v in sorted(summary["rows_per_status"].items(),
                       key=lambda kv: (kv[0] != "ok", order.index(drop_step(kv[0])), -kv[1], kv[0])):
        t.add_row(k, "release" if k == "ok" else drop_step(k), str(v))
    console.print(t)
    audit = summary.get("leakage_audit")
    if audit is not None:
        a = Table(title="leakage audit (pairs across splits)")
        for c in ("kind", "splits", "pairs"):
            a.add_column(c)
        for key, n in audit["pairs"].items():
            kind, splits = key.split("/", 1)
            a.add_row(kind, splits, str(n))
        if not audit["pairs"]:
            a.add_row("near_duplicate, identity", "all", "0")
        console.print(a)
        identity = (f"identity cosine >= {audit['identity_threshold']}" if audit.get("identity_threshold") is not None
                    else "identities not checked: no embed.face_encoder")
        console.print(f"leakage audit: {audit['pairs_total']} pairs; {audit['removed_train_images']} training images "
                      f"removed, {audit['dropped_groups']} groups dropped (near-duplicate cosine >= "
                      f"{audit['near_dup_threshold']}, {identity})")
    g = Table(title="splits")
    for c in ("split", "groups", "images"):
        g.add_column(c)
    for s in SPLITS:
        g.add_row(s, str(summary["groups_per_split"].get(s, 0)), str(summary["images_per_split"].get(s, 0)))
    console.print(g)
    console.print(f"release: {summary['release']} ({summary['release_rows']} images)")
    if summary.get("report"):
        console.print(f"report: {summary['report']}")
