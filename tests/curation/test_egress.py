"""Egress policy, retries and the publisher's bytes, through the real CLI (`mrbench curate`) and loopback servers.

Every input ends as exactly one named row in the download shards; refused URLs never reach a server (request logs).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mrbench.config import ConfigError, validate_fields
from mrbench.curation.config import CrawlConfig
from mrbench.curation.netguard import FetchError, Fetcher, parse_retry_after
from webserver import Route, SampleWebServer, encode

pytestmark = pytest.mark.slow
TAG = "Spider-Man"


def photo(seed: int, size: tuple[int, int] = (96, 80), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(size)
    return im.convert(mode)


def write_inputs(tmp: Path, urls: list[str], sources: list[dict] | None = None, **crawl: object) -> Path:
    """A metadata source of ``urls`` (all tagged), the tag list and the config; returns the config path."""
    folder = tmp / "in"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"url": urls, "caption": [f"{TAG} number {i}" for i in range(len(urls))]}),
                   folder / "meta.parquet")
    (folder / "tags.yaml").write_text(yaml.safe_dump([{"name": TAG, "category": "character", "aliases": []}]))
    cfg = {
        "seed": 3, "num_shards": 2,
        "sources": sources if sources is not None else [{"kind": "metadata", "paths": ["meta.parquet"]}],
        "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "timeout": 1.5, "thread_count": 4,
                  "max_body_bytes": 4 << 20, **crawl},
        "group": {"min_group_size": 2, "max_group_size": 64},
        "split": {"held_out_groups": 0, "held_in_groups": 0},
        "executor": {"name": "local", "workers": 1},
    }
    (folder / "curate.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "curate.yaml"


def curate(tmp: Path, urls: list[str], *args: str, sources: list[dict] | None = None, timeout: float = 180,
           out: str = "run", **crawl: object) -> tuple[subprocess.CompletedProcess, Path]:
    """Write the inputs (:func:`write_inputs`) and run `mrbench curate` on them."""
    cfg_path = write_inputs(tmp, urls, sources, **crawl)
    run = tmp / out
    proc = subprocess.run([sys.executable, "-m", "mrbench.cli", "curate", "--config", str(cfg_path),
                           "--out", str(run), *args], capture_output=True, text=True, timeout=timeout)
    return proc, run


def rows(run: Path) -> dict[str, dict]:
    """url -> download row (status, error_message, ...), checking there is exactly one row per url."""
    out: dict[str, dict] = {}
    for f in sorted((run / "download").glob("shard_*.parquet")):
        for r in pq.read_table(f).to_pylist():
            assert r["url"] not in out, r["url"]
            out[r["url"]] = r
    return out


def release(run: Path) -> dict[str, dict]:
    """url -> release row, its ``image`` (the Image feature's {bytes, path}) as the encoded bytes."""
    return {r["url"]: {**r, "image": r["image"]["bytes"]} for f in sorted((run / "release" / "data").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}


@pytest.fixture()
def web(small_web):
    with SampleWebServer(small_web) as server:
        yield server


# --- 1. file:// and other schemes in a metadata source; folder sources still read their files -----------------------

def test_file_urls_in_metadata_are_never_read(tmp_path, web):
    local = tmp_path / "local"
    local.mkdir()
    (local / "photo.jpg").write_bytes(encode(photo(1)))
    (local / "secret.txt").write_text("top secret contents")
    os.mkfifo(local / "pipe.jpg")  # reading it would block forever
    urls = [(local / n).as_uri() for n in ("photo.jpg", "secret.txt", "pipe.jpg")]
    urls += ["ftp://127.0.0.1/x.jpg", "data:image/png;base64,iVBORw0KGgo=", "http:///nohost.jpg",
             web.url("/img/s0_0.jpg"), web.url("/img/s0_1.jpg")]
    proc, run = curate(tmp_path, urls, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = rows(run)
    assert len(got) == len(urls)
    for u in urls[:6]:
        assert got[u]["status"] == "unsupported_url", (u, got[u])
        assert got[u]["image"] is None
    assert "top secret" not in "".join(r["error_message"] or "" for r in got.values())
    assert {got[u]["status"] for u in urls[6:]} == {"ok"}
    assert set(release(run)) == set(urls[6:])


def test_folder_sources_still_read_local_files_but_no_fifo(tmp_path):
    folder = tmp_path / "images" / "Spider-Man"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(encode(photo(10 + i)))
    os.mkfifo(folder / "pipe.jpg")
    proc, run = curate(tmp_path, [], sources=[{"kind": "folder", "paths": [str(tmp_path / "images")]}], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {Path(u).name: r["status"] for u, r in rows(run).items()}
    assert status == {"p0.jpg": "ok", "p1.jpg": "ok", "p2.jpg": "ok", "pipe.jpg": "file_unreadable"}
    # the release names each file by its path under the source folder, never by the curator's absolute path
    assert set(release(run)) == {f"Spider-Man/p{i}.jpg" for i in range(3)}
    assert str(tmp_path) not in (run / "release" / "README.md").read_text()


# --- 2. a redirect to ftp:// (a live loopback FTP server) or file:// is refused --------------------------------------

@pytest.fixture()
def ftp_server(tmp_path):
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    root = tmp_path / "ftp"
    root.mkdir()
    (root / "x.jpg").write_bytes(encode(photo(5)))
    auth = DummyAuthorizer()
    auth.add_anonymous(str(root))
    connections: list[str] = []

    class Handler(FTPHandler):
        def on_connect(self) -> None:
            connections.append(self.remote_ip)

    Handler.authorizer = auth
    server = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    # the server works: a plain FTP client reaches it
    import ftplib

    with ftplib.FTP() as client:
        client.connect("127.0.0.1", server.address[1], timeout=5)
        client.login()
        assert "x.jpg" in client.nlst()
    connections.clear()
    yield server, connections
    server.close_all()


def test_redirect_to_ftp_or_file_is_blocked_before_any_io(tmp_path, web, ftp_server):
    server, connections = ftp_server
    ftp_url = f"ftp://127.0.0.1:{server.address[1]}/x.jpg"
    web.routes["/redir/ftp.jpg"] = Route(b"", 302, location=ftp_url)
    web.routes["/redir/file.jpg"] = Route(b"", 301, location="file:///etc/passwd")
    web.routes["/redir/gopher.jpg"] = Route(b"", 307, location="gopher://127.0.0.1:70/x")
    urls = [web.url(p) for p in ("/redir/ftp.jpg", "/redir/file.jpg", "/redir/gopher.jpg", "/img/s0_0.jpg", "/img/s0_1.jpg")]
    proc, run = curate(tmp_path, urls)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = rows(run)
    assert [got[u]["status"] for u in urls[:3]] == ["blocked_scheme"] * 3
    assert "ftp" in got[urls[0]]["error_message"]
    assert connections == []  # the FTP server never saw a connection
    assert "root:" not in "".join(r["error_message"] or "" for r in got.values())


# --- 5. credentials in a URL are stripped and never forwarded -------------------------------------------------------

def test_url_credentials_are_stripped_and_never_sent(tmp_path, web):
    port = web.server_address[1]
    urls = [f"http://alice:s3cret@127.0.0.1:{port}/img/s0_0.jpg", f"http://bob@127.0.0.1:{port}/img/s0_1.jpg"]
    proc, run = curate(tmp_path, urls)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = rows(run)
    assert [r["status"] for r in got.values()] == ["ok", "ok"]
    assert set(got) == {web.url("/img/s0_0.jpg"), web.url("/img/s0_1.jpg")}  # stored without credentials
    sent = web.request_headers["/img/s0_0.jpg"] + web.request_headers["/img/s0_1.jpg"]
    assert sent and not any("authorization" in {k.lower() for k in h} for h in sent)
    assert "s3cret" not in (run / "release" / "manifest.json").read_text()
    for f in (run / "release").rglob("*.parquet"):
        assert b"s3cret" not in f.read_bytes()


# --- 9. retries, backoff, Retry-After, 429, redirect chains, per-domain limit --------------------------------------

def test_retry_statuses_through_the_cli(tmp_path, web):
    jpeg = web.routes["/img/s0_0.jpg"].body
    web.routes["/flaky.jpg"] = Route(jpeg, sequence=[Route(b"busy", 503, "text/plain")] * 2)
    web.routes["/throttled.jpg"] = Route(jpeg, sequence=[Route(b"slow down", 429, "text/plain", headers={"Retry-After": "1"})])
    web.routes["/always429.jpg"] = Route(b"no", 429, "text/plain")
    for k in range(12):  # /chain/0 -> /chain/1 -> ... -> /chain/11 (an image): 11 redirects
        web.routes[f"/chain/{k}"] = Route(b"", 302, location=f"/chain/{k + 1}") if k < 11 else Route(jpeg)
    web.routes["/chain10/0"] = Route(b"", 302, location="/chain/2")  # 10 redirects: allowed
    paths = ["/flaky.jpg", "/throttled.jpg", "/always429.jpg", "/broken/missing.jpg", "/broken/loop.jpg",
             "/chain/0", "/chain10/0", "/img/s0_1.jpg"]
    web.routes["/streamed_huge.jpg"] = Route(jpeg + bytes(5 << 20), declared_length=-1)  # no Content-Length
    paths.append("/streamed_huge.jpg")
    proc, run = curate(tmp_path, [web.url(p) for p in paths], "--set", "crawl.retries=3", "--set",
                       "crawl.backoff_base=0.05")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {u.replace(web.base_url, ""): r for u, r in rows(run).items()}
    assert {p: got[p]["status"] for p in paths} == {
        "/flaky.jpg": "ok", "/throttled.jpg": "ok", "/always429.jpg": "http_429", "/broken/missing.jpg": "http_404",
        "/broken/loop.jpg": "redirect_loop", "/chain/0": "too_many_redirects", "/chain10/0": "ok", "/img/s0_1.jpg": "ok",
        "/streamed_huge.jpg": "oversize_body"}
    assert web.hits["/flaky.jpg"] == 3 and web.hits["/throttled.jpg"] == 2
    assert web.hits["/always429.jpg"] == 4  # 1 + 3 retries
    assert web.hits["/broken/missing.jpg"] == 1  # a 404 is never retried


def test_backoff_and_retry_after_waits(web):
    waits: list[float] = []
    jpeg = web.routes["/img/s0_0.jpg"].body
    web.routes["/ra"] = Route(jpeg, sequence=[Route(b"", 429, headers={"Retry-After": "7"}),
                                              Route(b"", 503, headers={"Retry-After": "99999"}), Route(b"", 500)])
    cfg = CrawlConfig(allow_private_network=True, retries=5, backoff_base=0.5, backoff_max=30, retry_after_max=60)
    result = Fetcher(cfg, sleep=waits.append).fetch(web.url("/ra"))
    assert result.body == jpeg and result.attempts == 4
    assert waits[:2] == [7.0, 60.0]  # Retry-After honoured, bounded by retry_after_max
    assert 0 <= waits[2] <= 0.5 * 2 ** 2  # then exponential backoff with full jitter
    waits.clear()
    with pytest.raises(FetchError) as e:
        Fetcher(cfg, sleep=waits.append).fetch(web.url("/broken/missing.jpg"))
    assert e.value.reason == "http_404" and waits == []
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_per_domain_limit(tmp_path, web):
    jpeg = web.routes["/img/s0_0.jpg"].body
    for k in range(8):
        web.routes[f"/slow/{k}.jpg"] = Route(encode(photo(40 + k)), delay=0.4)
    urls = [web.url(f"/slow/{k}.jpg") for k in range(8)]
    proc, run = curate(tmp_path, urls, "--set", "crawl.max_per_domain=2", "--set", "crawl.thread_count=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {r["status"] for r in rows(run).values()} == {"ok"}
    assert web.peak_active == 2
    web.peak_active = 0
    proc, run = curate(tmp_path, urls, "--set", "crawl.thread_count=8", out="run2")  # no limit: all at once
    assert proc.returncode == 0 and web.peak_active > 2
    assert jpeg


@pytest.mark.parametrize("key,value", [("max_per_domain", -1), ("backoff_base", float("nan")),
                                       ("retry_after_max", float("inf")), ("max_redirects", 1.5)])
def test_new_crawl_fields_are_range_checked(key, value):
    with pytest.raises(ConfigError, match=key):
        validate_fields(CrawlConfig(**{key: value}))


def test_retry_failed_redownloads_only_retryable_rows(tmp_path, web):
    for k in range(6):
        web.routes[f"/r/{k}.jpg"] = Route(encode(photo(60 + k)))
    web.routes["/r/0.jpg"] = Route(b"down", 503, "text/plain")
    web.routes["/r/1.jpg"] = Route(b"down", 503, "text/plain")
    urls = [web.url(f"/r/{k}.jpg") for k in range(6)] + [web.url("/broken/missing.jpg"), "ftp://x/y.jpg"]
    proc, run = curate(tmp_path, urls)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = rows(run)
    assert before[urls[0]]["status"] == before[urls[1]]["status"] == "http_5xx"
    shard_of = {u: f for f in (run / "download").glob("shard_*.parquet") for u in pq.read_table(f, columns=["url"]).column("url").to_pylist()}
    untouched = {f: f.read_bytes() for f in (run / "download").glob("shard_*.parquet")
                 if f not in (shard_of[urls[0]], shard_of[urls[1]])}
    # the server recovers; nothing else changes
    web.routes["/r/0.jpg"] = Route(encode(photo(60)))
    web.routes["/r/1.jpg"] = Route(encode(photo(61)))
    hits = dict(web.hits)
    retry = subprocess.run([sys.executable, "-m", "mrbench.cli", "curate", "--retry-failed", str(run)],
                           capture_output=True, text=True, timeout=180)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert "retried 2 rows" in retry.stdout
    after = rows(run)
    assert after[urls[0]]["status"] == after[urls[1]]["status"] == "ok"
    assert after[urls[6]]["status"] == "http_404" and after[urls[7]]["status"] == "unsupported_url"
    assert {p: n - hits.get(p, 0) for p, n in web.hits.items() if n != hits.get(p, 0)} == {"/r/0.jpg": 1, "/r/1.jpg": 1}
    for f, data in untouched.items():
        assert f.read_bytes() == data
    # the release equals a fresh run's over the same (now healthy) server
    proc, fresh = curate(tmp_path, urls, out="fresh")
    assert proc.returncode == 0
    tree = lambda d: {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}  # noqa: E731
    assert tree(run / "release") == tree(fresh / "release")
    again = subprocess.run([sys.executable, "-m", "mrbench.cli", "curate", "--retry-failed", str(run)],
                           capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "retried 0 rows" in again.stdout


# --- 4. the publisher's bytes are kept; re-encoding only when asked, recorded per row; one EXIF policy -------------

def _formats() -> dict[str, bytes]:
    rgba = photo(70, mode="RGBA")
    rgba.putalpha(128)
    frames = [photo(71 + k, mode="P") for k in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    sixteen = Image.fromarray(np.arange(96 * 80, dtype=np.uint16).reshape(80, 96) * 8)  # mode I;16
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: displayed 80 wide, 96 high
    return {
        "/f/alpha.png": encode(rgba, "PNG"),
        "/f/anim.gif": gif.getvalue(),
        "/f/deep16.png": encode(sixteen, "PNG"),
        "/f/cmyk.jpg": encode(photo(75).convert("CMYK"), "JPEG", quality=90),
        "/f/photo.webp": encode(photo(76), "WEBP", quality=80),
        "/f/rotated.jpg": encode(photo(77), "JPEG", quality=90, exif=exif),
    }


def test_publisher_bytes_kept_with_resize_mode_no(tmp_path, web):
    bodies = _formats()
    web.routes.update({p: Route(b) for p, b in bodies.items()})
    proc, run = curate(tmp_path, [web.url(p) for p in bodies])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rel = release(run)
    assert len(rel) == len(bodies)
    expected_format = {"/f/alpha.png": "png", "/f/anim.gif": "gif", "/f/deep16.png": "png", "/f/cmyk.jpg": "jpeg",
                       "/f/photo.webp": "webp", "/f/rotated.jpg": "jpeg"}
    for p, body in bodies.items():
        r = rel[web.url(p)]
        assert r["image"] == body, p
        assert r["sha256"] == hashlib.sha256(body).hexdigest() and r["encoding"] == "original"
        assert r["format"] == expected_format[p]
    assert (rel[web.url("/f/rotated.jpg")]["width"], rel[web.url("/f/rotated.jpg")]["height"]) == (80, 96)
    with Image.open(io.BytesIO(rel[web.url("/f/anim.gif")]["image"])) as im:
        assert im.n_frames == 3
    # one EXIF policy: the embed/eval decoder gives the size the curation recorded
    from mrbench.curation.embed import decode
    from mrbench.evaluation.benchmarks import load_image_file

    assert decode(bodies["/f/rotated.jpg"]).size == (80, 96)
    assert load_image_file(io.BytesIO(bodies["/f/rotated.jpg"])).size == (80, 96)


def test_reencoding_only_when_asked_and_recorded(tmp_path, web):
    bodies = _formats()
    web.routes.update({p: Route(b) for p, b in bodies.items()})
    proc, run = curate(tmp_path, [web.url(p) for p in bodies], "--set", "crawl.resize_mode=keep_ratio_largest",
                       "--set", "crawl.image_size=48", "--set", "crawl.encode_format=png")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rel = release(run)
    for p, body in bodies.items():
        r = rel[web.url(p)]
        assert r["encoding"] == "resize:keep_ratio_largest:48:png" and r["format"] == "png"
        assert r["image"] != body and r["sha256"] == hashlib.sha256(r["image"]).hexdigest()
        assert max(r["width"], r["height"]) == 48
    assert (rel[web.url("/f/rotated.jpg")]["width"], rel[web.url("/f/rotated.jpg")]["height"]) == (40, 48)
    with Image.open(io.BytesIO(rel[web.url("/f/alpha.png")]["image"])) as im:
        assert im.mode == "RGBA"  # transparency kept when the target format has it


# --- the private-address forms are still refused before the server sees a request ----------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::1]",
                                  "[::ffff:127.0.0.1]", "0.0.0.0", "localhost", "LOCALHOST."])
def test_private_forms_refused_before_any_request(web, host):
    port = web.server_address[1]
    web.routes["/hop"] = Route(b"", 302, location=f"http://{host}:{port}/img/s0_0.jpg")
    fetcher = Fetcher(CrawlConfig(timeout=2))
    with pytest.raises(FetchError) as e:
        fetcher.fetch(f"http://{host}:{port}/img/s0_0.jpg")
    assert e.value.reason in ("blocked_private_network", "dns_failure"), e.value
    assert web.hits == {}
    # the same through a redirect from a "public" first hop (policy: only the name "localhost" counts as public)
    if host.lower().rstrip(".") != "localhost":
        with pytest.raises(FetchError) as e:
            Fetcher(CrawlConfig(timeout=2), policy=lambda h, ip: h == "localhost").fetch(f"http://localhost:{port}/hop")
        assert e.value.reason in ("blocked_private_network", "dns_failure")
        assert web.hits == {"/hop": 1}


# --- https: the pinned connection still verifies the certificate against the host name ---------------------------

@pytest.fixture()
def tls_web(tmp_path, small_web):
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    server = SampleWebServer(small_web)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with server:
        yield server, cert


def test_https_verified_against_the_host_name(tmp_path, tls_web):
    server, cert = tls_web
    url = f"https://127.0.0.1:{server.server_address[1]}/img/s0_0.jpg"
    urls = [url, url.replace("s0_0", "s0_1")]
    proc, run = curate(tmp_path, urls, out="untrusted")  # self-signed: refused
    assert proc.returncode == 4 and "tls_error 2" in proc.stderr, proc.stderr[-2000:]  # nothing released: exit 4
    assert {r["status"] for r in rows(run).values()} == {"tls_error"}
    env = {**os.environ, "SSL_CERT_FILE": str(cert)}  # now trusted: the download goes through
    folder = tmp_path / "in"
    proc = subprocess.run([sys.executable, "-m", "mrbench.cli", "curate", "--config", str(folder / "curate.yaml"),
                           "--out", str(tmp_path / "trusted")], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = rows(tmp_path / "trusted")
    assert {r["status"] for r in got.values()} == {"ok"}
    assert got[url]["image"] == server.routes["/img/s0_0.jpg"].body


# --- 10. a SIGKILL during downloads leaves no temporary download folders; the resume finishes ----------------------

def test_sigkill_during_download_leaves_no_temporary_folders(tmp_path, small_web):
    import signal
    import time

    from smallweb import GatedRoute, GatedWebServer

    gate = threading.Event()  # every download waits on it: the kill lands while all of them are under way
    with GatedWebServer(small_web) as web:
        for k in range(8):
            web.routes[f"/k/{k}.jpg"] = GatedRoute(encode(photo(80 + k)), gate=gate)
        urls = [web.url(f"/k/{k}.jpg") for k in range(8)]
        # a per-request timeout far above the test's reaction time: the gated downloads wait, they do not time out
        cfg_path = write_inputs(tmp_path, urls, timeout=60)
        tmpdir = tmp_path / "tmpdir"
        tmpdir.mkdir()
        cmd = [sys.executable, "-m", "mrbench.cli", "curate", "--config", str(cfg_path),
               "--out", str(tmp_path / "run"), "--set", "crawl.thread_count=2"]
        env = {**os.environ, "TMPDIR": str(tmpdir)}
        p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:  # a hang guard, not a speed check: the wait ends when a download waits on the gate
            deadline = time.time() + 60
            while not any(web.waiting(web.routes[f"/k/{k}.jpg"]) for k in range(8)):
                assert p.poll() is None and time.time() < deadline
                time.sleep(0.05)
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        assert not (tmp_path / "run" / "download" / "shard_00001.done").exists()
        assert list(tmpdir.iterdir()) == []
        gate.set()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        assert {r["status"] for r in rows(tmp_path / "run").values()} == {"ok"}
        assert list(tmpdir.iterdir()) == []

