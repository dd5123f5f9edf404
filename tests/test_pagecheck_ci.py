"""The page checks never skip in CI: without Chromium they fail under CI=true and skip only on a developer machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PAGE_TEST = """
from pagecheck import needs_chromium


@needs_chromium
def test_page():
    pass
"""


@pytest.mark.parametrize("ci, outcome", [("true", "1 failed"), ("", "1 skipped")])
def test_missing_chromium_fails_in_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    (tmp_path / "test_page.py").write_text(PAGE_TEST)
    bin_dir = tmp_path / "bin"  # a PATH with python only: no chromium on it
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir), "CI": ci, "PYTHONPATH": str(TESTS)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_page.py")],
                       env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert outcome in r.stdout, r.stdout + r.stderr
    if ci:
        assert ".ci/run installs Debian's chromium" in r.stdout
