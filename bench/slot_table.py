"""Benchmark: what a shared slot (``crawl.max_per_domain`` across workers, :mod:`mrbench.slots`) costs a request.

Every request of a download with ``max_per_domain`` set and more than one worker takes a slot of its host from the
executor's slot table and gives it back. This measures acquire + release pairs per second, ``--procs`` processes x
``--threads`` threads, each pair on a host of its own (no waiting: the table's cost, not the limit's):

* **process**: the in-process lock alone (:class:`~curation.netguard.DomainLimiter` without shared slots, as with one
  worker);
* **manager**: the local executor's table in its manager process (:class:`~mrbench.slots.SlotServer`);
* **ray**: the Ray executor's slot actor on a local cluster of ``--procs`` CPUs (``--ray``).

Prints pairs/s of each, the microseconds one pair adds to a request, and the ratio shared / process. A download
request on the web takes tens to hundreds of milliseconds, so a pair costing well under a millisecond is no
bottleneck as long as the table's pairs/s exceed the cluster's requests/s.

Run: ``python bench/slot_table.py`` (``--ray`` to include the Ray actor).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
from typing import Any


def _pairs(limiter: Any, seconds: float, threads: int, tag: str) -> int:
    """Acquire + release pairs done by ``threads`` threads in ``seconds``."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def loop(k: int) -> None:
        n = 0
        while time.monotonic() < stop:
            host = f"{tag}-{k}-{n}.example"
            limiter.release(host, limiter.acquire(host, 60.0))
            n += 1
        counts[k] = n

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts)


def _process_pairs(slots: Any, seconds: float, threads: int, tag: str, out: Any) -> None:
    from mrbench.curation.netguard import DomainLimiter

    out.put(_pairs(DomainLimiter(2, slots), seconds, threads, tag))


def rate(slots: Any, procs: int, threads: int, seconds: float) -> float:
    """Pairs per second over ``procs`` spawned processes."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ps = [ctx.Process(target=_process_pairs, args=(slots, seconds, threads, f"p{i}", out)) for i in range(procs)]
    for p in ps:
        p.start()
    total = sum(out.get() for _ in ps)
    for p in ps:
        p.join()
    return total / seconds


def ray_rate(slots: Any, procs: int, threads: int, seconds: float) -> float:
    """Pairs per second over ``procs`` Ray tasks (the actor is reached from Ray workers, as download tasks do)."""
    import ray

    @ray.remote(num_cpus=1)
    def task(i: int) -> int:
        from mrbench.curation.netguard import DomainLimiter

        return _pairs(DomainLimiter(2, slots), seconds, threads, f"r{i}")

    return sum(ray.get([task.remote(i) for i in range(procs)])) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--ray", action="store_true", help="also measure the Ray slot actor")
    args = parser.parse_args()
    from mrbench.slots import RaySlots, SlotServer

    rates = {"process": rate(None, args.procs, args.threads, args.seconds)}
    server = SlotServer(2)
    try:
        rates["manager"] = rate(server.client, args.procs, args.threads, args.seconds)
    finally:
        server.close()
    if args.ray:
        import ray

        ray.init(num_cpus=args.procs, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            slots = RaySlots.start(2)
            rates["ray"] = ray_rate(slots, args.procs, args.threads, args.seconds)
        finally:
            ray.shutdown()
    print(f"{args.procs} processes x {args.threads} threads, {args.seconds:g} s each, load {os.getloadavg()[0]:.1f}")
    for name, r in rates.items():
        print(f"{name:8s} {r:12,.0f} pairs/s  {1e6 * args.procs * args.threads / r:10.1f} us per pair per thread"
              + ("" if name == "process" else f"  ratio to process {r / rates['process']:.3f}"))


if __name__ == "__main__":
    main()
