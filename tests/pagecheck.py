"""Load a page in headless Chromium (Debian's ``chromium``): the DOM after scripts ran, and the page's JS errors."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
# In CI (CI=true, which .ci/run sets) a missing browser is a failure, never a skip: .ci/run installs it first.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MISSING = "headless Chromium not installed (Debian: apt-get install chromium); pages not rendered"


def needs_chromium(test: Any) -> Any:
    """Mark a page check: skipped without Chromium on a developer machine, failed without it in CI."""
    if CHROMIUM is not None:
        return test
    if IN_CI:
        @functools.wraps(test)
        def fail(*args: Any, **kwargs: Any) -> None:
            pytest.fail(f"{MISSING}; CI must run the page checks (.ci/run installs Debian's chromium)")

        return fail
    return pytest.mark.skip(reason=MISSING)(test)


def load_page(path: Path) -> tuple[str, list[str]]:
    """(DOM after the page's scripts ran, console errors) of ``path`` in headless Chromium; nothing is fetched."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    return proc.stdout, errors


def assert_self_contained(html: str) -> None:
    """Every image and script is inline: the page opens anywhere, offline."""
    assert "src='http" not in html and 'src="http' not in html and "<link" not in html
    assert "src='file:" not in html and 'src="file:' not in html
