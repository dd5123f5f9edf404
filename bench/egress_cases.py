"""The crawler's answer to every kind of hostile or broken input: prints a Markdown table ``input | status row | time``.

Each input is one metadata row, taken through selection's URL check (:func:`curation.crawl.mark_origin`), the
download stage and validation, exactly as ``mrbench curate`` runs them, against loopback servers (an HTTP server
with the failure zoo, a live FTP server) with ``allow_private_network`` off except where a row says otherwise.
The time is the wall time of that row alone (timeout 1.5 s, no retries unless stated).

Run: ``python bench/egress_cases.py``.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mrbench.curation.config import CrawlConfig
from mrbench.curation.crawl import mark_origin
from mrbench.curation.download import Downloader, ImageValidator
from mrbench.records import ImageRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from webserver import Route, SampleWebServer, broken_routes, encode  # noqa: E402  (the tests' server: hit counts)


def photo(seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).resize((96, 80)).convert(mode)


def main() -> None:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    import logging

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="mrbench-egress-"))
    jpeg = encode(photo(0), "JPEG", quality=90)
    rgba = photo(1, "RGBA")
    rgba.putalpha(100)
    exif = Image.Exif()
    exif[0x0112] = 6
    gif = io.BytesIO()
    photo(2, "P").save(gif, "GIF", save_all=True, append_images=[photo(3, "P")], duration=40)
    routes = broken_routes(jpeg)
    routes.update({
        "/img/photo.jpg": Route(jpeg), "/img/alpha.png": Route(encode(rgba, "PNG")), "/img/anim.gif": Route(gif.getvalue()),
        "/img/deep16.png": Route(encode(Image.fromarray(np.full((80, 96), 40000, np.uint16)), "PNG")),
        "/img/cmyk.jpg": Route(encode(photo(4).convert("CMYK"), "JPEG")), "/img/photo.webp": Route(encode(photo(5), "WEBP")),
        "/img/rotated.jpg": Route(encode(photo(6), "JPEG", exif=exif)),
        "/broken/forbidden.jpg": Route(b"no", 403, "text/plain"),
        "/broken/throttled.jpg": Route(b"slow down", 429, "text/plain", headers={"Retry-After": "1"}),
        "/broken/streamed_huge.jpg": Route(jpeg + b"\0" * (5 << 20), declared_length=-1),
        "/flaky.jpg": Route(jpeg, sequence=[Route(b"busy", 503, "text/plain")]),
    })
    for k in range(12):
        routes[f"/chain/{k}"] = Route(b"", 302, location=f"/chain/{k + 1}") if k < 11 else Route(jpeg)
    ftp_root = tmp / "ftp"
    ftp_root.mkdir()
    (ftp_root / "x.jpg").write_bytes(jpeg)
    auth = DummyAuthorizer()
    auth.add_anonymous(str(ftp_root))
    ftp_seen: list[str] = []

    class Handler(FTPHandler):
        def on_connect(self) -> None:
            ftp_seen.append(self.remote_ip)

    Handler.authorizer = auth
    ftp = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=ftp.serve_forever, kwargs={"timeout": 0.2}, daemon=True).start()
    local = tmp / "local"
    local.mkdir()
    (local / "photo.jpg").write_bytes(jpeg)
    (local / "secret.txt").write_text("secret")
    os.mkfifo(local / "pipe.jpg")

    with SampleWebServer(routes) as web:
        port = web.server_address[1]
        routes_ftp = f"ftp://127.0.0.1:{ftp.address[1]}/x.jpg"
        web.routes["/redir/ftp.jpg"] = Route(b"", 302, location=routes_ftp)
        web.routes["/redir/file.jpg"] = Route(b"", 302, location="file:///etc/passwd")
        u = web.url
        private = {"allow_private_network": True}
        cases: list[tuple[str, str, dict]] = [
            ("JPEG", u("/img/photo.jpg"), private), ("PNG with alpha (kept as served)", u("/img/alpha.png"), private),
            ("animated GIF (kept)", u("/img/anim.gif"), private), ("16-bit PNG (kept)", u("/img/deep16.png"), private),
            ("CMYK JPEG (kept)", u("/img/cmyk.jpg"), private), ("WebP (kept)", u("/img/photo.webp"), private),
            ("JPEG, EXIF orientation 6", u("/img/rotated.jpg"), private),
            ("corrupt JPEG", u("/broken/corrupt.jpg"), private), ("truncated JPEG", u("/broken/truncated.jpg"), private),
            ("empty body", u("/broken/empty.jpg"), private), ("HTML page", u("/broken/page.html"), private),
            ("decompression bomb PNG (16000^2)", u("/broken/bomb.png"), private),
            ("declared 50 GB body", u("/broken/huge.jpg"), private),
            ("5 MB body, cap 4 MB (streamed)", u("/broken/streamed_huge.jpg"), {**private, "max_body_bytes": 4 << 20}),
            ("404", u("/broken/missing.jpg"), {**private, "retries": 3}), ("403", u("/broken/forbidden.jpg"), {**private, "retries": 3}),
            ("500", u("/broken/error.jpg"), private), ("429 (Retry-After: 1), no retries", u("/broken/throttled.jpg"), private),
            ("503 once, then 200; retries: 2", u("/flaky.jpg"), {**private, "retries": 2}),
            ("4 s answer, timeout 1.5 s", u("/broken/slow.jpg"), private),
            ("redirect to itself", u("/broken/loop.jpg"), private), ("11 redirects", u("/chain/0"), private),
            ("10 redirects", u("/chain/1"), private),
            ("redirect to ftp:// (live loopback FTP)", u("/redir/ftp.jpg"), private),
            ("redirect to file:///etc/passwd", u("/redir/file.jpg"), private),
            ("user:pass@ in URL", f"http://alice:s3cret@127.0.0.1:{port}/img/photo.jpg", private),
            ("file:// photo in metadata", (local / "photo.jpg").as_uri(), private),
            ("file:// text file in metadata", (local / "secret.txt").as_uri(), private),
            ("file:// FIFO in metadata", (local / "pipe.jpg").as_uri(), private),
            ("ftp:// URL in metadata", routes_ftp, private), ("data: URL", "data:image/png;base64,AAAA", private),
            ("127.0.0.1", u("/img/photo.jpg"), {}),
            ("decimal 2130706433", f"http://2130706433:{port}/img/photo.jpg", {}),
            ("hex 0x7f000001", f"http://0x7f000001:{port}/img/photo.jpg", {}),
            ("octal 0177.0.0.1", f"http://0177.0.0.1:{port}/img/photo.jpg", {}),
            ("short 127.1", f"http://127.1:{port}/img/photo.jpg", {}),
            ("IPv6 [::1]", f"http://[::1]:{port}/img/photo.jpg", {}),
            ("mapped [::ffff:127.0.0.1]", f"http://[::ffff:127.0.0.1]:{port}/img/photo.jpg", {}),
            ("0.0.0.0", f"http://0.0.0.0:{port}/img/photo.jpg", {}),
            ("localhost (hosts file)", f"http://localhost:{port}/img/photo.jpg", {}),
            ("169.254.169.254 (cloud metadata)", "http://169.254.169.254/latest/meta-data/", {}),
            ("unknown host", "http://no-such-host.invalid/x.jpg", {}),
            ("closed port", "http://127.0.0.1:9/x.jpg", private),
        ]
        print("| input | status row | time |\n|---|---|---|")
        for label, url, crawl in cases:
            cfg = CrawlConfig(timeout=1.5, thread_count=1, **crawl)
            rec = ImageRecord(id="x", url=url)
            t = time.perf_counter()
            mark_origin(rec, from_folder=False)
            out = next(iter(ImageValidator(cfg.max_image_pixels, cfg)(Downloader(cfg)([rec]))))
            dt = time.perf_counter() - t
            detail = f"`{out.status}`"
            if out.ok:
                detail += f" {out.metadata.get('format')} {out.width}x{out.height}, encoding {out.metadata.get('encoding')}"
                if out.metadata.get("credentials_stripped"):
                    detail += ", credentials stripped"
            else:
                detail += f": {out.error_message[:70]}"
            print(f"| {label} | {detail.replace('|', '/')} | {dt * 1000:.0f} ms |", flush=True)
        hits = sum(web.hits.get(p, 0) for p in ("/img/photo.jpg",))
    print(f"\nFTP server connections: {len(ftp_seen)}; requests that reached the HTTP server for /img/photo.jpg: {hits} "
          "(only the rows with allow_private_network)")
    ftp.close_all()


if __name__ == "__main__":
    sys.exit(main())
