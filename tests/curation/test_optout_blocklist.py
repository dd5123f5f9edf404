"""Opt-out headers and block lists against a real local web server (no mocks): which rows are opted out or blocked,
which URLs were never requested (the server's log), and that no byte of such an image reaches a shard."""

from __future__ import annotations

import hashlib
import io

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from smallweb import _photo
from mrbench.config import InputError, load_config
from mrbench.curation.config import CrawlConfig, CurateConfig
from mrbench.curation.blocklist import hamming, phash, read_entries
from mrbench.curation.crawl import record_id
from mrbench.curation.download import Downloader, ImageValidator
from mrbench.curation.optout import opt_out_reason, robots_directives
from mrbench.curation.pipeline import run_curation
from webserver import Route, SampleWebServer, encode
from mrbench.records import ImageRecord

OPT_OUT_HEADERS = {
    "/img/s0_1.jpg": {"X-Robots-Tag": "noai"},
    "/img/s1_1.jpg": {"X-Robots-Tag": "mrbench: noimageai, nofollow"},
    "/img/s2_1.jpg": {"tdm-reservation": "1"},
    "/img/s2_2.jpg": {"X-Robots-Tag": "googlebot: noindex"},  # scoped to another crawler: not for us
}


@pytest.mark.parametrize("value, want", [
    ("noai", ["noai"]),
    ("NoIndex, NoFollow", ["noindex", "nofollow"]),
    ("mrbench: noai", ["noai"]),
    ("MRBench: noimageai", ["noimageai"]),
    ("googlebot: noindex", []),
    ("unavailable_after: 25 Jun 2010 15:00:00 PST", ["unavailable_after"]),
    ("noindex, unavailable_after: 25 Jun 2010", ["noindex", "unavailable_after"]),
])
def test_robots_directives(value, want):
    assert robots_directives(value, "mrbench") == want


def test_opt_out_reason_names_the_directive_and_can_be_switched_off():
    cfg = CrawlConfig()
    assert "noai" in opt_out_reason([("X-Robots-Tag", "nofollow"), ("x-robots-tag", "noai")], cfg)
    assert opt_out_reason([("X-Robots-Tag", "nofollow, noarchive")], cfg) is None
    assert "tdm-reservation" in opt_out_reason([("TDM-Reservation", "1")], cfg)
    assert opt_out_reason([("tdm-reservation", "0")], cfg) is None
    off = CrawlConfig(disallowed_header_directives=[], honor_tdm_reservation=False)
    assert opt_out_reason([("X-Robots-Tag", "noai"), ("tdm-reservation", "1")], off) is None
    other = CrawlConfig(user_agent_token="otherbot")
    assert opt_out_reason([("X-Robots-Tag", "mrbench: noai")], other) is None


def _web() -> dict[str, Route]:
    routes = {}
    for s in range(3):
        for k in range(5):
            routes[f"/img/s{s}_{k}.jpg"] = Route(encode(_photo(100 * s + k), "JPEG", quality=90),
                                                 headers=OPT_OUT_HEADERS.get(f"/img/s{s}_{k}.jpg", {}))
    return routes


@pytest.mark.slow
def test_opted_out_images_are_refused_before_their_body_and_the_default_switches_off():
    routes = _web()
    paths = list(OPT_OUT_HEADERS) + ["/img/s0_0.jpg"]
    with SampleWebServer(routes) as server:
        def run(**cfg):
            config = CrawlConfig(allow_private_network=True, timeout=2, thread_count=4, **cfg)
            recs = [ImageRecord(id=record_id(server.url(p)), url=server.url(p)) for p in paths]
            out = list(ImageValidator(config.max_image_pixels, config)(Downloader(config)(recs)))
            return {r.url.replace(server.base_url, ""): r for r in out}

        rows = run()
        off = run(disallowed_header_directives=[], honor_tdm_reservation=False)
    status = {p: r.status for p, r in rows.items()}
    assert status == {"/img/s0_1.jpg": "opted_out", "/img/s1_1.jpg": "opted_out", "/img/s2_1.jpg": "opted_out",
                      "/img/s2_2.jpg": "ok", "/img/s0_0.jpg": "ok"}
    assert "'noai'" in rows["/img/s0_1.jpg"].error_message
    assert "'noimageai'" in rows["/img/s1_1.jpg"].error_message
    assert "tdm-reservation" in rows["/img/s2_1.jpg"].error_message
    assert all(r.image is None for r in rows.values() if r.status == "opted_out")
    assert {r.status for r in off.values()} == {"ok"}


def test_blocklist_files_are_checked(tmp_path):
    from mrbench.curation.config import BlocklistConfig

    good = tmp_path / "d.txt"
    good.write_text("# takedowns\nExample.COM\n*.cdn.example.org\nhttps://img.example.net/a.jpg\n\n")
    assert read_entries(BlocklistConfig(str(good), "domain")) == ["example.com", "cdn.example.org", "img.example.net"]
    bad = tmp_path / "s.txt"
    bad.write_text("a" * 64 + "\nnot-a-digest\n")
    with pytest.raises(InputError, match=r"s.txt:2: 'not-a-digest' is not a valid sha256"):
        read_entries(BlocklistConfig(str(bad), "sha256"))
    with pytest.raises(InputError, match="no such file"):
        read_entries(BlocklistConfig(str(tmp_path / "missing.txt"), "url"))


