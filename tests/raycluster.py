"""A Ray cluster of separate processes on loopback, started the way users start one (``ray start``), for tests.

Each node is one ``ray start`` in a process group of its own (its GCS / raylet / agents stay in that group after
``ray start`` returns); the worker processes a raylet starts make sessions of their own, so they are found as the
raylet's children. Stopping or killing a node signals exactly those processes, by pid: never ``ray stop``, which
stops every Ray node of the user on the machine (other test runs included).

The cluster has its own temp dir (short: Ray's Unix sockets live under it), its own ports and its own token
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``): nothing is read from or written to ``~/.ray``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# Ray rewrites 127.0.0.1 and "localhost" to the machine's outward address (``resolve_ip_for_localhost``), so the
# nodes bind another loopback address: the cluster is reachable from this machine only.
HOST = "127.0.0.2"
# Nodes noticed dead within about a second (the default takes ~30 s before a lost node's tasks are rescheduled).
FAST_HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "300",
                      "RAY_health_check_timeout_ms": "300", "RAY_health_check_failure_threshold": "3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class RayNode:
    """One node: the process group its ``ray start`` made, and what it advertises."""

    name: str
    group: int
    cpus: int
    gpus: int

    def processes(self) -> list[psutil.Process]:
        """The node's daemons (its process group) and the worker processes its raylet started."""
        own = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == self.group]
        children = [c for p in own if "raylet" in _name(p) for c in _children(p)]
        return own + children

    def kill(self) -> int:
        """SIGKILL every process of the node (as a machine losing power); returns how many were signalled."""
        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        return len(procs)


@dataclass
class LoopbackRayCluster:
    """A head node and further nodes started with ``ray start`` under ``root``; use as a context manager."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mrr", dir="/tmp")))
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[RayNode] = field(default_factory=list)
    port: int = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of every process of the cluster, drivers included: token auth with this cluster's token."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN_PATH"}
        return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
                **FAST_HEALTH_CHECKS}

    def start_head(self, cpus: int = 1, gpus: int = 0) -> RayNode:
        self.port = free_port()
        return self._start("head", ["--head", "--port", str(self.port), "--include-dashboard", "false",
                                    "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
                                    "--disable-usage-stats"], cpus, gpus)

    def add_node(self, cpus: int = 1, gpus: int = 0) -> RayNode:
        return self._start(f"node{len(self.nodes)}", ["--address", self.address], cpus, gpus)

    def _start(self, name: str, args: list[str], cpus: int, gpus: int) -> RayNode:
        # ``python -m ray.scripts.scripts``: the nodes' worker processes run this interpreter (and this checkout).
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", *args, "--node-ip-address", HOST,
               "--num-cpus", str(cpus), "--num-gpus", str(gpus), "--object-store-memory", str(80 * 2**20),
               "--temp-dir", str(self.root / name), "--dashboard-agent-listen-port", str(free_port())]
        proc = subprocess.Popen(cmd, env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        out = proc.communicate(timeout=120)[0]
        node = RayNode(name, proc.pid, cpus, gpus)
        self.nodes.append(node)
        if proc.returncode != 0:
            tail = " | ".join(line for line in out.strip().splitlines()[-3:])
            raise RuntimeError(f"ray start ({name}) exited {proc.returncode}: {tail}")
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LoopbackRayCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()[:1])
    except psutil.Error:
        return ""


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children(recursive=True)
    except psutil.Error:
        return []
