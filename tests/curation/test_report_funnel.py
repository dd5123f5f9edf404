"""The report's funnel starts at the source rows (ingest rows in, rows matching no tag dropped), a per-tag table
follows it, and rejects/ rows carry the caption and tags they were selected for."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import yaml

from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import run_curation
from webserver import Route, SampleWebServer, encode
from smallweb import _photo


def test_funnel_rows_in_per_tag_and_reject_captions(tmp_path: Path) -> None:
    routes = {f"/img/{k}.jpg": Route(encode(_photo(k), "JPEG")) for k in range(3)}
    routes["/gone.jpg"] = Route(b"", status=404)
    (tmp_path / "tags.yaml").write_text("- {name: cafe, category: subject}\n- {name: tea, category: subject}\n")
    with SampleWebServer(routes) as server:
        rows = [(server.url(f"/img/{k}.jpg"), f"cafe {k}") for k in range(3)]
        rows += [(server.url("/gone.jpg"), "tea that is gone"), (server.url("/img/0.jpg"), "a caption naming nothing")]
        (tmp_path / "meta.csv").write_text("url,caption\n" + "".join(f"{u},{c}\n" for u, c in rows))
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({
            "num_shards": 1, "sources": [{"kind": "metadata", "paths": ["meta.csv"]}],
            "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "retries": 0},
            "split": {"held_out_groups": 1, "held_in_groups": 0}}))
        summary = run_curation(load_config(CurateConfig, tmp_path / "c.yaml"), tmp_path / "run")
    html = Path(summary["report"]).read_text()
    # ingest: 5 rows in, 1 matched no tag, 4 out
    assert "<td>ingest (tag match)</td><td class='num'>5</td><td class='num'>1</td><td>4</td>" in html, html
    assert "<td>cafe</td><td class='num'>3</td><td class='num'>3</td><td class='num'>3</td><td class='num'>3</td>" in html
    assert "<td>tea</td><td class='num'>1</td><td class='num'>1</td><td class='num'>0</td><td class='num'>0</td>" in html
    (rejects,) = (tmp_path / "run" / "rejects").glob("*.parquet")
    (row,) = pq.read_table(rejects).to_pylist()
    assert (row["status"], row["caption"], row["tags"]) == ("http_404", "tea that is gone", ["tea"])
