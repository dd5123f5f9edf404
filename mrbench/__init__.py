"""MRBench: curate grouped multi-reference image datasets and evaluate multi-reference generators.

``mrbench`` is the core (records, shards, config machinery, registries, executors, backends); the layers above it
are ``mrbench.curation``, ``mrbench.evaluation``, ``mrbench.baselines`` and the application layer ``mrbench.app``,
which holds the Python API::

    from mrbench.app import curate, evaluate, leaderboard, report

``import mrbench`` imports nothing else.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
