"""The leaderboard ranks each column by its metric's registered direction (best value marked, best-first sorting)
and shows the registered aggregation; the registry, not what a run recorded, decides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pagecheck import load_page, needs_chromium

from mrbench.evaluation.leaderboard import Run, board_tables, column_direction
from mrbench.evaluation.leaderboard_html import render_html
from mrbench.evaluation.metrics import registered_metric
from mrbench.evaluation.registry import metrics

LOWER = "distance_test"  # registered in-process below: lower is better
AGGREGATION = "median over groups (test)"


@pytest.fixture
def lower_metric():
    metrics().register(LOWER, "mrbench.evaluation.metrics:ImageSim", direction="lower", aggregation=AGGREGATION,
                       help="test: a lower-is-better metric")
    yield LOWER
    metrics()._entries.pop(LOWER)  # the registry is process-wide: leave it as found


def _est(mean: float, recorded: str = "higher") -> dict:
    return {"mean": mean, "ci": [mean - 0.1, mean + 0.1], "n_groups": 3, "n_rows": 3, "direction": recorded}


def _run(model: str, values: dict[str, float]) -> Run:
    """A loaded run folder, built in memory: a summary whose recorded directions all say ``higher``."""
    bench = {"name": "folder", "split": "test", "path": "/nowhere", "fingerprint": "f" * 16, "limit": None,
             "seeds": [0]}
    split = {"rows": 3, "rows_per_status": {"ok": 3}, "failed": 0, "failure_rate": 0.0, "groups": 3, "samples": 3,
             "metrics": {k: _est(v) for k, v in values.items()}}
    summary = {"model": model, "benchmark": bench, "splits": {"test": split}, "encoders": {}}
    return Run(Path(f"/runs/{model}"), {"metrics": []}, summary, [])


def _runs() -> list[Run]:
    lower, higher = f"{LOWER}@enc.target", "image_sim@enc.target"
    return [_run("a", {lower: 0.2, higher: 0.3}), _run("b", {lower: 0.5, higher: 0.7}),
            _run("c", {lower: 0.9, higher: 0.5})]


def test_registry_direction_and_aggregation_reach_the_columns(lower_metric: str) -> None:
    assert registered_metric(f"{LOWER}@enc.target") == {"registered": True, "direction": "lower",
                                                        "aggregation": AGGREGATION}
    assert registered_metric("clip_t@clip-tiny")["direction"] == "higher"
    (table,) = board_tables(_runs())
    cols = {c.key: c for c in table.columns}
    assert cols[f"{LOWER}@enc.target"].direction == "lower"  # the run recorded "higher": the registry wins
    assert cols[f"{LOWER}@enc.target"].aggregation == AGGREGATION
    assert cols["image_sim@enc.target"].direction == "higher"
    html = render_html([table])
    best = re.findall(r"<td class='num best' data-v='([^']+)'>", html)
    assert best == ["0.2", "0.7"]  # run a: the lowest distance; run b: the highest similarity
    assert "data-better='lower'" in html and "\u2193" in html and AGGREGATION in html


def test_unregistered_metric_keeps_the_recorded_direction() -> None:
    assert column_direction("plugin_not_here@enc", {"direction": "lower"}) == ("lower", "")
    assert registered_metric("plugin_not_here@enc")["registered"] is False


@needs_chromium
def test_first_click_sorts_best_first(lower_metric: str, tmp_path: Path) -> None:
    """In a real browser: a lower-is-better column sorts ascending on the first click, a higher-is-better one
    descending."""
    probe = ("<script>function order(){return Array.prototype.map.call(document.querySelector('tbody').rows,"
             "function(r){return r.cells[0].getAttribute('data-v')}).join('')}var o=[];"
             "document.querySelector(\"th[data-better='lower']\").click();o.push(order());"
             "document.querySelector(\"th[data-better='higher']\").click();o.push(order());"
             "document.title=o.join('|');</script>")
    path = tmp_path / "board.html"
    path.write_text(render_html(board_tables(_runs())).replace("</body>", probe + "</body>"))
    dom, errors = load_page(path)
    assert errors == []
    assert "<title>abc|bca</title>" in dom  # distance 0.2, 0.5, 0.9; similarity 0.7, 0.5, 0.3


def test_markdown_marks_the_best_value_by_registered_direction(lower_metric: str, tmp_path: Path) -> None:
    from mrbench.evaluation.leaderboard import write_markdown

    runs = _runs() + [_run("reference", {f"{LOWER}@enc.target": 0.01, "image_sim@enc.target": 0.99})]
    write_markdown(runs, tmp_path / "board.md")
    md = (tmp_path / "board.md").read_text()
    first_table = md[: md.index("### ")]  # the ok-rows table (its failures-as-0 twin follows)
    rows = {line.split("|")[1].strip(): line for line in first_table.splitlines() if line.startswith("| ")
            and "---" not in line and "model" not in line.split("|")[1]}
    assert "**0.200 [0.100, 0.300]**" in rows["a"] and rows["a"].count("**") == 2  # the lowest distance
    assert "**0.700 [0.600, 0.800]**" in rows["b"] and rows["b"].count("**") == 2  # the highest similarity
    assert "**" not in rows["c"] and "**" not in rows["reference"]  # the ceiling row is a scale mark
    assert f"Lower is better: `{LOWER}@enc.target`." in md
