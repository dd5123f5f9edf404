"""Reference-count slices, paired comparisons, the gain over prompt-only, and what the shared page must not do
(name a random-weights row best, repeat the failures-as-0 table, carry absolute paths)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from pagecheck import load_page, needs_chromium

from mrbench.evaluation.leaderboard import Run, board_tables, build_leaderboard
from mrbench.evaluation.leaderboard_html import render_html, shareable
from mrbench.evaluation.paired import paired_diff
from mrbench.evaluation.results import CONFIG_FILE, SAMPLES_FILE, SUMMARY_FILE, reference_bucket, summarize

KEY = "image_sim@enc.target"
FIELDS = {KEY: {"direction": "higher", "description": "cosine"}}
# 8 groups, 2 samples each, 2 seeds; group g has REFS[g] references (buckets 1, 2-3, 4-7, 8+, two groups each)
REFS = [1, 1, 2, 3, 4, 6, 8, 12]
SEEDS = (0, 1)


def _rows(model: str, offset: float, noise: float = 0.0, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for g, n in enumerate(REFS):
        for s in range(2):
            for sd in SEEDS:
                v = 0.1 * g + 0.01 * s + offset + noise * float(rng.normal())
                rows.append({"sample_id": f"g{g}/s{s}", "group": f"g{g}", "split": "test", "seed": sd,
                             "status": "ok", "metrics": {KEY: v}, "n_references": n, "model": model,
                             "reference_ids": [f"g{g}/r{k}" for k in range(n)]})
    return rows


def _run(model: str, rows: list[dict], random: bool = False, path: str = "/home/curator/data/bench") -> Run:
    bench = {"name": "folder", "split": "test", "path": path, "fingerprint": "f" * 16, "limit": None,
             "seeds": list(SEEDS)}
    summary = {"model": model, "benchmark": bench, "splits": summarize(rows, FIELDS, n_boot=200),
               "random_weights": random, "model_random_weights": random,
               "encoders": {"image_sim@enc": {"weights": "torchvision (/home/curator/.cache/torch/w.pth)",
                                              "random_weights": False}}}
    return Run(Path(f"/runs/{model}-run"), {"metrics": [], "eval": {"n_boot": 200}}, summary, rows)


def test_reference_slices_in_summary() -> None:
    assert [reference_bucket(n) for n in (1, 2, 3, 4, 7, 8, 40)] == ["1", "2-3", "2-3", "4-7", "4-7", "8+", "8+"]
    rows = _rows("a", 0.0)
    sl = summarize(rows, FIELDS, n_boot=100)["test"]["by_references"]
    assert sl["buckets"] == ["1", "2-3", "4-7", "8+"]
    for label, groups in (("1", (0, 1)), ("2-3", (2, 3)), ("4-7", (4, 5)), ("8+", (6, 7))):
        body = sl["slices"][label]
        hand = np.mean([0.1 * g + 0.005 for g in groups])  # per-group means, then over the bucket's groups
        assert body["metrics"][KEY]["mean"] == pytest.approx(hand)
        assert body["groups"] == 2 and body["samples"] == 4 and body["rows"] == 8
        assert body["metrics"][KEY]["n_groups"] == 2


def test_paired_bootstrap_difference_interval_and_win_rate() -> None:
    a, b = _rows("a", 0.05, noise=0.01, seed=1), _rows("b", 0.0, noise=0.01, seed=2)
    d = paired_diff(a, b, KEY, n_boot=500)
    per_pair = {(r["sample_id"], r["seed"]): r["metrics"][KEY] for r in a}
    diffs = {}
    for r in b:
        diffs.setdefault(r["group"], []).append(per_pair[(r["sample_id"], r["seed"])] - r["metrics"][KEY])
    assert d.mean == pytest.approx(np.mean([np.mean(v) for v in diffs.values()]))
    assert d.n_groups == 8 and d.n_pairs == 32
    assert d.ci_low < d.mean < d.ci_high and d.separable and d.ci_low > 0
    wins = sum(v > 0 for vs in diffs.values() for v in vs) / 32
    assert d.win_rate == pytest.approx(wins)
    assert paired_diff(a, b, KEY, n_boot=500) == d  # seeded: a pure function of the rows
    # Lower is better: the same difference, the win rate seen from the other side.
    assert paired_diff(a, b, KEY, direction="lower", n_boot=500).win_rate == pytest.approx(1 - wins)
    # Only pairs both runs scored: a failed row in b drops that pair.
    b_failed = [dict(r, status="generation_error", metrics={}) if r["sample_id"] == "g0/s0" else r for r in b]
    assert paired_diff(a, b_failed, KEY, n_boot=500).n_pairs == 30
    tied = paired_diff(a, _rows("c", 0.05, noise=0.01, seed=3), KEY, n_boot=500)
    assert not tied.separable and tied.ci_low < 0 < tied.ci_high


def _board_runs() -> list[Run]:
    return [
        _run("best", _rows("best", 0.10, noise=0.01, seed=1)),
        _run("close", _rows("close", 0.099, noise=0.01, seed=2)),  # not separable from best
        _run("far", _rows("far", 0.0, noise=0.01, seed=3)),  # clearly worse
        _run("noise", _rows("noise", 0.5, noise=0.01, seed=4), random=True),  # highest mean, random weights
        _run("prompt-only", _rows("prompt-only", -0.2, noise=0.01, seed=5)),
        _run("reference", _rows("reference", 0.9)),
    ]


def test_page_marks_best_ties_gains_and_never_a_random_row() -> None:
    (table,) = board_tables(_board_runs())
    html = render_html([table])
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<tr class='[a-z]*'><td data-v='([^']+)'>(.*?)</tr>", html)}
    assert "num best" in rows["best"] and "num best" not in rows["noise"]  # the random row is the highest, not best
    assert "num near" in rows["close"] and "num near" not in rows["far"] and "num near" not in rows["noise"]
    assert "gain over prompt-only: image similarity to target (enc)" in html
    gain = re.findall(r"data-v='([^']+)'", rows["best"])[-1]  # the gain column closes the row
    best_rows, base_rows = (r.rows for r in _board_runs() if r.model in ("best", "prompt-only"))
    assert float(gain) == pytest.approx(paired_diff(best_rows, base_rows, KEY, n_boot=200).mean)
    assert float(gain) == pytest.approx(0.3, abs=0.02) and re.search(r">\+0\.\d{3} \[\+0\.\d{3}, \+0\.", rows["best"])
    assert "Paired comparisons" in html and "Best: best; not separable from it: close." in html
    assert "By number of references" in html and html.count("data:image/png;base64,") >= 1
    # Nothing failed: no failures-as-0 twin.
    assert "Failures counted as 0" not in html and "No row failed" in html


def test_no_gain_column_without_prompt_only_and_no_best_among_random_rows() -> None:
    runs = [r for r in _board_runs() if r.model != "prompt-only"]
    html = render_html(board_tables(runs))
    assert "gain over prompt-only:" not in html
    random_only = [_run(m, _rows(m, o), random=True) for m, o in (("a", 0.0), ("b", 0.3))] + [runs[-1]]
    html = render_html(board_tables(random_only))
    assert "num best" not in html and "num near" not in html
    assert "No best named: fewer than two contenders without random weights." in html


def _write_run(folder: Path, run: Run) -> Path:
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(json.dumps(run.config))
    (folder / SUMMARY_FILE).write_text(json.dumps(run.summary))
    (folder / SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in run.rows))
    return folder


def test_files_carry_slices_pairs_and_gains_and_the_page_no_absolute_paths(tmp_path: Path) -> None:
    dirs = [_write_run(tmp_path / "runs" / f"{r.model}-run", r) for r in _board_runs()]
    paths = build_leaderboard(dirs, tmp_path / "board", grid_samples=0)
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    best = [r for r in table if r["model"] == "best" and r["metric"] == KEY]
    assert [r["references"] for r in best] == ["all", "1", "2-3", "4-7", "8+"]
    assert float(best[0]["gain_over_prompt_only"]) == pytest.approx(0.3, abs=0.02)
    assert best[1]["gain_over_prompt_only"] == ""  # gains are for the split's estimate
    with open(paths["paired_csv"]) as f:
        pairs = list(csv.DictReader(f))
    models = ["best", "close", "far", "noise", "prompt-only"]
    assert len(pairs) == len(models) * (len(models) - 1) // 2  # every pair of model rows; scale rows left out
    bc = next(p for p in pairs if p["model_a"] == "best" and p["model_b"] == "close")
    assert bc["separable"] == "False" and bc["b_not_separable_from_best"] == "True" and bc["best"] == "best"
    md = paths["md"].read_text()
    assert "### folder / test: paired comparisons" in md and "### folder / test: by number of references" in md
    assert "| gain over prompt-only: image_sim@enc.target" in md
    html = paths["html"].read_text()
    assert "/home/curator" not in html and ".../w.pth" in html and "at bench," in html


@needs_chromium
def test_compare_page_loads_in_chromium_without_errors(tmp_path: Path) -> None:
    dirs = [_write_run(tmp_path / "runs" / f"{r.model}-run", r) for r in _board_runs()]
    dom, errors = load_page(build_leaderboard(dirs, tmp_path / "board", grid_samples=0)["html"])
    assert errors == [] and "Paired comparisons" in dom and "gain over prompt-only" in dom


def test_shareable_strips_absolute_paths_only() -> None:
    assert shareable("torchvision (/root/.cache/torch/hub/w.pth), views: 3") == "torchvision (.../w.pth), views: 3"
    assert shareable("folder at ~/photos/dogs/") == "folder at .../dogs"
    assert shareable("http://127.0.0.1/a/b.png and 0.5/1.0") == "http://127.0.0.1/a/b.png and 0.5/1.0"
