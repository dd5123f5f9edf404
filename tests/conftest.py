"""Shared fixtures: a local web of real and broken images on 127.0.0.1, the shared data folders, and the
real-weights switch (tests marked ``weights`` run only with MRBENCH_WEIGHTS=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mrbench.backends.weights import offline_environment
from webserver import Route, SampleWebServer, broken_routes, encode
from smallweb import _photo

offline_environment()  # as the command line does: nothing in the tests may reach for a model hub

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_WEIGHTS = os.environ.get("MRBENCH_WEIGHTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``weights`` need real pretrained weights that are not available offline: run with MRBENCH_WEIGHTS=1."""
    if REAL_WEIGHTS:
        return
    skip = pytest.mark.skip(reason="needs real pretrained weights; set MRBENCH_WEIGHTS=1 where they are cached")
    for item in items:
        if item.get_closest_marker("weights") is not None:
            item.add_marker(skip)


def shared_data(sub: str) -> Path:
    """Path to ../shared/data/<sub>; skips the test when the shared data is not beside the checkout."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}")
    return path


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """``../shared/data/faces``: face_recognition's test photos (one person several times, another once)."""
    return shared_data("faces")


@pytest.fixture(scope="session")
def dreambench_dir() -> Path:
    """``../shared/data/dreambench``: DreamBench subject folders of JPEGs."""
    return shared_data("dreambench")


@pytest.fixture(scope="session")
def small_web() -> dict[str, Route]:
    """Three tagged subjects (4 images each), an exact duplicate, and the whole failure zoo."""
    routes: dict[str, Route] = {}
    for s in range(3):
        for k in range(4):
            routes[f"/img/s{s}_{k}.jpg"] = Route(encode(_photo(100 * s + k), "JPEG", quality=90))
    routes["/img/dup_of_s0_0.jpg"] = Route(routes["/img/s0_0.jpg"].body)
    routes.update(broken_routes(routes["/img/s0_0.jpg"].body))
    return routes


@pytest.fixture()
def web_server(small_web: dict[str, Route]):
    with SampleWebServer(small_web) as server:
        yield server
