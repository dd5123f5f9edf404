"""Shared slots: at most ``limit`` holders of a key (a host name) at once across every worker process and node of
an executor, where a lock inside one process holds only within it.

One :class:`SlotTable` keeps the count; workers reach it through a picklable :class:`SharedSlots` client: the local
executor serves the table from a manager process (:mod:`multiprocessing.managers`, the standard library's object
server: one connection and one serving thread per client thread, so a waiting acquire blocks only its own caller),
the Ray executor from Ray actors (host names split among a few, so that no one actor serves every request). Only
holders are stored (a key with no holder costs nothing), and a slot is asked for once per request, at connect time,
so the table sees a call per request and no more.

A slot is a lease: it ends when released, or by itself when its lease runs out, so a worker that died holding slots
(a killed process, a lost node) does not keep them forever. A caller asks for a lease as long as its request may
take (the fetcher's attempt deadline), so a live holder never loses its slot early.
"""

from __future__ import annotations

import abc
import itertools
import threading
import time
import zlib
from multiprocessing.managers import BaseManager
from typing import Any, Callable

# One acquire call waits at most this long at the table, then the client asks again (a stopped caller, Ctrl-C, is
# noticed between calls, and no serving thread is held indefinitely).
WAIT_S = 0.5


class SlotTable:
    """Counting semaphores by key, with leases; thread-safe.

    Args:
        limit: Holders of one key at once (at least 1).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._held: dict[str, dict[int, float]] = {}  # key -> token -> lease end (monotonic)
        self._waiting: dict[str, list] = {}  # key -> [condition, waiters] while any caller waits for it
        self._tokens = itertools.count(1)
        self._peak = 0
        self._expired = 0

    def acquire(self, key: str, lease_s: float, wait_s: float = WAIT_S) -> int | None:
        """A slot of ``key`` leased for ``lease_s`` seconds: its token, or None when none came free within
        ``wait_s`` seconds."""
        end = time.monotonic() + wait_s
        with self._lock:
            while True:
                now = time.monotonic()
                held = self._held.setdefault(key, {})
                for token in [t for t, until in held.items() if until <= now]:  # leases of dead holders end
                    del held[token]
                    self._expired += 1
                if len(held) < self.limit:
                    token = next(self._tokens)
                    held[token] = now + lease_s
                    self._peak = max(self._peak, len(held))
                    return token
                if now >= end:
                    return None
                waiters = self._waiting.get(key)
                if waiters is None:
                    waiters = self._waiting[key] = [threading.Condition(self._lock), 0]
                waiters[1] += 1
                try:  # woken by a release, or at the first lease's end
                    waiters[0].wait(min(end, min(held.values())) - now)
                finally:
                    waiters[1] -= 1
                    if not waiters[1]:  # the key's last waiter: forget its condition
                        self._waiting.pop(key, None)

    def release(self, key: str, token: int) -> None:
        """End the lease ``token`` of ``key`` (a lease that already ran out is ignored)."""
        with self._lock:
            held = self._held.get(key)
            if held is None or held.pop(token, None) is None:
                return
            if not held:
                del self._held[key]
            waiters = self._waiting.get(key)
            if waiters is not None:
                waiters[0].notify()

    def stats(self) -> dict[str, int]:
        """``peak``: most holders of one key at once so far; ``expired``: leases that ran out unreleased;
        ``held``: slots held now."""
        with self._lock:
            return {"peak": self._peak, "expired": self._expired, "held": sum(map(len, self._held.values()))}


class SharedSlots(abc.ABC):
    """A picklable client of a :class:`SlotTable` that every worker of an executor reaches."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def acquire(self, key: str, lease_s: float, stopped: Callable[[], bool] = lambda: False) -> int | None:
        """Wait for a slot of ``key`` leased for ``lease_s`` seconds; returns its token, or None once ``stopped()``
        says the caller gave up."""
        while not stopped():
            token = self._acquire(key, lease_s, WAIT_S)
            if token is not None:
                return token
        return None

    @abc.abstractmethod
    def _acquire(self, key: str, lease_s: float, wait_s: float) -> int | None: ...

    @abc.abstractmethod
    def release(self, key: str, token: int) -> None:
        """End a slot's lease."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """The table's :meth:`SlotTable.stats`."""


