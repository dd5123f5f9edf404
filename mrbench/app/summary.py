"""The summaries of a curation run (``mrbench curate``, ``mrbench demo``) and of an eval run (``mrbench eval``), as
rich tables."""

from __future__ import annotations

from typing import Any

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


def print_eval_summary(result: Any) -> None:
    """Print an eval run's tables (mean, 95% CI over groups and groups per metric, one table per split) and where
    its run folder is (:func:`mrbench.evaluation.runner.run_eval`'s result)."""
    from rich.console import Console
    from rich.table import Table

    summary = result.summary
    console = Console()
    flag = " [RANDOM WEIGHTS]" if summary["random_weights"] else ""
    for split, s in summary["splits"].items():
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(s["rows_per_status"].items(),
                                                                      key=lambda kv: (kv[0] != "ok", kv[0])))
        t = Table(title=f"{summary['model']} on {summary['benchmark']['name']}/{split}{flag}: "
                        f"{s['groups']} groups, {s['rows']} images ({statuses})")
        for c in ("metric", "mean", "95% CI (groups)", "groups"):
            t.add_column(c)

        def interval(ci: list, n_groups: int) -> str:  # one group has no spread to bootstrap
            return "n/a (1 group)" if n_groups < 2 else f"[{ci[0]:.4f}, {ci[1]:.4f}]"

        for key, est in s["metrics"].items():
            if est["mean"] is None:
                t.add_row(key, "-", "-", "0")
                continue
            t.add_row(key, f"{est['mean']:.4f}", interval(est["ci"], est["n_groups"]), str(est["n_groups"]))
            if est.get("scaled"):
                sc = est["scaled"]
                t.add_row(f"{key} x{sc['factor']:g}", f"{sc['mean']:.4f}", interval(sc["ci"], est["n_groups"]),
                          str(est["n_groups"]))
        console.print(t)
    timing = result.timing
    console.print(f"run folder: {result.run_dir}  (generated {timing['generated_images']}, from cache "
                  f"{timing['cached_images']}, resumed {timing['resumed_rows']}; {timing['wall_s']:.1f}s)")
