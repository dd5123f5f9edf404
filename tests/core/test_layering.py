"""Layering: the core imports no outer layer at any level, and the package has no import cycle, hidden or not.

The core is ``mrbench/*.py`` and ``mrbench/backends/`` (``mrbench/cli.py`` links to the root ``cli.py``, the CLI
layer). The outer layers are ``mrbench.curation``, ``mrbench.evaluation``, ``mrbench.baselines``, the application
layer ``mrbench.app`` and the CLI. Every ``import`` statement counts wherever it stands -- module level, inside a
function, under ``if TYPE_CHECKING:`` -- since a function-level import is still an arrow up, and a cycle hidden
behind one is still a cycle. Parsed with :mod:`ast`: nothing is imported to check it.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import mrbench

CORE = Path(mrbench.__file__).resolve().parent
OUTER = ("mrbench.curation", "mrbench.evaluation", "mrbench.baselines", "mrbench.cli", "mrbench.app")
PACKAGES = ("mrbench", "mrbench.backends", "mrbench.app", "mrbench.curation", "mrbench.evaluation",
            "mrbench.baselines")


def package_dir(name: str) -> Path | None:
    """Where sub-package ``name`` lives (the outer layers are mapped from the root folders); None if it is absent."""
    spec = importlib.util.find_spec(name)
    return Path(list(spec.submodule_search_locations)[0]).resolve() if spec and spec.submodule_search_locations else None


def package_modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> file (``mrbench.cli`` -> the root ``cli.py``)."""
    modules: dict[str, Path] = {}
    for pkg in PACKAGES:
        folder = package_dir(pkg)
        for path in sorted(folder.glob("*.py")) if folder else []:
            modules[pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"] = path.resolve()
    return modules


def core_modules() -> dict[str, Path]:
    """The core's modules: the files directly in ``mrbench/`` and in ``mrbench/backends/`` (``mrbench.cli`` resolves to
    the root ``cli.py``, ``mrbench.app`` to its own folder)."""
    return {name: path for name, path in package_modules().items() if path.parent in (CORE, CORE / "backends")}


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, name)`` for every name ``path`` (module ``module``) imports, at any level: ``import a.b`` gives
    ``a.b``; ``from a import b`` gives ``a`` and ``a.b``; relative imports are resolved; string arguments of
    ``importlib.import_module`` / ``__import__`` count too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.append((node.lineno, node.args[0].value))
    return found


def outer_imports(path: Path, module: str) -> list[str]:
    """``file:line: name`` for every import statement of ``path`` that reaches an outer layer (once per line)."""
    found: dict[int, str] = {}
    for line, name in imports(path, module):
        if any(name == o or name.startswith(o + ".") for o in OUTER):
            found.setdefault(line, f"{path}:{line}: {name}")
    return list(found.values())


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any level)."""
    return {name: {n for _, n in imports(path, name) if n in modules and n != name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path (``[a, b, ..., a]``) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(graph, c) for c in components]


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (breadth first, inside the component)."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {sorted(component)}")


def test_core_imports_no_outer_layer_at_any_level() -> None:
    core = core_modules()
    assert len(core) > 15 and "mrbench.config" in core and "mrbench.backends.base" in core
    assert "mrbench.cli" not in core and not any(n.startswith("mrbench.app") for n in core)
    problems = [p for name, path in core.items() for p in outer_imports(path, name)]
    assert not problems, "core modules import outer layers:\n" + "\n".join(problems)


def test_package_has_no_import_cycle() -> None:
    modules = package_modules()
    found = cycles(import_graph(modules))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)
    assert {"mrbench.cli", "mrbench.app.api", "mrbench.curation.pipeline", "mrbench.evaluation.runner",
            "mrbench.baselines.lora", "mrbench.backends.base"} <= set(modules)


@pytest.mark.parametrize("source,line", [
    ("from mrbench.curation.pipeline import run_curation\n", 1),
    ("import os\nimport mrbench.evaluation.runner as r\n", 2),
    ("from mrbench import cli\n", 1),
    ("from . import baselines\n", 1),
    ("from .app import api\n", 1),
    ("try:\n    from mrbench.cli import app\nexcept ImportError:\n    app = None\n", 2),
    ("def f():\n    from mrbench.curation.pipeline import run_curation\n", 2),  # lazy: still an arrow up
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mrbench.evaluation.runner import RunResult\n", 3),
    ("import importlib\ndef f():\n    return importlib.import_module('mrbench.baselines.lora')\n", 3),
    ("from mrbench.config import ConfigError\nimport mrbench.clip_utils\n", None),  # mrbench.cli is a prefix only
    ("from mrbench.application import x\nfrom .config import option\n", None),
])
def test_outer_import_checker_reports_file_and_line(tmp_path: Path, source: str, line: int | None) -> None:
    """The layering check itself can fail: each planted import of an outer layer is reported with its file and line,
    at module level, in a function or under ``if TYPE_CHECKING:``; core imports are not."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    problems = outer_imports(path, "mrbench.probe")
    assert [p.rsplit(": ", 1)[0] for p in problems] == ([] if line is None else [f"{path}:{line}"])


def test_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The cycle check itself can fail: ``a`` imports ``b`` at module level and ``b`` imports ``a`` inside a
    function (the hidden kind); ``c`` -> ``d`` -> ``e`` -> ``c`` under ``TYPE_CHECKING`` and a relative import."""
    files = {
        "a": "from pkg import b\n",
        "b": "def f():\n    from pkg.a import g\n",
        "c": "import pkg.d\n",
        "d": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.e import E\n",
        "e": "from . import c\n",
        "f": "import pkg.a\n",  # into a cycle, not part of one
    }
    (tmp_path / "pkg").mkdir()
    for name, text in files.items():
        (tmp_path / "pkg" / f"{name}.py").write_text(text)
    graph = import_graph({f"pkg.{n}": tmp_path / "pkg" / f"{n}.py" for n in files})
    assert sorted(cycles(graph)) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.c", "pkg.d", "pkg.e", "pkg.c"]]
    del graph["pkg.b"]  # without b's hidden import there is no cycle through a
    assert cycles({k: v - {"pkg.b"} for k, v in graph.items()}) == [["pkg.c", "pkg.d", "pkg.e", "pkg.c"]]
