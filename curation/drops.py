"""Which step a drop reason comes from, for the run summary, the report and the dataset card."""

from __future__ import annotations

from mrbench.stage import drop_labels


def drop_step(reason: str) -> str:
    """The step whose rule a drop reason comes from (download for crawl and decode failures); the map is the
    registered steps' :attr:`~mrbench.stage.Step.drops` (:func:`mrbench.stage.drop_labels`)."""
    return drop_labels().get(reason, "download")


def drop_step_order() -> list[str]:
    """The labels :func:`drop_step` gives, in run order (``download`` first)."""
    labels = list(dict.fromkeys(drop_labels().values()))
    at = labels.index("select") + 1 if "select" in labels else 0  # selection drops come before any download
    return list(dict.fromkeys([*labels[:at], "download", *labels[at:]]))
