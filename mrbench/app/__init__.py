"""The application layer: the Python API, the offline demo and the curation summary printed by the CLI and the demo.

It builds on the core (``mrbench/*.py``, ``mrbench/backends``) and on the curation and evaluation layers; nothing
below it imports it. The Python API (:mod:`mrbench.app.api`)::

    from mrbench.app import curate, evaluate, leaderboard, report

The functions are loaded on first use, so ``import mrbench.app`` imports no other layer.
"""

from typing import Any

__all__ = ["curate", "evaluate", "leaderboard", "report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mrbench.app import api

        return getattr(api, name)
    raise AttributeError(f"module 'mrbench.app' has no attribute {name!r}")
