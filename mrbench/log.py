"""Logging helpers: one logger namespace, and warn-once for repeated conditions."""

from __future__ import annotations

import logging

_warned: set[str] = set()


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("mrbench") else f"mrbench.{name}")


def warn_once(logger: logging.Logger, key: str, message: str) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def setup_logging(level: str = "INFO") -> None:
    try:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    except ImportError:  # rich is a dependency; this keeps logging usable in stripped environments
        handler = logging.StreamHandler()
        fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
