"""Shared fixtures of the backend tests: small images, one torch thread, offline caches (the shared data folders and
the real-weights switch live in ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def small_images() -> list[Image.Image]:
    """Five seeded random images of different sizes and modes (RGB, L, RGBA)."""
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 60 - 3 * i, 3), dtype=np.uint8)) for i in range(3)]
    imgs.append(Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8), mode="L"))
    imgs.append(Image.fromarray(rng.integers(0, 256, (45, 70, 4), dtype=np.uint8), mode="RGBA"))
    return imgs


@pytest.fixture
def one_thread() -> object:
    """Run torch on one intra-op thread for the test, then restore the previous count.

    On a shared 2-core machine two OpenMP threads competing with other processes run CNNs several times slower
    than one (measured: MobileNetV2 4 img/s with 2 threads vs 25 img/s with 1 under load); results are the same.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty caches (HF, torch hub, insightface home, mirror unset) and no network: any connection attempt fails."""
    import socket

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MRBENCH_WEIGHTS_DIR", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path
