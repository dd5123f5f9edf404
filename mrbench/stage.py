"""Stage contracts: a stage is a lazy generator over records; a filter only answers keep or drop-with-reason.

Heavy resources (models, servers) are created lazily inside :meth:`Stage.run`, never in ``__init__``, so stages
stay picklable for any executor. Failed records keep flowing (with their status) so every input ends as a row.
"""

from __future__ import annotations

import abc
from typing import Iterable, Iterator

from mrbench.records import ImageRecord
from mrbench.registry import Registry
from mrbench.stats import Stats


class Stage(abc.ABC):
    """A streaming step over records."""

    name: str = "stage"

    def __init__(self) -> None:
        self.stats = Stats()

    @abc.abstractmethod
    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        """Yield every input record (ok or failed), in order, possibly changed."""

    def __call__(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        return self.run(records)


class Filter(Stage):
    """A stage that keeps or drops ok records; dropped records are yielded with their reason as status."""

    @abc.abstractmethod
    def check(self, record: ImageRecord) -> str | None:
        """Return None to keep ``record``, or a named drop reason."""

    def run(self, records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
        for r in records:
            if r.ok:
                reason = self.check(r)
                if reason is None:
                    self.stats.inc(f"{self.name}/kept")
                else:
                    r.fail(reason, r.error_message)
                    self.stats.inc(f"{self.name}/dropped/{reason}")
            yield r


STAGES: Registry[type] = Registry("stage")
