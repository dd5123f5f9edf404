"""Egress guard and fetcher for the crawler: the policy is enforced inside the downloader's own connection.

Every request, and every hop of a redirect chain, goes through :meth:`Fetcher.fetch`, which

* accepts only ``http`` and ``https`` URLs: anything else is refused before any I/O (``unsupported_url`` for the
  URL itself, ``blocked_scheme`` for a redirect to ``ftp://``, ``file://`` ...); no code path here opens a local file;
* strips credentials (``user:pass@``) from the URL: they are never sent, neither as userinfo nor as an
  ``Authorization`` header (the row keeps the URL without them, so a release never carries them);
* resolves the host once, refuses private, loopback, link-local (cloud metadata), multicast, reserved and unspecified
  addresses unless ``allow_private_network`` is set, then connects to the address it checked (TLS still verifies the
  host name), so a DNS answer cannot change between the check and the connection;
* sends a URL with a non-ASCII path or query (or a redirect ``Location`` in UTF-8) percent-encoded, as browsers and
  img2dataset do; a URL with spaces or control characters, or one that does not parse, is ``unsupported_url``;
* refuses an image whose headers opt out of MRBench (``X-Robots-Tag: noai``, ``tdm-reservation: 1``; see
  :mod:`curation.optout`) as ``opted_out``, before reading its body;
* streams the body with a cap (``oversize_body`` for a declared or a streamed body over ``max_body_bytes``);
* gives each attempt one deadline (``DEADLINE_FACTOR`` x ``timeout``) for connecting, the headers, the body and
  every redirect hop, checked at every read, so a server dripping bytes ends as ``timeout``; each single
  connect or read waits at most ``timeout``;
* follows at most ``max_redirects`` redirects (``too_many_redirects`` past that; ``redirect_loop`` when a URL repeats);
* retries timeouts, connection errors, 429 and 5xx with exponential backoff and full jitter, honouring a
  ``Retry-After`` header up to ``retry_after_max`` seconds; 403, 404 and every other answer are final;
* holds at most ``max_per_domain`` concurrent requests per host name (0: no limit), in this process.

There is no proxy, no extra thread and no extra connection per request: one socket per request, as a plain
``urllib`` download has. A failure is a :class:`FetchError` carrying a named reason, which the download stage
writes as the row's status.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import http.client
import ipaddress
import io
import random
import re
import socket
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import SplitResult, quote, urljoin, urlsplit, urlunsplit

from mrbench.curation.config import CrawlConfig
from mrbench.curation.optout import OPTED_OUT, opt_out_reason

# Statuses a retry can fix (the server or the network was busy); everything else is final.
RETRYABLE = frozenset({"timeout", "connection_error", "http_429", "http_5xx"})
ALLOWED_SCHEMES = ("http", "https")
_CHUNK = 1 << 16
# One attempt (connect, headers, body, redirects) ends as ``timeout`` after this many ``crawl.timeout``s.
DEADLINE_FACTOR = 5
# Spaces and control characters: no browser sends them raw, http.client refuses them; such a URL is not fetchable.
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


class FetchError(Exception):
    """A named download failure: ``reason`` becomes the row's status, ``message`` its error_message."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


# The well-known NAT64 prefix (RFC 6052); the local-use 64:ff9b:1::/48 is not global and stays refused.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"),)


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and delivers to: IPv4-mapped and -compatible (``::a.b.c.d``),
    6to4 (``2002:AABB:CCDD::``), Teredo (the client's address) and NAT64 (``64:ff9b::/96``)."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if any(addr in net for net in _NAT64) or (int(addr) >> 32 == 0 and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def is_public_address(ip: str) -> bool:
    """True when ``ip`` is a globally routable unicast address (not private, loopback, link-local...); an IPv6
    address carrying an IPv4 one (:func:`embedded_ipv4`) is public only when that IPv4 address is (and, for 6to4
    and Teredo, the IPv6 address too)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        inner = embedded_ipv4(addr)
        if inner is not None:
            if not _is_public(inner):
                return False
            if addr.ipv4_mapped is not None or any(addr in net for net in _NAT64):
                return True  # a translation of the IPv4 address (an IPv6-only network reaches IPv4 hosts so)
    return _is_public(addr)


def _is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return addr.is_global and not (addr.is_multicast or addr.is_reserved or addr.is_unspecified)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (sorted, deduplicated)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


# getaddrinfo has no timeout of its own: lookups run on these threads so a request waits for one only until its
# deadline (a lookup still hanging then finishes, or not, on its thread; its result is dropped).
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="mrbench-dns")


def resolve_until(host: str, port: int, deadline: float) -> list[str]:
    """:func:`resolve`, waiting at most until ``deadline`` (a ``time.monotonic`` value).

    Raises:
        TimeoutError: the lookup did not answer in time.
    """
    future = _LOOKUPS.submit(resolve, host, port)
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"name lookup of {host} took longer than the deadline") from None


def strip_credentials(url: str) -> tuple[str, bool]:
    """``url`` without ``user:pass@`` userinfo, and whether there was any (a URL that does not parse is cut at its
    last ``@`` before the path, so a password never survives in a failed row either)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        netloc, slash, tail = rest.partition("/")
        if not sep or "@" not in netloc:
            return url, False
        return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{tail}", True
    if "@" not in parts.netloc:
        return url, False
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), True


