"""How much a judge's scores depend on things that should not matter: the order of the references (position bias)
and the decoding seed (seed stability).

- :func:`position_bias` judges every item twice, with the shown references in benchmark order and reversed, and
  reports per field the mean signed change (reversed - original), the mean absolute change, and the share of items
  whose raw answer text changed at all (meaningful even when the answers do not parse, as with random weights).
- :func:`seed_stability` judges every item once per decoding seed and reports per field the mean over items of the
  standard deviation across seeds, and the share of items whose answers differ between seeds. Greedy decoding
  ignores the seed (its spread is 0 by construction, and measured as such); a judge built with ``temperature`` > 0
  samples, seeded per question.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mrbench.evaluation.metrics import MetricInput


def _answers(detail: dict[str, Any]) -> str:
    """Every raw answer of one judged item, joined (both calls of the omnicontext protocol)."""
    if "calls" in detail:
        return "\n".join(c["answer"] for c in detail["calls"].values())
    return detail.get("answer", "")


def _field_names(metric: Any) -> list[str]:
    return [f.name for f in metric.fields if f.name != "parsed"]


def position_bias(metric: Any, items: Sequence[MetricInput]) -> dict[str, Any]:
    """Judge each item with its shown references in order and reversed (items with fewer than 2 are skipped).

    Returns ``{"items", "answers_changed", "fields": {field: {"pairs", "mean_change", "mean_abs_change"}}}``;
    ``pairs`` counts the items scored both times.
    """
    changes: dict[str, list[float]] = {f: [] for f in _field_names(metric)}
    changed = n = 0
    for it in items:
        refs = metric.shown_references(it)
        if len(refs) < 2:
            continue
        n += 1
        a, da = metric.judge(it, refs)
        b, db = metric.judge(it, list(reversed(refs)))
        changed += _answers(da) != _answers(db)
        for f in changes:
            va, vb = a.get(f"{metric.key}.{f}"), b.get(f"{metric.key}.{f}")
            if va is not None and vb is not None:
                changes[f].append(vb - va)
    return {"items": n, "answers_changed": changed / n if n else None,
            "fields": {f: {"pairs": len(v), "mean_change": float(np.mean(v)) if v else None,
                           "mean_abs_change": float(np.mean(np.abs(v))) if v else None} for f, v in changes.items()}}


def seed_stability(metric: Any, items: Sequence[MetricInput], seeds: Sequence[int] = (0, 1, 2)) -> dict[str, Any]:
    """Judge each item once per decoding seed.

    Returns ``{"items", "seeds", "answers_differ", "fields": {field: {"items", "mean_std"}}}``: ``mean_std`` is the
    mean over items (scored under every seed) of the standard deviation of the field across seeds.
    """
    spreads: dict[str, list[float]] = {f: [] for f in _field_names(metric)}
    differ = 0
    for it in items:
        results = [metric.judge(it, seed=s) for s in seeds]
        differ += len({_answers(d) for _, d in results}) > 1
        for f in spreads:
            vals = [r.get(f"{metric.key}.{f}") for r, _ in results]
            if all(v is not None for v in vals):
                spreads[f].append(float(np.std(vals)))
    return {"items": len(items), "seeds": list(seeds), "answers_differ": differ / len(items) if items else None,
            "fields": {f: {"items": len(v), "mean_std": float(np.mean(v)) if v else None} for f, v in spreads.items()}}