# --- local executor: the table served by a manager process -------------------------------------------------------

_TABLE: SlotTable | None = None


def _served_table(limit: int) -> SlotTable:
    """The manager process's one table (every client's ``table()`` call gets a proxy of it)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = SlotTable(limit)
    return _TABLE


class SlotManager(BaseManager):
    """Serves one :class:`SlotTable` to the worker processes of the local executor."""


SlotManager.register("table", callable=_served_table)


class ManagerSlots(SharedSlots):
    """Client of the table of a :class:`SlotServer`; connects lazily, once per process (the manager's proxy keeps one
    connection per calling thread)."""

    def __init__(self, limit: int, address: Any, authkey: bytes) -> None:
        super().__init__(limit)
        self.address, self.authkey = address, authkey
        self._proxy: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "address": self.address, "authkey": self.authkey}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], state["address"], state["authkey"])  # type: ignore[misc]

    def _table(self) -> Any:
        with self._lock:
            if self._proxy is None:
                manager = SlotManager(address=self.address, authkey=self.authkey)
                manager.connect()
                self._proxy = manager.table(self.limit)  # type: ignore[attr-defined]
            return self._proxy

    def _acquire(self, key: str, lease_s: float, wait_s: float) -> int | None:
        return self._table().acquire(key, lease_s, wait_s)

    def release(self, key: str, token: int) -> None:
        self._table().release(key, token)

    def stats(self) -> dict[str, int]:
        return self._table().stats()


def _exit_with_parent() -> None:
    """In the manager process: end when the process that started it ends, even killed (no table outlives its run)."""
    import multiprocessing
    import os

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(0)), name="mrbench-slots-parent", daemon=True).start()


class SlotServer:
    """A :class:`SlotTable` served on 127.0.0.1 (a free port, a random key) by a manager process (spawned, so the
    driver's threads are not copied), for the worker processes of the local executor; :meth:`close` stops it."""

    def __init__(self, limit: int) -> None:
        import multiprocessing
        import os

        authkey = os.urandom(16)
        self._manager = SlotManager(address=("127.0.0.1", 0), authkey=authkey, ctx=multiprocessing.get_context("spawn"))
        self._manager.start(_exit_with_parent)
        self.client = ManagerSlots(limit, self._manager.address, authkey)

    def close(self) -> None:
        self._manager.shutdown()


# --- Ray executor: the table in an actor -------------------------------------------------------------------------

# Serving threads of each slot actor: a waiting acquire holds one for at most WAIT_S.
RAY_ACTOR_THREADS = 64
# Slot actors of a table: host names are split among them by a stable hash (each key lives in one actor, so the
# limit holds), and each serves its share of the calls.
RAY_ACTORS = 4


class RaySlots(SharedSlots):
    """Client of a :class:`SlotTable` split over Ray actors by key (the handles pickle to any task on any node)."""

    def __init__(self, limit: int, actors: list[Any]) -> None:
        super().__init__(limit)
        self.actors = actors

    @classmethod
    def start(cls, limit: int, actors: int = RAY_ACTORS) -> "RaySlots":
        """New slot actors on the connected cluster (they take no CPU, so they never hold back a task)."""
        import ray

        remote = ray.remote(SlotTable).options(num_cpus=0, max_concurrency=RAY_ACTOR_THREADS)
        return cls(limit, [remote.remote(limit) for _ in range(actors)])

    def _actor(self, key: str) -> Any:
        return self.actors[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(self.actors)]

    def _acquire(self, key: str, lease_s: float, wait_s: float) -> int | None:
        import ray

        return ray.get(self._actor(key).acquire.remote(key, lease_s, wait_s))

    def release(self, key: str, token: int) -> None:
        self._actor(key).release.remote(key, token)  # nothing to wait for: the next acquire is queued behind it

    def stats(self) -> dict[str, int]:
        """The actors' stats together (``peak``: the most of any one key)."""
        import ray

        parts = ray.get([a.stats.remote() for a in self.actors])
        return {"peak": max(p["peak"] for p in parts), "expired": sum(p["expired"] for p in parts),
                "held": sum(p["held"] for p in parts)}

    def close(self) -> None:
        import ray

        if ray.is_initialized():  # a cluster already shut down took its actors with it
            for actor in self.actors:
                ray.kill(actor)