def test_phash_matches_imagehash_and_survives_reencoding():
    img = _photo(7, (120, 90))
    # imagehash 4.3.2's str(imagehash.phash(img)) for this image, measured once
    assert phash(encode(img, "PNG")) == "be6b4482f7d19b40"
    assert hamming(phash(encode(img, "JPEG", quality=95)), phash(encode(img, "JPEG", quality=40))) <= 4
    assert hamming(phash(encode(img, "PNG")), phash(encode(_photo(8, (120, 90)), "PNG"))) > 16


@pytest.fixture(scope="module")
def blocked_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("optout")
    routes = _web()
    names = {0: "Barack Obama", 1: "Spider-Man", 2: "Van Gogh style"}
    with SampleWebServer(routes) as server:
        base, port = server.base_url, server.server_address[1]
        urls, caps = [], []
        for path in sorted(routes):
            s = int(path[len("/img/s")])
            host_url = f"http://localhost:{port}{path}" if path == "/img/s0_4.jpg" else base + path
            urls.append(host_url)
            caps.append(f"photo of {names[s]}")
        import pyarrow as pa

        (tmp / "in").mkdir()
        pq.write_table(pa.table({"url": urls, "caption": caps}), tmp / "in" / "meta.parquet")
        (tmp / "in" / "tags.yaml").write_text(yaml.safe_dump(
            [{"name": n, "category": "subject", "aliases": []} for n in names.values()]))
        (tmp / "in" / "urls.txt").write_text(base + "/img/s0_2.jpg\n")
        (tmp / "in" / "domains.txt").write_text("localhost\n")
        (tmp / "in" / "ids.txt").write_text(record_id(base + "/img/s1_4.jpg") + "\n")
        (tmp / "in" / "sha.txt").write_text(hashlib.sha256(routes["/img/s1_3.jpg"].body).hexdigest() + "\n")
        # a re-encode of s2_3, not its bytes: the perceptual hash finds it within the distance
        near = encode(Image.open(io.BytesIO(routes["/img/s2_3.jpg"].body)), "JPEG", quality=50)
        (tmp / "in" / "phash.txt").write_text(phash(near) + "\n")
        cfg = {
            "seed": 1, "num_shards": 2,
            "sources": [{"kind": "metadata", "paths": ["meta.parquet"]}],
            "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "timeout": 2, "thread_count": 4,
                      "blocklists": [{"path": "urls.txt", "kind": "url"}, {"path": "domains.txt", "kind": "domain"},
                                     {"path": "ids.txt", "kind": "id"}, {"path": "sha.txt", "kind": "sha256"},
                                     {"path": "phash.txt", "kind": "phash", "max_distance": 6}]},
            "group": {"min_group_size": 2, "consistency_min": 0.0, "dedup_threshold": None},
            "split": {"held_out_groups": 1, "held_in_groups": 1},
        }
        (tmp / "in" / "curate.yaml").write_text(yaml.safe_dump(cfg))
        config = load_config(CurateConfig, tmp / "in" / "curate.yaml")
        summary = run_curation(config, tmp / "run")
        hits = dict(server.hits)
    return tmp, summary, hits, routes


@pytest.mark.slow
def test_opt_outs_and_block_lists_remove_exactly_the_planted_rows(blocked_run):
    tmp, summary, hits, routes = blocked_run
    rejects = [r for f in sorted((tmp / "run" / "rejects").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    by_path = {r["url"].split(":", 2)[2].split("/", 1)[1]: r for r in rejects}
    assert {("/" + p): r["status"] for p, r in by_path.items()} == {
        "/img/s0_1.jpg": "opted_out", "/img/s1_1.jpg": "opted_out", "/img/s2_1.jpg": "opted_out",
        "/img/s0_2.jpg": "blocked_url", "/img/s0_4.jpg": "blocked_domain", "/img/s1_4.jpg": "blocked_id",
        "/img/s1_3.jpg": "blocked_sha256", "/img/s2_3.jpg": "blocked_phash"}
    assert "urls.txt" in by_path["img/s0_2.jpg"]["error_message"]
    assert "domain localhost" in by_path["img/s0_4.jpg"]["error_message"]
    # URL, domain and id rows were never requested; hash rows and opt-outs were (their headers or bytes decide)
    for p in ("/img/s0_2.jpg", "/img/s0_4.jpg", "/img/s1_4.jpg"):
        assert hits.get(p, 0) == 0, p
    for p in ("/img/s0_1.jpg", "/img/s1_3.jpg", "/img/s2_3.jpg"):
        assert hits.get(p, 0) == 1, p
    assert summary["release_rows"] == 15 - 8
    # no byte of an opted-out or blocked image in any shard: download shards and release
    unwanted = {routes["/" + p].body for p in by_path}
    for folder in ("download", "release/data"):
        for f in (tmp / "run" / folder).glob("*.parquet"):
            t = pq.read_table(f)
            col = t.column("image").to_pylist()
            images = [c["bytes"] if isinstance(c, dict) else c for c in col]
            assert not unwanted & set(images), f
    stats = summary["drops_per_reason"]
    assert stats["opted_out"] == 3 and stats["blocked_url"] == 1 and stats["blocked_phash"] == 1


@pytest.mark.slow
def test_report_and_card_name_the_drops_and_how_to_opt_out(blocked_run):
    tmp = blocked_run[0]
    card = (tmp / "run" / "release" / "README.md").read_text()
    for reason in ("opted_out", "blocked_url", "blocked_domain", "blocked_id", "blocked_sha256", "blocked_phash"):
        assert f"| {reason} |" in card, reason
    assert "X-Robots-Tag: mrbench: noai" in card
    report = (tmp / "run" / "report.html").read_text()
    assert "blocked_domain" in report and "opted_out" in report
