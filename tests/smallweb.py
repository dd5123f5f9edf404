"""Helpers for the small local web (importable from any test folder; conftest modules are not importable by name)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
import hashlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from webserver import ProbeHandler, Route, SampleWebServer, encode


@dataclass
class GatedRoute(Route):
    """A route that answers only once ``gate`` is set: a download that stays unfinished until the test says so.

    Kill tests use it to stop a run at a known point without racing the clock: a shard holding a gated URL cannot
    complete while the gate is closed, however slow or fast the machine is.
    """

    gate: threading.Event = field(default_factory=threading.Event)


class _GatedHandler(ProbeHandler):
    def hold(self, route: object) -> None:
        if isinstance(route, GatedRoute):
            route.gate.wait(600)  # a hang guard only: the test opens the gate (or the server closes)


class GatedWebServer(SampleWebServer):
    """:class:`SampleWebServer` that holds the answers of :class:`GatedRoute` paths until their gate is set."""

    handler = _GatedHandler

    def waiting(self, route: GatedRoute) -> bool:
        """Whether a client has asked for ``route`` and waits for its gate."""
        with self.lock:
            return any(self.hits.get(p) for p, r in self.routes.items() if r is route) and not route.gate.is_set()

    def __exit__(self, *exc: object) -> None:
        for route in self.routes.values():  # let waiting handler threads finish
            if isinstance(route, GatedRoute):
                route.gate.set()
        super().__exit__(*exc)


def _photo(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.BICUBIC)


SUBJECTS = ["Barack Obama", "Spider-Man", "Van Gogh style"]


def write_small_inputs(folder: Path, base_url: str, routes: dict[str, Route], num_shards: int = 3, **overrides) -> Path:
    """Metadata (two parquet files), tag list and config for the small web; returns the config path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    urls, caps = [], []
    for path in sorted(routes):
        if path.startswith("/img/s"):
            s = int(path[len("/img/s")])
            caps.append(f"photo {path[-5]} of {SUBJECTS[s]}")
        elif path.startswith("/img/dup"):
            caps.append("barack obama again")
        else:
            caps.append(f"spider man ({path})")
        urls.append(base_url + path)
    urls.append(base_url + "/img/untagged.jpg")
    caps.append("a photo of nothing in particular")
    half = len(urls) // 2
    pq.write_table(pa.table({"url": urls[:half], "caption": caps[:half]}), folder / "meta_0.parquet")
    pq.write_table(pa.table({"url": urls[half:], "caption": caps[half:]}), folder / "meta_1.parquet")
    tags = [
        {"name": "Barack Obama", "category": "celebrity", "aliases": ["Obama"]},
        {"name": "Spider-Man", "category": "character", "aliases": ["Spiderman"]},
        {"name": "Van Gogh style", "category": "style", "aliases": []},
    ]
    (folder / "tags.yaml").write_text(yaml.safe_dump(tags))
    cfg = {
        "seed": 7,
        "num_shards": num_shards,
        "sources": [{"kind": "metadata", "paths": ["meta_*.parquet"]}],
        "crawl": {"tag_list": "tags.yaml", "allow_private_network": True, "timeout": 1.5, "thread_count": 8,
                  "max_body_bytes": 4 * 1024 * 1024},
        "group": {"min_group_size": 2},
        "split": {"held_out_groups": 1, "held_in_groups": 1},
        "executor": {"name": "local", "workers": 1},
    }
    for k, v in overrides.items():
        section, _, key = k.partition("__")
        cfg.setdefault(section, {})[key] = v
    path = folder / "curate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def shard_paths(base_url: str, num_shards: int) -> list[str]:
    """One image path per download shard, in shard order. URL shards are cut by the first 16 hex digits of
    sha1(url) modulo ``num_shards`` (crawl.select_and_shard); the URLs hold the server's port, so the paths are
    picked here, once the port is known."""
    found: dict[int, str] = {}
    k = 0
    while len(found) < num_shards:
        path = f"/img/pace_{k}.jpg"
        found.setdefault(int(hashlib.sha1((base_url + path).encode()).hexdigest()[:16], 16) % num_shards, path)
        k += 1
    return [found[n] for n in range(num_shards)]


def kill_when_first_shard_done(cmd: list[str], first_done: Path, server: GatedWebServer, gated: GatedRoute,
                               env: dict[str, str] | None = None) -> None:
    """Start ``cmd`` (a curation) in its own process group and SIGKILL the whole group (the pool's workers too) once
    ``first_done`` (download shard 0's marker) exists and ``gated`` waits on its gate: a kill mid-run on any machine."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # a hang guard, not a speed check: the wait ends when shard 0 is done and the last shard waits on the gate
        deadline = time.time() + 240
        while not (first_done.exists() and server.waiting(gated)):
            assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def gated_last_shard(base_url: str, num_shards: int) -> tuple[dict[str, Route], GatedRoute]:
    """One good image per download shard; the last shard's is a :class:`GatedRoute`, so that shard stays unfinished
    until the test sets the gate of the returned route (a kill then lands mid-run on any machine)."""
    paths = shard_paths(base_url, num_shards)
    routes: dict[str, Route] = {p: Route(encode(_photo(900 + i), "JPEG")) for i, p in enumerate(paths)}
    routes[paths[-1]] = GatedRoute(routes[paths[-1]].body)
    return routes, routes[paths[-1]]
