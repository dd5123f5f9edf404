"""Executors are looked up in their registry everywhere: the config check, the CLI and ``get_executor``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrbench.config import ConfigError, load_config
from mrbench.curation.config import CurateConfig
from mrbench.executors import EXECUTORS, LocalExecutor, get_executor


class InlineExecutor(LocalExecutor):
    """A throwaway plug-in executor: the local one under another name."""


@pytest.fixture
def inline_executor():
    EXECUTORS.register("inline-test", InlineExecutor, help="test executor")
    yield "inline-test"
    EXECUTORS._entries.pop("inline-test")  # the registry is process-wide: leave it as found


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "tags.yaml").write_text("- {name: cafe, category: subject}\n")
    (tmp_path / "meta.csv").write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,cafe\n")
    path = tmp_path / "curate.yaml"
    path.write_text("sources: [{kind: metadata, paths: [meta.csv]}]\ncrawl: {tag_list: tags.yaml}\n")
    return path


def test_a_registered_executor_is_accepted_and_built(config_file: Path, inline_executor: str) -> None:
    cfg = load_config(CurateConfig, config_file, [f"executor.name={inline_executor}"])
    assert type(get_executor(cfg.executor)) is InlineExecutor
    with pytest.raises(ConfigError, match="executor.name must be one of .*inline-test"):
        load_config(CurateConfig, config_file, ["executor.name=spark"])


def test_cli_takes_the_executor_from_the_config_unless_the_flag_is_given(config_file: Path) -> None:
    """``--executor`` only overrides: without it the YAML's ``executor.name`` is used (it used to be forced to the
    flag's own default)."""
    from mrbench.cli import app

    config_file.write_text(config_file.read_text() + "executor: {name: spark}\n")
    result = CliRunner().invoke(app, ["curate", "-c", str(config_file), "-o", str(config_file.parent / "run")])
    assert result.exit_code == 2 and "executor.name must be one of" in result.stderr, result.output
    assert not (config_file.parent / "run").exists()
    help_text = re.sub(r"[\s\u2502]+", " ", CliRunner().invoke(app, ["curate", "--help"]).output)  # unwrap the box
    assert "(mrbench ls executors)" in help_text and "local or ray" not in help_text
