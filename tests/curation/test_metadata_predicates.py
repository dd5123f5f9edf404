"""Metadata predicates at ingest (``sources[].where``) and source columns carried into the release
(``keep_columns``), on a LAION-style parquet against a local web server."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from smallweb import _photo
from mrbench.config import InputError, load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.inputs import check_sources
from mrbench.curation.pipeline import run_curation
from mrbench.curation.release_verify import verify_release
from webserver import Route, SampleWebServer, encode

# (punsafe, pwatermark) per image k of each subject: k = 1 is unsafe, k = 2 watermarked, k = 3 has no score
SCORES = {0: (0.01, 0.1), 1: (0.9, 0.1), 2: (0.05, 0.95), 3: (None, 0.1), 4: (0.02, 0.3)}
NAMES = ["Barack Obama", "Spider-Man", "Van Gogh style"]


def write_laion(folder, base_url, **source):
    rows = {"URL": [], "TEXT": [], "punsafe": [], "pwatermark": [], "similarity": [], "NSFW": []}
    for s, name in enumerate(NAMES):
        for k, (unsafe, mark) in SCORES.items():
            rows["URL"].append(f"{base_url}/img/s{s}_{k}.jpg")
            rows["TEXT"].append(f"photo of {name}")
            rows["punsafe"].append(unsafe)
            rows["pwatermark"].append(mark)
            rows["similarity"].append(0.3 + 0.01 * k)
            rows["NSFW"].append("UNLIKELY")
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), folder / "laion.parquet")
    (folder / "tags.yaml").write_text(yaml.safe_dump([{"name": n, "category": "subject", "aliases": []} for n in NAMES]))
    cfg = {"seed": 3, "num_shards": 2,
           "sources": [{"kind": "metadata", "paths": ["laion.parquet"], "url_col": "URL", "caption_col": "TEXT",
                        **source}],
           "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "timeout": 2, "thread_count": 4},
           "group": {"min_group_size": 2, "consistency_min": 0.0, "dedup_threshold": None},
           "split": {"held_out_groups": 1, "held_in_groups": 1}}
    (folder / "curate.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "curate.yaml"


@pytest.mark.slow
def test_failing_rows_are_never_requested_and_kept_columns_reach_the_release(tmp_path):
    routes = {f"/img/s{s}_{k}.jpg": Route(encode(_photo(10 * s + k), "JPEG", quality=90))
              for s in range(3) for k in SCORES}
    with SampleWebServer(routes) as server:
        cfg_path = write_laion(tmp_path / "in", server.base_url, where="punsafe < 0.1 AND pwatermark < 0.8",
                               keep_columns=["punsafe", "similarity", "NSFW"])
        summary = run_curation(load_config(CurateConfig, cfg_path), tmp_path / "run")
        hits = dict(server.hits)
    requested = {p for p, n in hits.items() if n}
    assert requested == {f"/img/s{s}_{k}.jpg" for s in range(3) for k in (0, 4)}  # 1, 2, 3 fail the predicate
    assert summary["release_rows"] == 6
    import json

    stats = json.loads((tmp_path / "run" / "stats.json").read_text())["ingest"]["counts"]
    assert stats["ingest/where_failed"] == 9 and stats["ingest/where_failed/0"] == 9
    assert stats["ingest/rows"] == 15 and stats["ingest/candidates"] == 6
    release = tmp_path / "run" / "release"
    assert verify_release(release) == []
    table = pa.concat_tables([pq.read_table(f) for f in sorted((release / "data").glob("*.parquet"))])
    assert table.schema.field("punsafe").type == pa.float64()
    assert table.schema.field("NSFW").type == pa.string()
    assert sorted(table.column("punsafe").to_pylist()) == [0.01, 0.01, 0.01, 0.02, 0.02, 0.02]
    assert set(table.column("similarity").to_pylist()) == {0.3 + 0.01 * k for k in (0, 4)}  # the source values
    card = (release / "README.md").read_text()
    assert "| `punsafe` | double |" in card and "9 rows never downloaded" in card
    assert "ingest (where: never downloaded)</td><td class='num'>15</td><td class='num'>9</td>" in \
        (tmp_path / "run" / "report.html").read_text()
    import datasets

    ds = datasets.load_dataset(str(release), split="train")
    assert "punsafe" in ds.column_names and "similarity" in ds.column_names
    assert ds[0]["image"].size == (96, 80)


@pytest.mark.parametrize("source, message", [
    ({"where": "nsfw_score < 0.1"}, r"sources\[0\]\.where 'nsfw_score < 0.1' does not apply to laion.parquet: "
                                    r"Binder Error"),
    ({"where": "punsafe <"}, r"sources\[0\]\.where 'punsafe <' does not apply.*Parser Error"),
    ({"where": "punsafe + 1"}, r"is not a true/false condition \(it gives DOUBLE\)"),
    ({"keep_columns": ["aesthetic"]}, r"sources\[0\]\.keep_columns: .* has no column\(s\) aesthetic"),
])
def test_predicates_and_columns_are_checked_before_work(tmp_path, source, message):
    cfg_path = write_laion(tmp_path, "http://127.0.0.1:9", **source)
    with pytest.raises(InputError, match=message):
        check_sources(load_config(CurateConfig, cfg_path))
