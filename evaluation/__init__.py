"""Evaluation: benchmarks, metrics, runner, results, leaderboards.

``run_eval`` (:mod:`mrbench.evaluation.runner`) and ``build_leaderboard`` (:mod:`mrbench.evaluation.leaderboard`)
are the entry points other code calls (``mrbench demo``, scripts); they are imported on first use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"run_eval": "mrbench.evaluation.runner", "build_leaderboard": "mrbench.evaluation.leaderboard"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mrbench.evaluation' has no attribute {name!r}")
