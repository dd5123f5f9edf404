"""Hostile URLs and servers through the real CLI (`mrbench curate`) and loopback servers: every one ends as a named
row, a dripping server as ``timeout`` at the attempt's deadline, Ctrl-C as exit 130 while downloads hang."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from mrbench.curation.config import CrawlConfig
from mrbench.curation.netguard import FetchError, Fetcher, is_public_address
from webserver import Route, SampleWebServer, encode
from test_egress import curate, photo, rows, write_inputs

pytestmark = pytest.mark.slow


@pytest.fixture()
def web(small_web):
    with SampleWebServer(small_web) as server:
        yield server


def test_non_ascii_malformed_and_unsafe_urls_are_named_rows(tmp_path, web):
    jpeg = encode(photo(21))
    web.routes["/img/café_cat.jpg"] = Route(jpeg)
    web.routes["/img/q.jpg"] = Route(encode(photo(22)))
    web.routes["/redir/utf8"] = Route(b"", 302, location="/img/café_cat.jpg")  # raw UTF-8 bytes in Location
    web.routes["/redir/malformed"] = Route(b"", 302, location="http://[::1")
    web.routes["/redir/space"] = Route(b"", 302, location="/img/a b.jpg")
    port = web.server_address[1]
    urls = {
        "path": web.url("/img/café_cat.jpg"),
        "query": web.url("/img/q.jpg?name=été&x=1"),
        "redirect": web.url("/redir/utf8"),
        "encoded": web.url("/img/caf%C3%A9_cat.jpg"),
        "bad_redirect": web.url("/redir/malformed"),
        "space_redirect": web.url("/redir/space"),
        "malformed": f"http://[::1:{port}/img/s0_0.jpg",
        "space": web.url("/img/s0 0.jpg"),
        "control": web.url("/img/s0_0.jpg\x01"),
        "plain": web.url("/img/s0_1.jpg"),
    }
    proc, run = curate(tmp_path, list(urls.values()), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    got = rows(run)
    status = {k: got[u]["status"] for k, u in urls.items()}
    assert status == {"path": "ok", "query": "ok", "redirect": "ok", "encoded": "ok", "bad_redirect": "unsupported_url",
                      "space_redirect": "unsupported_url", "malformed": "unsupported_url", "space": "unsupported_url",
                      "control": "unsupported_url", "plain": "ok"}
    assert got[urls["path"]]["image"] == jpeg  # the server found the file: the path was percent-encoded as UTF-8
    assert got[urls["redirect"]]["image"] == jpeg
    assert got[urls["path"]]["url"] == urls["path"]  # the row keeps the URL as the metadata spelled it
    # refused at selection: these never reached the server
    assert not any(" " in p or "\x01" in p for p in web.hits)


def test_dripping_server_ends_as_timeout_at_the_deadline(tmp_path, web):
    jpeg = encode(photo(23))
    web.routes["/drip/body.jpg"] = Route(jpeg, drip=0.5)
    web.routes["/drip/headers.jpg"] = Route(jpeg, drip=0.5, drip_headers=True)
    urls = [web.url("/drip/body.jpg"), web.url("/drip/headers.jpg"), web.url("/img/s0_0.jpg"), web.url("/img/s0_1.jpg")]
    # deadline 5 x 1 s per attempt, one attempt; a hang guard (not a speed check) of 90 s on the whole curation,
    # where a byte every 0.5 s would take len(jpeg) / 2 s (> 10 minutes) to arrive
    assert len(jpeg) / 2 > 600
    proc, run = curate(tmp_path, urls, "--set", "crawl.timeout=1", "--set", "crawl.retries=0", timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = rows(run)
    assert [got[u]["status"] for u in urls] == ["timeout", "timeout", "ok", "ok"]
    assert "5 s" in got[urls[0]]["error_message"]


def test_ctrl_c_exits_130_while_downloads_hang(tmp_path, web):
    jpeg = encode(photo(24))
    for k in range(4):
        web.routes[f"/hang/{k}.jpg"] = Route(jpeg, drip=0.5)
    cfg_path = write_inputs(tmp_path, [web.url(f"/hang/{k}.jpg") for k in range(4)], timeout=30)
    p = subprocess.Popen([sys.executable, "-m", "mrbench.cli", "curate", "--config", str(cfg_path), "--out",
                          str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not any(web.hits.get(f"/hang/{k}.jpg") for k in range(4)):  # downloads under way
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=30)  # a hang guard: the attempts' own deadline is 150 s
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("mrbench curate did not exit after Ctrl-C")
    assert p.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err


def test_credentials_are_stripped_from_failed_rows_too(tmp_path, web):
    port = web.server_address[1]
    urls = [f"http://alice:s3cret@127.0.0.1:{port}/missing.jpg", f"http://bob:hunter2@[::1:{port}/x.jpg",
            f"http://carol:pa55@127.0.0.1:{port}/img/s0_0.jpg", f"http://dan:w0rd@127.0.0.1:{port}/img/s0_1.jpg"]
    proc, run = curate(tmp_path, urls)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(r["status"] for r in rows(run).values()) == ["http_404", "ok", "ok", "unsupported_url"]
    for secret in ("s3cret", "hunter2", "pa55", "w0rd"):
        for folder in ("download", "rejects", "release"):
            for f in (run / folder).rglob("*"):
                assert f.is_dir() or secret.encode() not in f.read_bytes(), (secret, f)
        assert secret not in (run / "report.html").read_text()


@pytest.mark.parametrize("host", ["[2002:7f00:1::1]", "[2002:a00:1::1]", "[64:ff9b::7f00:1]", "[64:ff9b::a9fe:a9fe]",
                                  "[::127.0.0.1]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]", "[64:ff9b:1::a00:1]"])
def test_ipv6_forms_embedding_a_private_ipv4_are_refused(web, host):
    with pytest.raises(FetchError) as e:
        Fetcher(CrawlConfig(timeout=2)).fetch(f"http://{host}:{web.server_address[1]}/img/s0_0.jpg")
    assert e.value.reason == "blocked_private_network", e.value
    assert web.hits == {}


def test_ipv6_forms_embedding_a_public_ipv4_stay_public():
    assert is_public_address("2002:808:808::1")  # 6to4 around 8.8.8.8
    assert is_public_address("64:ff9b::808:808")  # NAT64 of 8.8.8.8 (an IPv6-only network's way to IPv4 hosts)
    assert is_public_address("::ffff:8.8.8.8")
    assert not is_public_address("2002:c0a8:101::1")  # 6to4 around 192.168.1.1


def test_copies_of_one_url_do_not_fill_its_tags_cap(tmp_path, web):
    from mrbench.curation.crawl import priority

    a = web.url("/img/s0_0.jpg")
    # b ranks after a (seed 3 of write_inputs), so the copies of a would take every place of the tag before b
    k = next(k for k in range(10_000) if priority(3, web.url(f"/img/b{k}.jpg")) > priority(3, a))
    web.routes[f"/img/b{k}.jpg"] = web.routes["/img/s0_1.jpg"]
    b = web.url(f"/img/b{k}.jpg")
    proc, run = curate(tmp_path, [a] * 100_000 + [b], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {u: r["status"] for u, r in rows(run).items()} == {a: "ok", b: "ok"}
    stats = json.loads((run / "urls" / "stats.json").read_text())["counts"]
    assert stats["select/repeated_url"] == 99_999 and "select/over_tag_cap" not in stats


def test_disk_full_is_one_error_line_and_the_rerun_finishes(tmp_path, web):
    """ENOSPC as the kernel reports it when a shard's bytes are flushed (``fsync``), through `python -m mrbench.cli`."""
    urls = [web.url("/img/s0_0.jpg"), web.url("/img/s0_1.jpg")]
    cfg_path = write_inputs(tmp_path, urls)
    full = ("import errno, os, sys\n"
            "def fsync(fd): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
            "os.fsync = fsync\n"
            "from mrbench.cli import main\n"
            "sys.argv = ['mrbench'] + sys.argv[1:]\n"
            "main()\n")
    args = ["curate", "--config", str(cfg_path), "--out", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-c", full, *args], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device") and "No space left on device" in last
    assert not list((tmp_path / "run").rglob("*.done"))
    done = subprocess.run([sys.executable, "-m", "mrbench.cli", *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {r["status"] for r in rows(tmp_path / "run").values()} == {"ok"}


def test_a_hanging_name_lookup_ends_as_timeout_at_the_deadline(monkeypatch):
    """getaddrinfo has no timeout: a resolver that never answers must not hold the download past its deadline."""
    import threading

    from mrbench.curation import netguard

    release = threading.Event()
    calls: list[str] = []

    def hanging_resolve(host, port):
        calls.append(host)
        release.wait(60)  # a resolver that does not answer (released at the end of the test)
        return ["203.0.113.7"]

    monkeypatch.setattr(netguard, "resolve", hanging_resolve)
    fetcher = Fetcher(CrawlConfig(timeout=0.2, retries=0))
    try:
        with pytest.raises(FetchError) as err:
            fetcher.fetch("http://slow-dns.example/a.jpg")
        assert err.value.reason == "timeout" and "name lookup of slow-dns.example" in str(err.value)
        assert calls == ["slow-dns.example"] and not release.is_set()  # it gave up while the lookup still hung
    finally:
        release.set()
