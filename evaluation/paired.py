"""Paired comparisons of two runs on the same samples: a paired bootstrap over groups.

Two runs of one leaderboard table saw the same samples with the same seeds (same benchmark fingerprint, limit and
seeds), so their rows pair up by ``(sample_id, seed)``. For a metric field, the difference ``a - b`` is taken on each
pair where both rows are ok and scored, averaged per group, then over groups (the leaderboard's own aggregation);
the 95 % interval resamples groups (both runs' values of a group move together: the pairing is kept), with a fixed
seed, so a comparison is a pure function of the rows. The win rate is the share of pairs where ``a`` is better
than ``b`` by the metric's direction (ties count half).

Two models are *separable* on a field when the interval of their difference excludes 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

BOOT_SEED = 0


@dataclass
class PairedDiff:
    """``a - b`` on one field over the pairs both runs scored."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    win_rate: float | None
    n_groups: int
    n_pairs: int

    @property
    def separable(self) -> bool:
        """The 95 % interval excludes 0 (a single group gives no interval: never separable)."""
        if self.mean is None or self.n_groups < 2:
            return False
        return self.ci_low > 0 or self.ci_high < 0  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        return {"mean_diff": self.mean, "ci": [self.ci_low, self.ci_high], "win_rate": self.win_rate,
                "n_groups": self.n_groups, "n_pairs": self.n_pairs, "separable": self.separable}


def _values(rows: Sequence[dict[str, Any]], key: str) -> dict[tuple[str, int], tuple[str, float]]:
    out = {}
    for r in rows:
        v = (r.get("metrics") or {}).get(key)
        if r.get("status") == "ok" and v is not None:
            out[(r["sample_id"], int(r["seed"]))] = (r["group"], float(v))
    return out


def paired_diff(a_rows: Sequence[dict[str, Any]], b_rows: Sequence[dict[str, Any]], key: str,
                direction: str = "higher", n_boot: int = 1000, seed: int = BOOT_SEED) -> PairedDiff:
    """Paired bootstrap of ``a - b`` on field ``key`` over groups (see the module docstring).

    Args:
        a_rows: ``samples.jsonl`` rows of run a (one split).
        b_rows: Rows of run b, same samples and seeds.
        key: Metric field key.
        direction: ``higher`` or ``lower`` is better (for the win rate).
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.
    """
    a, b = _values(a_rows, key), _values(b_rows, key)
    per_group: dict[str, list[float]] = defaultdict(list)
    wins = 0.0
    common = sorted(set(a) & set(b))
    for k in common:
        d = a[k][1] - b[k][1]
        per_group[a[k][0]].append(d)
        better = d > 0 if direction != "lower" else d < 0
        wins += 1.0 if better else (0.5 if d == 0 else 0.0)
    if not common:
        return PairedDiff(None, None, None, None, 0, 0)
    g = np.array([np.mean(v) for _, v in sorted(per_group.items())], dtype=np.float64)
    mean = float(g.mean())
    if len(g) == 1:
        lo = hi = mean
    else:
        rng = np.random.default_rng(seed)
        boots = g[rng.integers(0, len(g), size=(n_boot, len(g)))].mean(axis=1)
        lo, hi = (float(x) for x in np.quantile(boots, [0.025, 0.975]))
    return PairedDiff(mean, lo, hi, wins / len(common), len(g), len(common))


def compare_all(runs: Sequence[tuple[str, Sequence[dict[str, Any]], float | None]], key: str, direction: str,
                n_boot: int = 1000, seed: int = BOOT_SEED) -> dict[str, Any]:
    """Every pair of ``runs`` (``(name, rows, mean)``, contenders only) on one field, and which runs the best one
    cannot be told apart from.

    Returns ``{"best": name or None, "pairs": [{"a", "b", **PairedDiff.to_dict()}], "not_separable": [names]}``:
    ``best`` is the run with the best mean; ``not_separable`` are the others whose paired interval with the best
    includes 0.
    """
    pairs = []
    for i, (na, ra, _) in enumerate(runs):
        for nb, rb, _ in runs[i + 1:]:
            pairs.append({"a": na, "b": nb, **paired_diff(ra, rb, key, direction, n_boot, seed).to_dict()})
    scored = [(n, m) for n, _, m in runs if m is not None]
    if len(scored) < 2:
        return {"best": None, "pairs": pairs, "not_separable": []}
    best = (min if direction == "lower" else max)(scored, key=lambda x: x[1])[0]
    tied = []
    for p in pairs:
        if best in (p["a"], p["b"]) and p["mean_diff"] is not None and not p["separable"]:
            tied.append(p["b"] if p["a"] == best else p["a"])
    return {"best": best, "pairs": pairs, "not_separable": sorted(tied)}
