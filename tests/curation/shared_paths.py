"""Where the shared real-photo test data lives (``../shared/data`` beside the checkout); tests skip without it.

Kept here rather than imported from ``tests/conftest.py``: with several ``conftest.py`` files in the tree, the module
name ``conftest`` is ambiguous when the whole suite is collected.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("MRBENCH_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def shared_data(sub: str) -> Path:
    """``SHARED_DATA/<sub>``; skips the calling test when it is absent."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}")
    return path
