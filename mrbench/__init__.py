"""MRBench: curate grouped multi-reference image datasets and evaluate multi-reference generators.

The Python API (:mod:`mrbench.api`)::

    from mrbench import curate, evaluate, leaderboard, report

The functions are loaded on first use, so ``import mrbench`` imports nothing else.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "curate", "evaluate", "leaderboard", "report"]
_API = ("curate", "evaluate", "leaderboard", "report")


def __getattr__(name: str) -> Any:
    if name in _API:
        from mrbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'mrbench' has no attribute {name!r}")
