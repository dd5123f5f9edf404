"""The README's quickstart, run as written (its `mrbench` lines, in a fresh folder with generated photos in the
layout it asks for): every command succeeds and leaves what it says; then the wrong-folder mistakes a new user
makes with those folders are answered with the folder they meant. CPU time: bench/quickstart.py."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrbench.cli import app
from smallweb import _photo

README = Path(__file__).resolve().parents[1] / "README.md"
runner = CliRunner()


def quickstart_commands() -> list[list[str]]:
    """The `mrbench` command lines of the README's quickstart block, as argument lists."""
    text = README.read_text()
    section = text[text.index("## Quickstart"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("mrbench "):
            commands.append(shlex.split(line)[1:])
    return commands


def make_photos(root: Path) -> None:
    """photos/cat, photos/dog: what the quickstart's mkdir and cp lines make of a user's pictures."""
    for s, subject in enumerate(("cat", "dog")):
        (root / "photos" / subject).mkdir(parents=True)
        for k in range(3):
            _photo(100 * s + k, (96, 96)).save(root / "photos" / subject / f"{subject}{k}.jpg")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("quickstart")
    make_photos(root)
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for args in quickstart_commands():
            # as the shell would: a pattern expands to the paths it matches (sorted)
            expanded = [p for a in args for p in (sorted(glob.glob(a)) if "*" in a else [a])]
            r = runner.invoke(app, expanded)
            results[" ".join(args)] = r
            assert r.exit_code == 0, (args, r.output)
    return root, results


def test_quickstart_runs_as_written(quickstart: tuple[Path, dict[str, object]]) -> None:
    root, results = quickstart
    commands = list(results)
    assert commands[0] == "init my.yaml" and commands[-1].startswith("leaderboard runs/eval/*/")
    assert (root / "runs/v1/report.html").is_file() and (root / "runs/v1/release/manifest.json").is_file()
    runs = sorted(p.name.split("-", 1)[0] for p in (root / "runs/eval").iterdir() if not p.name.startswith("."))
    assert runs == ["lora", "reference"]
    assert (root / "runs/board/leaderboard.html").is_file()
    board = (root / "runs/board/leaderboard.md").read_text()
    assert "lora" in board and "reference" in board
    (table,) = [t for t in board.split("\n## ") if "| lora" in t]  # one table: same benchmark, limit, seeds
    assert "| reference" in table


def test_wrong_folders_name_the_right_one(quickstart: tuple[Path, dict[str, object]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = quickstart
    monkeypatch.chdir(root)
    r = runner.invoke(app, ["release", "verify", "runs/v1"])
    assert r.exit_code == 2 and "runs/v1 is a curation run folder; its release is runs/v1/release" in r.stderr
    r = runner.invoke(app, ["eval", "--model", "reference", "--benchmark", "mrbench:runs/v1", "--out", "runs/eval"])
    assert r.exit_code == 2 and "runs/v1 is a curation run folder; its release is runs/v1/release" in r.stderr
    r = runner.invoke(app, ["leaderboard", "runs/eval", "--out", "runs/board2"])
    assert r.exit_code == 2 and "runs/eval is an eval --out folder holding 2 run folder(s)" in r.stderr
    assert "runs/eval/*/" in r.stderr
    (run,) = (root / "runs/eval").glob("reference-*")
    r = runner.invoke(app, ["eval", "--model", "reference", "--benchmark", f"mrbench:{run}", "--out", "runs/eval"])
    assert r.exit_code == 2 and "is an eval run folder" in r.stderr
