"""The real-weights switch for the generator tests: ``weights`` tests run only with MRBENCH_WEIGHTS=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_WEIGHTS = os.environ.get("MRBENCH_WEIGHTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``weights`` under this folder unless MRBENCH_WEIGHTS=1 (pretrained weights are not offline)."""
    if REAL_WEIGHTS:
        return
    here = Path(__file__).resolve().parent
    skip = pytest.mark.skip(reason="needs pretrained SDXL / Qwen2-VL / IP-Adapter / EasyRef weights; set MRBENCH_WEIGHTS=1")
    for item in items:
        if "weights" in item.keywords and here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
