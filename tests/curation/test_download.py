"""Crawl status rows against a real local web server (real downloads, no mocks)."""

import hashlib

import pytest

from mrbench.curation.config import CrawlConfig
from mrbench.curation.crawl import record_id
from mrbench.curation.download import Downloader, ImageValidator
from mrbench.curation.netguard import FetchError, Fetcher, is_public_address
from mrbench.records import ImageRecord
from webserver import Route

EXPECTED = {
    "/img/s0_0.jpg": "ok",
    "/img/s1_2.jpg": "ok",
    "/broken/corrupt.jpg": "corrupt_image",
    "/broken/truncated.jpg": "corrupt_image",
    "/broken/empty.jpg": "empty_body",
    "/broken/missing.jpg": "http_404",
    "/broken/error.jpg": "http_5xx",
    "/broken/slow.jpg": "timeout",
    "/broken/loop.jpg": "redirect_loop",
    "/broken/huge.jpg": "oversize_body",
    "/broken/bomb.png": "decompression_bomb",
    "/broken/page.html": "not_an_image",
}


def download(server, paths, **cfg):
    config = CrawlConfig(**{"allow_private_network": True, "timeout": 1.5, "thread_count": 8, **cfg})
    recs = [ImageRecord(id=record_id(server.url(p)), url=server.url(p)) for p in paths]
    recs.append(ImageRecord(id="ftp", url="ftp://example.org/a.jpg"))
    out = list(ImageValidator(config.max_image_pixels, config)(Downloader(config)(recs)))
    return {r.url.replace(server.base_url, ""): r for r in out}


@pytest.mark.slow
def test_every_url_ends_as_one_named_row(web_server, small_web):
    rows = download(web_server, list(EXPECTED))
    assert len(rows) == len(EXPECTED) + 1
    got = {p: rows[p].status for p in EXPECTED}
    assert got == EXPECTED
    assert rows["ftp://example.org/a.jpg"].status == "unsupported_url"
    ok = rows["/img/s0_0.jpg"]
    assert ok.image == small_web["/img/s0_0.jpg"].body  # publisher's bytes kept (no resize asked)
    assert ok.sha256 == hashlib.sha256(ok.image).hexdigest()
    assert (ok.width, ok.height) == (96, 80)
    for p, r in rows.items():
        if r.status != "ok":
            assert r.image is None and r.error_message, p


@pytest.mark.slow
def test_private_addresses_refused_unless_allowed(web_server):
    rows = download(web_server, ["/img/s0_0.jpg", "/broken/loop.jpg"], allow_private_network=False)
    assert rows["/img/s0_0.jpg"].status == "blocked_private_network"
    assert "127.0.0.1" in rows["/img/s0_0.jpg"].error_message


def test_guard_checks_every_redirect_hop(web_server):
    # Policy: the host name "localhost" stands in for a public site; "127.0.0.1" is the private target.
    port = web_server.server_address[1]
    web_server.routes["/redirect/private"] = Route(b"", 302, location=f"http://127.0.0.1:{port}/img/s0_0.jpg")
    fetcher = Fetcher(CrawlConfig(timeout=5), policy=lambda host, ip: host == "localhost")
    assert fetcher.fetch(f"http://localhost:{port}/img/s0_0.jpg").body == web_server.routes["/img/s0_0.jpg"].body
    hits = web_server.hits["/img/s0_0.jpg"]
    with pytest.raises(FetchError) as e:
        fetcher.fetch(f"http://localhost:{port}/redirect/private")
    assert e.value.reason == "blocked_private_network" and "127.0.0.1" in e.value.message
    assert web_server.hits["/redirect/private"] == 1 and web_server.hits["/img/s0_0.jpg"] == hits


@pytest.mark.parametrize(
    "ip,public",
    [("8.8.8.8", True), ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False), ("172.16.5.4", False),
     ("169.254.169.254", False), ("::1", False), ("fe80::1", False), ("fd00:ec2::254", False), ("0.0.0.0", False),
     ("::ffff:127.0.0.1", False), ("2606:4700::1111", True), ("224.0.0.1", False), ("100.64.0.1", False)],
)
def test_public_address_classification(ip, public):
    assert is_public_address(ip) is public


@pytest.mark.slow
def test_resize_policy_reencodes_and_records_it(web_server):
    rows = download(web_server, ["/img/s0_0.jpg"], resize_mode="center_crop", image_size=32)
    r = rows["/img/s0_0.jpg"]
    assert r.status == "ok" and (r.width, r.height) == (32, 32)
    assert r.metadata["original_width"] == 96 and r.metadata["encoding"] == "resize:center_crop:32:jpg"


@pytest.mark.slow
def test_only_web_image_decoders_run(web_server):
    from PIL import Image

    from webserver import encode

    im = Image.new("RGB", (32, 24), "red")
    web_server.routes["/odd/image.tga"] = Route(encode(im, "TGA"), content_type="image/x-tga")
    web_server.routes["/odd/image.ico"] = Route(encode(im, "ICO"), content_type="image/x-icon")
    web_server.routes["/odd/image.tif"] = Route(encode(im, "TIFF"), content_type="image/tiff")
    rows = download(web_server, ["/odd/image.tga", "/odd/image.ico", "/odd/image.tif"])
    assert rows["/odd/image.tga"].status == rows["/odd/image.ico"].status == "not_an_image"
    assert rows["/odd/image.tif"].status == "ok" and rows["/odd/image.tif"].metadata["format"] == "tiff"