def check_url(url: str) -> tuple[str, str] | None:
    """Why ``url`` cannot be downloaded at all, as ``(unsupported_url, message)``; None for an http(s) URL with a host.

    Used at selection and again before the first request, so a metadata row with ``file://``, ``ftp://``,
    ``data:`` or a malformed URL is a named row and never an I/O.
    """
    bad = _UNSAFE_URL_CHARS.search(url)
    if bad is not None:
        return "unsupported_url", f"url contains {bad.group()!r} (spaces and control characters are not allowed)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
        if parts.hostname:
            parts.hostname.encode("idna")
    except (ValueError, UnicodeError) as e:
        return "unsupported_url", f"malformed url: {e}"[:300]
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return "unsupported_url", f"scheme {parts.scheme or '(none)'!r} is not downloadable (only http and https)"
    if not parts.hostname:
        return "unsupported_url", "url has no host"
    return None


def request_target(parts: SplitResult) -> str:
    """The request line's target for ``parts``: path and query with every non-ASCII character percent-encoded as
    UTF-8 (what browsers send; ASCII, including existing ``%XX`` escapes, is left as it is)."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _NON_ASCII.sub(lambda m: quote(m.group(), safe=""), target)


def decode_location(value: str) -> str:
    """A ``Location`` header as its sender meant it: http.client decodes header bytes as Latin-1, while servers
    send UTF-8 (browsers read it so); bytes that are not UTF-8 stay as Latin-1."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


class _DeadlinePassed(TimeoutError):
    """The attempt's overall deadline passed (a server answering too slowly, a byte at a time or not at all)."""


