"""The leaderboard page: friendly names and directions, best values, n/a intervals, sorting, side-by-side gallery,
per-group plots; loaded in headless Chromium when it is installed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mrbench.evaluation.leaderboard_html import BoardRow, BoardTable, Column, format_cell, friendly_name, render_html
from mrbench.pages import SORT_JS, page, table
from pagecheck import assert_self_contained, load_page, needs_chromium

METRICS = "image_sim@dino-tiny"


def est(mean: float | None, lo: float = 0.0, hi: float = 1.0, n: int = 3) -> dict:
    return {"mean": mean, "ci": [lo, hi], "n_groups": n, "n_rows": n, "direction": "higher"}


def test_friendly_names() -> None:
    assert friendly_name("image_sim@mobilenet_v2.target") == "image similarity to target (mobilenet_v2)"
    assert friendly_name("clip_t@clip-tiny", 2.5) == "CLIP-T (clip-tiny) \u00d72.5"
    assert friendly_name("face@dlib.detected") == "face detection rate (dlib)"
    assert friendly_name("judge@qwen.score") == "judge score (qwen)"  # a plug-in: its own names


def test_interval_over_one_group_is_na() -> None:
    assert format_cell(est(0.968, 0.968, 0.968, n=1)) == ("0.968 [n/a]", 0.968)
    assert format_cell(est(0.5, 0.4, 0.6)) == ("0.500 [0.400, 0.600]", 0.5)
    assert format_cell(est(0.5, 0.4, 0.6), 2.0)[0] == "1.000 [0.800, 1.200]"
    assert format_cell(None) == ("-", None)


def test_best_value_per_column_follows_direction_and_skips_scale_rows() -> None:
    cols = [Column("m@e.target", "higher", "cosine"), Column("fid@e", "lower", "distance"), Column("face@e.refs")]
    rows = [
        BoardRow("a", "a", {"groups": 3}, {"m@e.target": est(0.4), "fid@e": est(20.0)}),
        BoardRow("b", "b", {"groups": 3}, {"m@e.target": est(0.6), "fid@e": est(30.0)}),
        BoardRow("reference", "reference", {"groups": 3}, {"m@e.target": est(0.9), "fid@e": est(1.0)}, real=True),
    ]
    html = render_html([BoardTable("bench", "test", cols, rows)])
    best = re.findall(r"<td class='num best' data-v='([^']+)'>", html)
    assert best == ["20", "0.6"]  # row a: lowest fid; row b: highest similarity; the ceiling row never marked
    assert "\u2191" in html and "\u2193" in html  # directions in the headers
    # face@e.refs has no value anywhere: listed under the table, not a column of dashes
    assert "No value in any row (not shown): face identity to references (e)." in html
    single = render_html([BoardTable("bench", "test", cols[:1], rows[:1] + rows[2:])])
    assert "num best" not in single  # one contender is not a ranking


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory, mini_dreambench: Path) -> Path:
    from mrbench.evaluation.leaderboard import build_leaderboard
    from mrbench.evaluation.runner import run_eval

    out = tmp_path_factory.mktemp("board")
    runs = [run_eval(m, f"dreambench:{mini_dreambench}", out / "runs", limit=3, images_per_prompt=2, metrics=METRICS,
                     profile="tiny").run_dir for m in ("reference", "chance")]
    return build_leaderboard(runs, out / "board")["html"]


def test_page_has_gallery_side_by_side_and_plots(board: Path) -> None:
    html = board.read_text()
    assert_self_contained(html)
    assert "image similarity to target (dino-tiny) \u2191" in html
    gallery = html[html.index("Samples: references | target | every model"):]
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", gallery).group(1)
    assert re.findall(r"<th>([a-z]+)", header) == ["references", "target", "reference", "chance"]
    assert gallery.count("<tr><td>") == 3  # one row per sample (limit 3), every model in it
    # per-group distributions (target, refs and all panels), then the headline field per reference count
    assert html.count("data:image/png;base64,") == 4
    assert "Per-group score distributions" in html and "By number of references" in html


@needs_chromium
def test_page_loads_in_chromium_without_errors(board: Path) -> None:
    dom, errors = load_page(board)
    assert errors == []
    assert "MRBench leaderboard" in dom and dom.count("<table") >= 2 and "data:image/jpeg;base64," in dom


@needs_chromium
def test_click_sorts_numbers_numerically_with_empty_cells_last(tmp_path: Path) -> None:
    """The page's own sorting script in a real browser: click a header twice, record the row order."""
    rows = [("a", "3.5 [1, 2]"), ("b", "n/a"), ("c", "10"), ("d", "2")]
    probe = ("<script>var th=document.querySelectorAll('th')[1],o=[];"
             "function order(){return Array.prototype.map.call(document.querySelectorAll('tbody tr'),"
             "function(r){return r.cells[0].textContent}).join('')}"
             "th.click();o.push(order());th.click();o.push(order());document.title=o.join('|');</script>")
    path = tmp_path / "sort.html"
    path.write_text(page("sort", [table(["name", "value"], rows)]).replace("</body>", probe + "</body>"))
    assert SORT_JS.strip() in path.read_text()
    dom, errors = load_page(path)
    assert errors == []
    assert "<title>dacb|cadb</title>" in dom  # ascending 2, 3.5, 10 then n/a; descending 10, 3.5, 2 then n/a
