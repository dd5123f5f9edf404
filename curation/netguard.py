"""Egress guard for the crawler: a small forward HTTP proxy that every download goes through.

img2dataset downloads with ``urllib``, which honours ``http_proxy``/``https_proxy``; pointing those at this
proxy puts one checkpoint on every request, redirects included (urllib follows a redirect with a new request
through the proxy). The proxy:

* resolves the host itself and refuses private, loopback, link-local (cloud metadata), multicast, reserved and
  unspecified addresses unless ``allow_private`` is set; it then connects to the address it checked, so a DNS
  answer cannot change between the check and the connection;
* refuses bodies larger than ``max_body_bytes`` (declared or streamed);
* reads the image header of each successful body and refuses non-images and decompression bombs (more pixels
  declared than ``max_image_pixels``) before the downloader decodes anything.

Refusals answer HTTP 403/413 with a reason phrase starting ``mrbench:``, which img2dataset records as the
sample's error message; :func:`curation.download.classify_error` turns it into a named failure.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

BLOCKED_PRIVATE = "mrbench: blocked private network address"
OVERSIZE = "mrbench: oversize body"
BAD_URL = "mrbench: unsupported url"
NOT_IMAGE = "mrbench: not an image"
CORRUPT = "mrbench: corrupt image"
EMPTY = "mrbench: empty body"
# Leading bytes of the image formats we accept: a body that starts like one but does not parse is corrupt.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
BOMB = "mrbench: decompression bomb"
_HOP_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "proxy-connection",
}


def is_public_address(ip: str) -> bool:
    """True when ``ip`` is a globally routable unicast address (not private, loopback, link-local...)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not (addr.is_multicast or addr.is_reserved or addr.is_unspecified)


def inspect_image(body: bytes, max_pixels: int) -> str | None:
    """Read only the image header: None when ``body`` is an image of at most ``max_pixels``, else a refusal."""
    from PIL import Image, UnidentifiedImageError

    if not body:
        return EMPTY
    try:
        with Image.open(io.BytesIO(body)) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:
        return f"{BOMB} ({e})"[:200]
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        kind = CORRUPT if body.startswith(_MAGIC) else NOT_IMAGE
        return f"{kind} ({len(body)} bytes, starts {body[:8]!r})"
    if w * h > max_pixels:
        return f"{BOMB} ({w}x{h} > {max_pixels} pixels)"
    return None


def resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


class _Handler(BaseHTTPRequestHandler):
    server: "GuardProxy"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # quiet: img2dataset records the outcome
        return

    def _refuse(self, code: int, reason: str) -> None:
        self.send_response(code, reason)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _check(self, host: str, port: int) -> str | None:
        """Resolve and check ``host``; returns the address to connect to, or None after refusing."""
        try:
            addrs = resolve(host, port)
        except (socket.gaierror, UnicodeError) as e:
            self._refuse(502, f"mrbench: dns failure {e}")
            return None
        if not self.server.allow_private:
            allowed = self.server.policy or (lambda _host, ip: is_public_address(ip))
            bad = [a for a in addrs if not allowed(host, a)]
            if bad:
                self._refuse(403, f"{BLOCKED_PRIVATE} {bad[0]}")
                return None
        return addrs[0]

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        parts = urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            self._refuse(400, f"{BAD_URL} {parts.scheme or '?'}")
            return
        port = parts.port or 80
        ip = self._check(parts.hostname, port)
        if ip is None:
            return
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = http.client.HTTPConnection(ip, port, timeout=self.server.upstream_timeout)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            headers["Host"] = parts.netloc
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            declared = resp.getheader("Content-Length")
            limit = self.server.max_body_bytes
            if declared is not None and declared.isdigit() and int(declared) > limit:
                self._refuse(413, f"{OVERSIZE} (declared {declared} bytes > {limit})")
                return
            body = resp.read(limit + 1)
            if len(body) > limit:
                self._refuse(413, f"{OVERSIZE} (more than {limit} bytes)")
                return
            if 200 <= resp.status < 300:
                problem = inspect_image(body, self.server.max_image_pixels)
                if problem is not None:
                    self._refuse(415 if problem.startswith(NOT_IMAGE) else 422, problem)
                    return
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP_HEADERS and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (OSError, http.client.HTTPException) as e:
            self._refuse(504 if isinstance(e, TimeoutError) else 502, f"mrbench: upstream error {type(e).__name__}")
        finally:
            conn.close()

    def do_CONNECT(self) -> None:  # noqa: N802
        host, _, port_s = self.path.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_s)
        except ValueError:
            self._refuse(400, f"{BAD_URL} {self.path}")
            return
        ip = self._check(host, port)
        if ip is None:
            return
        try:
            upstream = socket.create_connection((ip, port), timeout=self.server.upstream_timeout)
        except OSError as e:
            self._refuse(502, f"mrbench: upstream error {type(e).__name__}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self._tunnel(self.connection, upstream)

    def _tunnel(self, client: socket.socket, upstream: socket.socket) -> None:
        # TLS hides the body, so the size cap counts bytes flowing back and cuts the tunnel past it.
        received = 0
        limit = self.server.max_body_bytes + 64 * 1024  # allowance for TLS handshake and headers
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], self.server.upstream_timeout)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        received += len(data)
                        if received > limit:
                            return
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


class GuardProxy(ThreadingHTTPServer):
    """The egress guard; use as a context manager, then point ``http_proxy`` at :attr:`url`.

    Args:
        allow_private: Allow private/loopback/link-local destinations (tests and the offline demo).
        max_body_bytes: Largest body relayed.
        timeout: Upstream socket timeout in seconds.
        max_image_pixels: Images whose header declares more pixels are refused as decompression bombs.
        policy: ``(host, ip) -> allowed``; defaults to "ip is a public address".
    """

    daemon_threads = True

    def __init__(
        self,
        allow_private: bool = False,
        max_body_bytes: int = 20 << 20,
        timeout: float = 10.0,
        max_image_pixels: int = 64_000_000,
        policy: Callable[[str, str], bool] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.allow_private = allow_private
        self.max_body_bytes = max_body_bytes
        self.max_image_pixels = max_image_pixels
        self.policy = policy
        self.upstream_timeout = timeout
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "GuardProxy":
        self._thread = threading.Thread(target=self.serve_forever, name="mrbench-guard", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
