"""The evaluation registries: generators (``MODELS``), metrics (``METRICS``) and benchmarks (``BENCHMARKS``).

Built-in entries are registered where they are defined: models in :mod:`mrbench.baselines` (as lazy
``module:Class`` strings, so ``--model lora`` never imports what ``easyref`` needs), metrics in
:mod:`mrbench.evaluation.metrics`, benchmarks in :mod:`mrbench.evaluation.benchmarks`. Third parties plug in through
the entry-point groups ``mrbench.models``, ``mrbench.metrics`` and ``mrbench.benchmarks``. Use the ``get_*`` helpers,
which import the built-ins first.
"""

from __future__ import annotations

import importlib
from typing import Any

from mrbench.registry import Registry

MODELS: Registry[Any] = Registry("model")
METRICS: Registry[Any] = Registry("metric")
BENCHMARKS: Registry[Any] = Registry("benchmark")

_POPULATE = {"model": "mrbench.baselines", "metric": "mrbench.evaluation.metrics", "benchmark": "mrbench.evaluation.benchmarks"}


def _populated(registry: Registry[Any]) -> Registry[Any]:
    importlib.import_module(_POPULATE[registry.kind])
    return registry


def models() -> Registry[Any]:
    """``MODELS`` with the built-in baselines registered."""
    return _populated(MODELS)


def metrics() -> Registry[Any]:
    """``METRICS`` with the built-in metrics registered."""
    return _populated(METRICS)


def benchmarks() -> Registry[Any]:
    """``BENCHMARKS`` with the built-in benchmarks registered."""
    return _populated(BENCHMARKS)
