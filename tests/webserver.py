"""The test suite's local web: the demo's server (:mod:`mrbench.app.web`) with request probes and more failure shapes.

On top of the demo's routes, a :class:`Route` here can answer a ``sequence`` of routes for its first hits (a server
that fails, then recovers) and trickle its bytes (``drip``); the server counts hits per path, keeps every request's
headers and measures how many requests it answered at once. Importable from any test folder (conftest modules are
not importable by name); the names match :mod:`mrbench.app.web` so a test swaps one for the other.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from mrbench.app import web
from mrbench.app.web import broken_routes, encode, png_bomb

__all__ = ["Route", "SampleWebServer", "ProbeHandler", "broken_routes", "encode", "png_bomb"]


@dataclass
class Route(web.Route):
    """A demo route plus test-only shapes.

    Attributes:
        sequence: Answers for the first hits, in order (then this route itself): a server that fails, then recovers.
        drip: Seconds between single bytes of the body (a server that trickles; 0: send at once).
        drip_headers: Trickle the status line and headers too.
    """

    sequence: list[web.Route] = field(default_factory=list)
    drip: float = 0.0
    drip_headers: bool = False


class ProbeHandler(web.WebHandler):
    """Counts each request (hits, headers, requests being answered) and plays sequences and drips."""

    server: "SampleWebServer"

    def answer(self, path: str, route: web.Route | None) -> None:
        with self.server.lock:
            hit = self.server.hits.get(path, 0)
            self.server.hits[path] = hit + 1
            self.server.request_headers.setdefault(path, []).append(dict(self.headers.items()))
            self.server.active += 1
            self.server.peak_active = max(self.server.peak_active, self.server.active)
        self._counted = True
        self.hold(route)
        if route is not None and hit < len(getattr(route, "sequence", ())):
            route = route.sequence[hit]  # type: ignore[attr-defined]
        try:
            super().answer(path, route)
        finally:
            self.answering()

    def hold(self, route: web.Route | None) -> None:
        """Called once the request is counted, before anything is answered (a gated server waits here)."""

    def answering(self) -> None:
        """Stop counting this request as active: before its response is sent (the client cannot start its next
        request before reading it, so the concurrency probe never sees a finished request overlap the next)."""
        if getattr(self, "_counted", False):
            self._counted = False
            with self.server.lock:
                self.server.active -= 1

    def send_body(self, route: web.Route) -> None:
        drip = getattr(route, "drip", 0.0)
        if not drip:
            super().send_body(route)
            return
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        head = b"".join(self._headers_buffer)  # type: ignore[attr-defined]
        self._headers_buffer = []
        if not getattr(route, "drip_headers", False):
            self.wfile.write(head)
            head = b""
        for k in range(len(head + route.body)):
            self.wfile.write((head + route.body)[k : k + 1])
            self.wfile.flush()
            time.sleep(drip)


class SampleWebServer(web.SampleWebServer):
    """The demo's server with probes: ``hits`` and ``request_headers`` per path, ``active`` / ``peak_active``
    requests being answered (a concurrency probe)."""

    handler = ProbeHandler

    def __init__(self, routes: dict[str, web.Route] | None = None, port: int = 0) -> None:
        super().__init__(routes, port)
        self.hits: dict[str, int] = {}
        self.request_headers: dict[str, list[dict[str, str]]] = {}
        self.active = 0
        self.peak_active = 0
        self.lock = threading.Lock()