def _wait_for(timeout: float, deadline: float) -> float:
    """How long the next connect or read may wait: ``timeout``, or less when the deadline is nearer."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _DeadlinePassed()
    return min(timeout, remaining)


class _DeadlineReader(socket.SocketIO):
    """The socket's reads as a raw stream whose every read waits at most until the deadline (http.client reads the
    status line, the headers and the body through it, so a dripping server cannot stretch any of them)."""

    def __init__(self, sock: socket.socket, timeout: float, deadline: float) -> None:
        super().__init__(sock, "rb")
        self._timeout, self._deadline = timeout, deadline

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        self._sock.settimeout(_wait_for(self._timeout, self._deadline))
        return super().readinto(b)  # type: ignore[return-value]


class _DeadlineSocket:
    """A connected socket whose ``makefile`` (what http.client reads a response from) honours the deadline."""

    def __init__(self, sock: socket.socket, timeout: float, deadline: float) -> None:
        self._sock, self._timeout, self._deadline = sock, timeout, deadline

    def makefile(self, mode: str = "rb", *args: object, **kwargs: object) -> io.BufferedReader:
        raw = _DeadlineReader(self._sock, self._timeout, self._deadline)
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile: closed with its last reader
        return io.BufferedReader(raw, _CHUNK)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to ``ip`` (already checked) that still names ``host`` in the Host header; connecting,
    sending and reading all end at ``deadline`` (a ``time.monotonic`` value)."""

    def __init__(self, host: str, port: int, ip: str, timeout: float, deadline: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip
        self._deadline = deadline
        self.raw_sock: socket.socket | None = None  # the plain socket, for an abort from another thread

    def _connect_raw(self) -> socket.socket:
        sock = socket.create_connection((self._ip, self.port), _wait_for(self.timeout, self._deadline))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw_sock = sock
        return sock

    def connect(self) -> None:
        self.sock = _DeadlineSocket(self._connect_raw(), self.timeout, self._deadline)  # type: ignore[assignment]


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to a checked ``ip``: TLS is verified against ``host`` (SNI and certificate name)."""

    _context: ssl.SSLContext | None = None

    def connect(self) -> None:
        sock = self._connect_raw()
        if _PinnedHTTPSConnection._context is None:
            _PinnedHTTPSConnection._context = ssl.create_default_context()
        sock.settimeout(_wait_for(self.timeout, self._deadline))
        tls = _PinnedHTTPSConnection._context.wrap_socket(sock, server_hostname=self.host)
        self.sock = _DeadlineSocket(tls, self.timeout, self._deadline)  # type: ignore[assignment]


@dataclass
class FetchResult:
    """A successful download: the body, the URL asked for (credentials stripped), the URL the body came from after
    redirects, and what happened on the way."""

    body: bytes
    url: str
    final_url: str
    attempts: int = 1
    credentials_stripped: bool = False


@dataclass
class DomainLimiter:
    """At most ``limit`` concurrent requests per host name (0: no limit); shared by the threads of one process."""

    limit: int = 0
    _sems: dict[str, threading.BoundedSemaphore] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    active: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def acquire(self, host: str) -> None:
        if self.limit:
            with self._lock:
                sem = self._sems.setdefault(host, threading.BoundedSemaphore(self.limit))
            sem.acquire()
        with self._lock:
            self.active[host] += 1
            self.peak[host] = max(self.peak[host], self.active[host])

    def release(self, host: str) -> None:
        with self._lock:
            self.active[host] -= 1
        if self.limit:
            self._sems[host].release()


class Fetcher:
    """Downloads one URL at a time under the egress policy of a :class:`~mrbench.curation.config.CrawlConfig`; thread-safe.

    Args:
        config: Timeouts, size cap, retries, backoff, redirects, per-domain limit, private-network switch.
        policy: ``(host, ip) -> allowed`` replacing "ip is a public address" (tests); ignored when
            ``allow_private_network`` is set.
        sleep: Waits between retries (tests pass a recorder).
    """

    def __init__(self, config: CrawlConfig, policy: Callable[[str, str], bool] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.policy = policy or (lambda _host, ip: is_public_address(ip))
        self.limiter = DomainLimiter(config.max_per_domain)
        self.sleep = sleep
        self.user_agent = f"Mozilla/5.0 (compatible; {config.user_agent_token})" if config.user_agent_token else "Mozilla/5.0"
        self._rng = random.Random()  # jitter only: it decides when, never what is downloaded
        self._open: set[socket.socket] = set()  # sockets of requests in flight (abort() shuts them down)
        self._open_lock = threading.Lock()
        self.aborted = False

    def abort(self) -> None:
        """Stop every request in flight now (Ctrl-C): their sockets are shut down, so a blocked read returns at
        once, and no further request starts."""
        self.aborted = True
        with self._open_lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def fetch(self, url: str) -> FetchResult:
        """The body of ``url`` after redirects and retries; raises :class:`FetchError` with a named reason."""
        bad = check_url(url)
        if bad is not None:
            raise FetchError(*bad)
        url, stripped = strip_credentials(url)
        cfg = self.config
        attempt = 0
        while True:
            try:
                body, final = self._follow(url)
                return FetchResult(body, url, final, attempt + 1, stripped)
            except FetchError as e:
                if e.reason not in RETRYABLE or attempt >= cfg.retries or self.aborted:
                    if attempt:
                        e.message = f"{e.message} (after {attempt + 1} attempts)"
                    raise
                if e.retry_after is not None:
                    delay = min(e.retry_after, cfg.retry_after_max)
                else:  # exponential backoff with full jitter
                    delay = self._rng.uniform(0, min(cfg.backoff_max, cfg.backoff_base * 2 ** attempt))
                self.sleep(delay)
                attempt += 1

    def _follow(self, url: str) -> tuple[bytes, str]:
        seen = {url}
        deadline = time.monotonic() + self.config.timeout * DEADLINE_FACTOR  # the whole attempt, every hop
        for _ in range(self.config.max_redirects + 1):
            status, location, body = self._request(url, deadline)
            if location is None:
                return body, url
            location = decode_location(location)
            if _UNSAFE_URL_CHARS.search(location):  # checked before urljoin, which drops tabs and newlines
                raise FetchError("unsupported_url", f"redirect ({status}) to {location[:200]!r}: spaces and "
                                                    "control characters are not allowed")
            try:
                nxt, _ = strip_credentials(urljoin(url, location))
            except ValueError as e:
                raise FetchError("unsupported_url", f"redirect ({status}) to a malformed url {location[:200]!r}: {e}") from None
            scheme = urlsplit(nxt).scheme.lower()
            if scheme not in ALLOWED_SCHEMES:
                raise FetchError("blocked_scheme", f"redirect ({status}) to a {scheme or 'schemeless'} url refused: {nxt[:200]}")
            bad = check_url(nxt)
            if bad is not None:
                raise FetchError("unsupported_url", f"redirect to {nxt[:200]}: {bad[1]}")
            if nxt in seen:
                raise FetchError("redirect_loop", f"redirect ({status}) back to {nxt[:200]}")
            seen.add(nxt)
            url = nxt
        raise FetchError("too_many_redirects", f"more than {self.config.max_redirects} redirects")

    def _address(self, host: str, port: int, deadline: float) -> str:
        """Resolve ``host`` once (within the attempt's deadline) and check every address it has; returns the one to
        connect to."""
        try:
            addrs = resolve_until(host, port, deadline)
        except TimeoutError as e:
            raise FetchError("timeout", str(e)) from None
        except (socket.gaierror, UnicodeError, OSError) as e:
            raise FetchError("dns_failure", f"{host}: {e}") from None
        if not addrs:
            raise FetchError("dns_failure", f"{host}: no address")
        if not self.config.allow_private_network:
            bad = [a for a in addrs if not self.policy(host, a)]
            if bad:
                raise FetchError("blocked_private_network", f"{host} resolves to private network address {bad[0]}")
        return addrs[0]

    def _request(self, url: str, deadline: float) -> tuple[int, str | None, bytes]:
        """One GET: ``(status, redirect location or None, body)``; raises FetchError for every failure."""
        cfg = self.config
        if self.aborted:
            raise FetchError("interrupted", "the download was stopped")
        parts = urlsplit(url)
        https = parts.scheme.lower() == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if https else 80)
        ip = self._address(host, port, deadline)
        conn_cls = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
        conn = conn_cls(host, port, ip, cfg.timeout, deadline)
        self.limiter.acquire(host)
        try:
            conn.connect()
            with self._open_lock:
                self._open.add(conn.raw_sock)  # type: ignore[arg-type]
            if self.aborted:  # abort() ran while this one was connecting
                raise FetchError("interrupted", "the download was stopped")
            conn.request("GET", request_target(parts), headers={
                "User-Agent": self.user_agent, "Accept": "image/*,*/*;q=0.8", "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            status = resp.status
            if 300 <= status < 400 and status != 304:
                location = resp.getheader("Location")
                if not location:
                    raise FetchError("http_3xx", f"HTTP {status} without a Location header")
                return status, location, b""
            if status != 200 and not 200 <= status < 300:
                raise _http_error(status, resp.reason, resp.getheader("Retry-After"))
            refusal = opt_out_reason(resp.getheaders(), cfg)  # before any byte of the body is read
            if refusal is not None:
                raise FetchError(OPTED_OUT, refusal)
            declared = (resp.getheader("Content-Length") or "").strip()
            limit = cfg.max_body_bytes
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise FetchError("oversize_body", f"declared {declared} bytes > {limit}")
            chunks, size = [], 0
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise FetchError("oversize_body", f"more than {limit} bytes")
                chunks.append(chunk)
            return status, None, b"".join(chunks)
        except FetchError:
            raise
        except (TimeoutError, socket.timeout) as e:
            if time.monotonic() >= deadline:  # the whole attempt took too long (a slow or dripping server)
                raise FetchError("timeout", f"no complete answer within {cfg.timeout * DEADLINE_FACTOR:g} s "
                                            f"({DEADLINE_FACTOR} x crawl.timeout)") from None
            raise FetchError("timeout", f"timed out ({e})") from None
        except ssl.SSLError as e:
            raise FetchError("tls_error", f"{type(e).__name__}: {e}"[:300]) from None
        except http.client.IncompleteRead as e:
            raise FetchError("connection_error", f"incomplete read: {len(e.partial)} bytes") from None
        except (OSError, http.client.HTTPException) as e:
            if self.aborted:
                raise FetchError("interrupted", "the download was stopped") from None
            raise FetchError("connection_error", f"{type(e).__name__}: {e}"[:300]) from None
        except (ValueError, UnicodeError, LookupError) as e:  # a response http.client cannot take apart
            raise FetchError("bad_response", f"{type(e).__name__}: {e}"[:300]) from None
        finally:
            self.limiter.release(host)
            with self._open_lock:
                self._open.discard(conn.raw_sock)  # type: ignore[arg-type]
            conn.close()


def _http_error(status: int, reason: str, retry_after: str | None) -> FetchError:
    name = {403: "http_403", 404: "http_404", 429: "http_429"}.get(status)
    if name is None:
        name = "http_5xx" if status >= 500 else "http_4xx" if status >= 400 else "http_error"
    wait = parse_retry_after(retry_after) if status in (429, 503) else None
    return FetchError(name, f"HTTP Error {status}: {reason}", retry_after=wait)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    try:
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (OverflowError, ValueError, OSError):
        return None
