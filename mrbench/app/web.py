"""The demo's local web (``mrbench demo``): a small server on 127.0.0.1 with real images and broken URLs.

Routes are data (:class:`Route`), so the demo serves real images next to the failures a crawler meets on the web:
404/500, corrupt and truncated files, empty bodies, slow answers, redirect loops, bodies that declare a huge size,
decompression bombs and HTML pages (:func:`broken_routes`). The test suite's server (``tests/webserver.py``) builds
on this one with request probes and more failure shapes.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class Route:
    """What one path answers.

    Attributes:
        body: Bytes sent.
        status: HTTP status.
        content_type: Content-Type header.
        delay: Seconds to wait before answering (a slow server).
        location: Redirect target (with a 3xx status).
        declared_length: Content-Length to declare instead of ``len(body)`` (a lying server); negative: none.
        headers: Extra headers.
    """

    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    delay: float = 0.0
    location: str | None = None
    declared_length: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


class WebHandler(BaseHTTPRequestHandler):
    """Answers each GET with the route of its path (404 when none); subclasses hook :meth:`answer`,
    :meth:`answering` and :meth:`send_body`."""

    server: "SampleWebServer"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if "://" in path:  # absolute-form request line
            path = "/" + path.split("://", 1)[1].split("/", 1)[-1]
        path = unquote(path)  # routes are named by their decoded path (``/img/café.jpg``)
        self.answer(path, self.server.routes.get(path))

    def answer(self, path: str, route: Route | None) -> None:
        """Send ``route`` (the route of ``path``; None: 404) after its delay."""
        if route is None:
            route = Route(b"not found", 404, "text/plain")
        if route.delay:
            time.sleep(route.delay)
        self.answering()
        try:
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            if route.location:  # raw UTF-8, as servers send a non-ASCII Location
                self._headers_buffer.append(b"Location: " + route.location.encode() + b"\r\n")  # type: ignore[attr-defined]
            for k, v in route.headers.items():
                self.send_header(k, v)
            length = route.declared_length if route.declared_length is not None else len(route.body)
            if length >= 0:  # a negative declared_length sends no Content-Length: the body ends when the connection does
                self.send_header("Content-Length", str(length))
            self.send_body(route)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def answering(self) -> None:
        """Called once the delay is over, just before the response is sent."""

    def send_body(self, route: Route) -> None:
        """End the headers and send the body."""
        self.end_headers()
        self.wfile.write(route.body)


class SampleWebServer(ThreadingHTTPServer):
    """Serves ``routes`` on 127.0.0.1 (``port``, or a free one) from a background thread; use as a context manager."""

    daemon_threads = True
    handler: type[WebHandler] = WebHandler

    def __init__(self, routes: dict[str, Route] | None = None, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), self.handler)
        self.routes: dict[str, Route] = dict(routes or {})

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def __enter__(self) -> "SampleWebServer":
        threading.Thread(target=self.serve_forever, name="mrbench-web", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def png_bomb(width: int = 16000, height: int = 16000) -> bytes:
    """A tiny 1-bit PNG that declares ``width x height`` pixels (a decompression bomb when decoded)."""
    raw = (b"\x00" + b"\x00" * ((width + 7) // 8)) * height
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def broken_routes(jpeg: bytes) -> dict[str, Route]:
    """The failure zoo, built around one real JPEG: each path is named after what it does wrong."""
    return {
        "/broken/corrupt.jpg": Route(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8),
        "/broken/truncated.jpg": Route(jpeg[: len(jpeg) // 2]),
        "/broken/empty.jpg": Route(b""),
        "/broken/missing.jpg": Route(b"gone", 404, "text/plain"),
        "/broken/error.jpg": Route(b"oops", 500, "text/plain"),
        "/broken/slow.jpg": Route(jpeg, delay=4.0),
        "/broken/loop.jpg": Route(b"", 302, location="/broken/loop.jpg"),
        "/broken/huge.jpg": Route(jpeg, declared_length=50 * 1024**3),
        "/broken/bomb.png": Route(png_bomb(), content_type="image/png"),
        "/broken/page.html": Route(b"<html><body>not an image</body></html>", content_type="text/html"),
    }


def encode(image: "object", fmt: str = "JPEG", **kwargs: object) -> bytes:
    """Encode a PIL image to bytes."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)  # type: ignore[attr-defined]
    return buf.getvalue()
