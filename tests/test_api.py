"""The documented Python API: ``from mrbench.app import curate, evaluate, leaderboard, report``; runs the README
example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_import_mrbench_app_is_light_and_exports_the_api() -> None:
    code = ("import sys, mrbench.app; before = sorted(m for m in sys.modules if m.startswith('mrbench')); "
            "from mrbench.app import curate, evaluate, leaderboard, report; "
            "print(before, curate.__module__, callable(evaluate) and callable(leaderboard) and callable(report))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['mrbench', 'mrbench.app'] mrbench.app.api True"
    with pytest.raises(AttributeError):
        import mrbench.app

        mrbench.app.no_such_function  # noqa: B018


@pytest.mark.slow
def test_readme_example_runs(tmp_path: Path, dreambench_dir: Path) -> None:
    """The README's example, as written, on three DreamBench subjects copied into ``photos/<tag>/``."""
    dreambench = dreambench_dir
    for subject in ("cat", "clock", "backpack"):
        (tmp_path / "photos" / subject).mkdir(parents=True)
        for f in sorted((dreambench / subject).glob("*.jpg"))[:4]:
            shutil.copy(f, tmp_path / "photos" / subject / f.name)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict = {}
        exec(compile(readme_api_example(), "README.md", "exec"), scope)  # noqa: S102 - the documented example
    finally:
        os.chdir(cwd)
    summary, run, paths = scope["summary"], scope["run"], scope["paths"]
    assert summary["release_rows"] == 12 and Path(summary["report"]).is_file()
    assert sorted(summary["groups_per_split"].values()) == [1, 1, 1]
    assert run.summary["model"] == "reference" and run.rows and all(r["status"] == "ok" for r in run.rows)
    assert all((tmp_path / p).is_file() for p in paths.values())  # relative to the folder the example ran in
    assert (tmp_path / "runs" / "v1-report.html").read_text().count("data:image/jpeg;base64,") >= 12


def test_dict_config_overrides_are_checked_like_the_cli(tmp_path: Path) -> None:
    """A dict config takes ``--set``-style overrides through the same code as YAML files: an override through a
    key that is not a mapping is a ConfigError naming it, and the run folder is never created."""
    from mrbench.app import curate
    from mrbench.config import ConfigError

    with pytest.raises(ConfigError, match="crawl is not a mapping"):
        curate({"seed": 1, "crawl": 5}, tmp_path / "run", overrides=["crawl.timeout=3"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        curate({"seed": 1}, tmp_path / "run", overrides=["seed"])
    assert not (tmp_path / "run").exists()
