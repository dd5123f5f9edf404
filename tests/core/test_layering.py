"""Layering: the core package ``mrbench/`` imports nothing from the outer layers at module level.

The outer layers (``mrbench.curation``, ``mrbench.evaluation``, ``mrbench.baselines`` and the CLI) build on the core;
the core reaches them only through lazy imports inside functions (the Python API facade, the demo), so ``import
mrbench.<core module>`` never drags an outer layer in. Parsed with :mod:`ast`: nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mrbench

CORE = Path(mrbench.__file__).resolve().parent
OUTER = ("mrbench.curation", "mrbench.evaluation", "mrbench.baselines", "mrbench.cli")


def core_modules() -> list[Path]:
    """The files of the core: directly in ``mrbench/`` and in ``mrbench/backends/``. The mapped outer packages are
    links to other folders and ``mrbench/cli.py`` links to the root ``cli.py`` (the CLI layer): not core."""
    files = [p for p in sorted(CORE.glob("*.py")) + sorted((CORE / "backends").glob("*.py")) if not p.is_symlink()]
    return [p for p in files if p.name != "cli.py" or p.parent != CORE]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements run when the module is imported: the top level and the blocks of top-level if / try / with (but
    not ``if TYPE_CHECKING:``, which never runs); function and class bodies are left out (a class body does run,
    so it is searched too)."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                out += _module_level(node.body)
            out += _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                out += _module_level(block)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            out += _module_level(node.body)
        elif isinstance(node, ast.ClassDef):
            out += _module_level(node.body)
    return out


def _imported(node: ast.stmt, module: str) -> list[str]:
    """Absolute names imported by ``node`` (relative imports resolved against ``module``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parent = module.split(".")[: -node.level]
            base = ".".join(parent + ([base] if base else []))
        return [base] + [f"{base}.{a.name}" for a in node.names]
    return []


def outer_imports(path: Path, module: str | None = None) -> list[str]:
    """``file:line: name`` for every module-level import of an outer layer in ``path`` (the module ``module``,
    by default named from its place under the package root)."""
    rel = path.relative_to(CORE.parent) if module is None else path
    module = module or ".".join(rel.with_suffix("").parts)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in _module_level(tree.body):
        for name in _imported(node, module):
            if any(name == o or name.startswith(o + ".") for o in OUTER):
                found.append(f"{rel}:{node.lineno}: {name}")
                break
    return found


def test_core_imports_no_outer_layer_at_module_level() -> None:
    modules = core_modules()
    assert len(modules) > 15 and CORE / "config.py" in modules and CORE / "backends" / "base.py" in modules
    problems = [p for path in modules for p in outer_imports(path)]
    assert not problems, "core modules import outer layers at module level:\n" + "\n".join(problems)


@pytest.mark.parametrize("source,line", [
    ("from mrbench.curation.pipeline import run_curation\n", 1),
    ("import os\nimport mrbench.evaluation.runner as r\n", 2),
    ("from mrbench import cli\n", 1),
    ("from . import baselines\n", 1),
    ("try:\n    from mrbench.cli import app\nexcept ImportError:\n    app = None\n", 2),
    ("import sys\nif sys.platform:\n    pass\nelse:\n    import mrbench.baselines\n", 5),
    ("def f():\n    from mrbench.curation.pipeline import run_curation\n", None),  # lazy: allowed
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mrbench.evaluation.runner import RunResult\n", None),
    ("from mrbench.config import ConfigError\nimport mrbench.clip_utils\n", None),  # mrbench.cli is a prefix only
])
def test_checker_reports_file_and_line(tmp_path: Path, source: str, line: int | None) -> None:
    """The check itself can fail: each planted module-level import is reported with its file and line; lazy ones
    and ``if TYPE_CHECKING:`` ones are not."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    problems = outer_imports(path, "mrbench.probe")
    assert [p.split(": ")[0] for p in problems] == ([] if line is None else [f"{path}:{line}"])


def test_no_core_module_imports_the_cli_even_lazily() -> None:
    """The CLI is the outermost layer: the core (the demo included) uses :mod:`mrbench.console` for its display,
    never the CLI's helpers, not even inside a function."""
    problems = []
    for path in core_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(CORE.parent).with_suffix("").parts)
        for node in ast.walk(tree):
            if any(n == "mrbench.cli" or n.startswith("mrbench.cli.") for n in _imported(node, module)):
                problems.append(f"{path.relative_to(CORE.parent)}:{node.lineno}")
    assert not problems, "core modules import the CLI: " + ", ".join(problems)
