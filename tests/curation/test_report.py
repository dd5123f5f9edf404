"""``mrbench report``: the curation run as one self-contained page (written at the end of every curate)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.report import ReportError, build_report, write_report
from pagecheck import assert_self_contained, load_page, needs_chromium
from smallweb import write_small_inputs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, small_web) -> Path:
    from mrbench.curation.pipeline import run_curation
    from webserver import SampleWebServer

    tmp = tmp_path_factory.mktemp("report")
    with SampleWebServer(small_web) as server:
        cfg = load_config(CurateConfig, write_small_inputs(tmp / "in", server.base_url, small_web))
        summary = run_curation(cfg, tmp / "run")
    assert summary["report"] == str((tmp / "run" / "report.html").resolve())
    return tmp / "run"


def test_funnel_and_statuses_match_the_stats(run: Path) -> None:
    html = (run / "report.html").read_text()
    assert_self_contained(html)
    status = {k.split("/", 1)[1]: v for k, v in json.loads((run / "stats.json").read_text())["release"]["counts"].items()
              if k.startswith("status/")}
    funnel = html[html.index("id='funnel'"):html.index("id='rejects'")]
    total = sum(status.values())
    assert f"<td>download</td><td class='num'>{total}</td>" in funnel
    assert re.search(rf"</span> {status['ok']}</td></tr></tbody></table>\s*<h3>Per tag", funnel)  # rows out
    for reason, n in status.items():
        assert f"<td>{reason}</td>" in funnel
        if reason != "ok":  # one section per reason, with its count
            assert f"<h3>{reason} <span class='muted'>(" in html and f", {n} row" in html


def test_rejects_groups_and_histograms(run: Path) -> None:
    html = (run / "report.html").read_text()
    rejects = html[html.index("id='rejects'"):html.index("id='dedup'")]
    assert "/broken/" in rejects  # failed downloads: their URLs (no image to show)
    groups = pq.read_table(run / "groups" / "groups.parquet").to_pylist()
    gallery = html[html.index("id='groups'"):html.index("id='histograms'")]
    assert gallery.count("class='card'") == len(groups)
    assert gallery.count("class='target'") == len(groups)
    assert gallery.count("data:image/jpeg;base64,") == sum(1 + len(g["references"]) for g in groups)
    assert html[html.index("id='histograms'"):].count("data:image/png;base64,") == 2
    assert "dedup did not run" in html  # this config names no encoder


def test_report_of_an_unfinished_run_says_how_to_go_on(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="has not finished"):
        (tmp_path / "run_state.json").write_text("{}")
        build_report(tmp_path)
    out = write_report(run, tmp_path / "r.html", per_reason=1, max_groups=1)
    assert out.read_text().count("class='card'") <= 3  # one group per split


@needs_chromium
def test_report_loads_in_chromium_without_errors(run: Path) -> None:
    dom, errors = load_page(run / "report.html")
    assert errors == []
    assert "Curation report" in dom and "Near-duplicate pairs removed" in dom and "<img" in dom
