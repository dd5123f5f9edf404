"""``crawl.max_per_domain`` across download workers: a loopback server counts the open requests of each host name
(``127.0.0.1`` and ``localhost``, one server) while 2 worker processes x 16 threads download; with the executor's
shared slots no host ever has more than the limit, and without them (a lock per process) it has more. The slot table
itself hands out leases that run out, so a dead worker's slots come back."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from mrbench.config import load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import run_curation
from mrbench.executors import Executor, LocalExecutor
from mrbench.slots import SlotServer, SlotTable
from test_egress import photo, write_inputs
from webserver import ProbeHandler, Route, SampleWebServer, encode

pytestmark = pytest.mark.slow
LIMIT = 2
HOSTS = ("127.0.0.1", "localhost")  # two host names of the one loopback server
PER_HOST = 16


class _HostCountingHandler(ProbeHandler):
    def hold(self, route: object) -> None:
        self.server.hold_open(self.headers.get("Host", "").rsplit(":", 1)[0])


class HostCountingServer(SampleWebServer):
    """Counts the open requests of each host name (by the Host header), and holds each answer until ``hold`` seconds
    passed or the host has more than ``LIMIT`` requests open: the crowd shows at once when the limit does not hold
    (then the host's answers are held no more), and an answer is slow enough for the workers' requests to overlap
    when it does."""

    handler = _HostCountingHandler

    def __init__(self, routes: dict[str, Route], hold: float) -> None:
        super().__init__(routes)
        self.hold_s = hold
        self.open: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.changed = threading.Condition()

    def hold_open(self, host: str) -> None:
        with self.changed:
            self.open[host] += 1
            self.peak[host] = max(self.peak[host], self.open[host])
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.peak[host] > LIMIT, timeout=self.hold_s)
            self.open[host] -= 1  # before the answer is sent: the client's next request cannot overlap this one


def curate(tmp_path: Path, web: HostCountingServer, name: str, hold: float, workers: int,
           executor: str = "local") -> tuple[dict[str, int], Path]:
    """Curate 16 URLs of each host with 2 download shards, ``workers`` workers x 16 threads and max_per_domain 2;
    returns the most open requests seen per host, and the run folder."""
    web.hold_s = hold
    web.peak.clear()
    port = web.server_address[1]
    urls = [f"http://{host}:{port}/img/h{h}_{k}.jpg" for h, host in enumerate(HOSTS) for k in range(PER_HOST)]
    cfg = write_inputs(tmp_path / name, urls, max_per_domain=LIMIT, thread_count=16, timeout=30)
    run = tmp_path / name / "run"
    summary = run_curation(load_config(CurateConfig, cfg, [f"executor.workers={workers}", f"executor.name={executor}"]), run)
    assert summary["rows_per_status"] == {"ok": 2 * PER_HOST}
    return dict(web.peak), run


def routes() -> dict[str, Route]:
    """16 distinct images per host name."""
    return {f"/img/h{h}_{k}.jpg": Route(encode(photo(300 + 100 * h + k))) for h in range(len(HOSTS))
            for k in range(PER_HOST)}


def download_bytes(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "download").glob("shard_*.parquet"))}


def test_max_per_domain_holds_across_two_workers(tmp_path, monkeypatch):
    with HostCountingServer(routes(), 0) as web:
        peak, run = curate(tmp_path, web, "shared", hold=0.2, workers=2)
        assert peak == {host: LIMIT for host in HOSTS}  # each host at the limit, never above it
        # the same download with one worker (no shared table): the same rows, byte for byte
        _, alone = curate(tmp_path, web, "alone", hold=0.2, workers=1)
        assert download_bytes(run) == download_bytes(alone) and len(download_bytes(run)) == 2
        # control: slots held per process only (as before shared slots): the two workers together exceed the limit
        monkeypatch.setattr(LocalExecutor, "shared_slots", Executor.shared_slots)
        control, _ = curate(tmp_path, web, "per_process", hold=120, workers=2)  # 120 s: a hang guard; the crowd ends it
    print(f"local, 2 workers x 16 threads, max_per_domain={LIMIT}: most open per host {peak} shared, {control} per process")
    assert max(control.values()) > LIMIT


def test_max_per_domain_holds_across_two_ray_workers(tmp_path, monkeypatch):
    """The same on a local Ray cluster of 2 CPUs: the tasks share the slots of a Ray actor."""
    ray = pytest.importorskip("ray")
    from mrbench.executors import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=128 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        with HostCountingServer(routes(), 0) as web:
            peak, run = curate(tmp_path, web, "shared", hold=0.2, workers=2, executor="ray")
            assert peak == {host: LIMIT for host in HOSTS}
            monkeypatch.setattr(RayExecutor, "shared_slots", Executor.shared_slots)  # control: no shared slots
            control, _ = curate(tmp_path, web, "per_process", hold=120, workers=2, executor="ray")
        print(f"ray, 2 workers x 16 threads, max_per_domain={LIMIT}: most open per host {peak} shared, {control} per process")
        assert max(control.values()) > LIMIT
    finally:
        ray.shutdown()


def test_a_dead_holders_lease_runs_out():
    table = SlotTable(1)
    first = table.acquire("host", lease_s=0.3)  # its holder dies: never released
    assert first is not None and table.acquire("host", lease_s=10, wait_s=0) is None
    second = table.acquire("host", lease_s=10, wait_s=60)  # comes free when the dead holder's lease ends
    assert second is not None and table.stats() == {"peak": 1, "expired": 1, "held": 1}
    table.release("host", first)  # a late release of an expired lease takes nothing from the new holder
    assert table.acquire("host", lease_s=10, wait_s=0) is None
    table.release("host", second)
    assert table.acquire("host", lease_s=10, wait_s=0) is not None and table.stats()["held"] == 1


def test_a_release_wakes_a_waiter_of_its_key_only():
    table = SlotTable(1)
    a, b = table.acquire("a", lease_s=60), table.acquire("b", lease_s=60)
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(table.acquire("a", lease_s=60, wait_s=60)))
    waiter.start()
    table.release("b", b)  # another key's release: the waiter of "a" still waits
    assert table.acquire("b", lease_s=60, wait_s=0) is not None and not got
    table.release("a", a)
    waiter.join(60)
    assert got and got[0] is not None


def test_slot_server_is_shared_by_processes(tmp_path):
    """The local executor's table: a client pickled to another process sees the slots this one holds."""
    import pickle
    import subprocess
    import sys

    server = SlotServer(1)
    try:
        token = server.client.acquire("example.com", lease_s=60)
        (tmp_path / "client.pkl").write_bytes(pickle.dumps(server.client))
        code = ("import pickle, sys; c = pickle.load(open(sys.argv[1], 'rb'));"
                "print(c._acquire('example.com', 60, 0), c._acquire('example.org', 60, 0) is not None)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "client.pkl")], capture_output=True,
                             text=True, timeout=120)
        assert out.stdout.split() == ["None", "True"], out.stderr[-2000:]
        server.client.release("example.com", token)
        assert server.client.stats()["held"] == 1  # the other process's example.org slot (its lease runs out)
    finally:
        server.close()
