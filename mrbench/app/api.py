"""The Python API: the four things the command line does, as functions for notebooks and scripts.

    from mrbench.app import curate, evaluate, leaderboard, report

Each one is the library call behind a command (``mrbench curate``, ``eval``, ``leaderboard``, ``report``) with the
same defaults and the same run folders; errors are the library's (``ConfigError``, ``MissingWeightsError``,
``UnknownEntryError``, ``FileNotFoundError``). Imports happen inside the functions, so ``import mrbench.app`` stays
light (no torch, no curation or evaluation module).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from mrbench.curation.config import CurateConfig
    from mrbench.evaluation.config import EvalConfig
    from mrbench.evaluation.generator import Generator
    from mrbench.evaluation.runner import RunResult

__all__ = ["curate", "evaluate", "leaderboard", "report"]


def curate(config: "str | Path | dict[str, Any] | CurateConfig", out: str | Path, *,
           overrides: Sequence[str] = (), progress: Callable[[str, int], Callable[[int], None]] | None = None
           ) -> dict[str, Any]:
    """Run (or resume) a curation into the run folder ``out``; same as ``mrbench curate``.

    Args:
        config: A YAML file, a dict in the YAML's shape, or a :class:`~mrbench.curation.config.CurateConfig`.
        out: Run folder (created; an existing one is resumed).
        overrides: ``key.sub=value`` strings, as ``--set``.
        progress: ``progress(step, total) -> advance(n)`` factory for progress display (None: silent).

    Returns:
        The run summary: ``rows_per_status``, ``groups_per_split``, ``images_per_split``, ``release`` (the release
        folder), ``release_rows``, ``drops_per_reason``, ``leakage_audit``, ``report`` (the HTML report).
    """
    from mrbench.config import from_dict, load_config
    from mrbench.curation.config import CurateConfig
    from mrbench.curation.pipeline import run_curation

    if isinstance(config, CurateConfig):
        cfg = config
        if overrides:
            raise ValueError("overrides apply to a YAML file or dict config, not a built CurateConfig")
    elif isinstance(config, dict):
        import yaml

        from mrbench.config import apply_overrides

        data = yaml.safe_load(yaml.safe_dump(config))  # a deep copy: overrides never touch the caller's dict
        cfg = from_dict(CurateConfig, apply_overrides(data, overrides))
    else:
        cfg = load_config(CurateConfig, config, list(overrides))
    return run_curation(cfg, out, progress)


def evaluate(model: "str | Generator | None" = None, benchmark: str | None = None, out: str | Path | None = None, *,
             config: "str | Path | EvalConfig | None" = None, **options: Any) -> "RunResult":
    """Evaluate ``model`` on ``benchmark``; same as ``mrbench eval`` (options are its flags, snake_case).

    Args:
        model: Registered model name (``mrbench ls models``), or a built generator (an instance of a
            :class:`~mrbench.evaluation.generator.Generator` subclass: nothing to register).
        benchmark: ``mrbench:RELEASE_DIR``, ``dreambench:PATH`` or ``folder:PATH``.
        out: Parent folder of run folders (default ``runs``).
        config: An eval YAML file (as ``mrbench eval --config``) or a :class:`~mrbench.evaluation.config.EvalConfig`; the
            arguments override it.
        **options: :class:`~mrbench.evaluation.config.EvalConfig`'s fields: ``split``, ``model_args`` (dict), ``profile``,
            ``limit``, ``seed``, ``images_per_prompt``, ``metrics``, ``image_encoder``, ``batch_size``,
            ``cache_dir``, ``metric_device``, ``n_boot``; and ``progress`` / ``phase`` callbacks.

    Returns:
        A :class:`~mrbench.evaluation.runner.RunResult`: ``run_dir``, ``summary``, ``timing``, ``rows``.
    """
    from mrbench.config import load_config
    from mrbench.evaluation.config import EvalConfig
    from mrbench.evaluation.runner import run_eval

    if config is not None and not isinstance(config, EvalConfig):
        # The arguments given fill in what the YAML may leave out (model, benchmark), as the flags do.
        name = model if isinstance(model, str) or model is None else (model.name or type(model).__name__)
        given = {"model": name, "benchmark": benchmark, "out": str(out) if out is not None else None}
        config = load_config(EvalConfig, config, values={k: v for k, v in given.items() if v is not None})
    return run_eval(model, benchmark, out, config=config, **options)


def leaderboard(run_dirs: Sequence[str | Path], out: str | Path, *, grid_samples: int = 4) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.csv``, ``.html`` and ``leaderboard_paired.csv`` for eval run folders into ``out``;
    returns their paths."""
    from mrbench.evaluation.leaderboard import build_leaderboard

    return build_leaderboard(list(run_dirs), out, grid_samples=grid_samples)


def report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of a curation run (default ``RUN_DIR/report.html``); returns its path."""
    from mrbench.curation.report import write_report

    return write_report(run_dir, out)
