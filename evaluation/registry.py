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


TINY_SUFFIX = "-tiny"


def register_model(name: str, target: str, *, help: str, tiny: bool = False) -> None:
    """Register generator ``target`` (``module:Class``) as ``name``; with ``tiny``, also its tiny random variant
    ``module:TinyClass`` as ``<name>-tiny`` (made by :func:`mrbench.baselines.tiny.tiny_model`)."""
    MODELS.register(name, target, help=help)
    if tiny:
        module, _, cls = target.partition(":")
        MODELS.register(name + TINY_SUFFIX, f"{module}:Tiny{cls}", help=f"{name} with tiny random weights, seeded "
                        "(what --profile tiny runs) [random weights]", tiny_of=name)


def resolve_model(name: str, profile: str) -> tuple[str, str, str]:
    """How a run names model ``name`` under ``profile`` and which entry it builds: ``(name, profile, entry)``.

    The one place the two spellings of a tiny model meet: ``--model easyref --profile tiny`` and ``--model
    easyref-tiny`` are both the run ``("easyref", "tiny")`` (one run folder, one cache) and build the entry
    ``easyref-tiny``. Under the tiny profile a model without a tiny entry (the reference and chance rows, plugins)
    builds itself. Unknown names are left for the registry to answer (with "did you mean").
    """
    registry = models()
    if name in registry:
        base = dict(registry.entry(name).meta).get("tiny_of")
        if base:
            return base, "tiny", name
        if profile == "tiny" and name + TINY_SUFFIX in registry:
            return name, profile, name + TINY_SUFFIX
    return name, profile, name
