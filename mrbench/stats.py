"""Per-shard statistics: counts per status/reason and a bounded counter of error messages."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrbench.atomic import atomic_write_text


class CappedCounter:
    """A counter of at most ``max_keys`` distinct keys that keeps the most frequent ones (as img2dataset's logger
    does): when a new key finds it full, the less frequent half is summed under ``<other>``.

    Error messages from the web are unbounded in variety; this keeps stats files small and the common messages in.
    """

    OTHER = "<other>"

    def __init__(self, max_keys: int = 50, counts: dict[str, int] | None = None) -> None:
        self.max_keys = max_keys
        self.counts: Counter[str] = Counter()
        for k, v in (counts or {}).items():
            self.add(k, v)

    def add(self, key: str, n: int = 1) -> None:
        if key != self.OTHER and key not in self.counts and len(self.counts) - (self.OTHER in self.counts) >= self.max_keys:
            self._keep_most_frequent()
        self.counts[key] += n

    def _keep_most_frequent(self) -> None:
        named = [(k, v) for k, v in self.counts.most_common() if k != self.OTHER]
        keep = named[: max(1, self.max_keys // 2)]
        other = self.counts.get(self.OTHER, 0) + sum(v for _, v in named[len(keep):])
        self.counts = Counter(dict(keep))
        if other:
            self.counts[self.OTHER] = other

    def update(self, other: "CappedCounter") -> None:
        for k, v in other.counts.most_common():  # the frequent ones first: they survive a cut
            self.add(k, v)


@dataclass
class Stats:
    """Counters for one step (or one shard of it)."""

    counts: Counter = field(default_factory=Counter)
    errors: CappedCounter = field(default_factory=CappedCounter)

    def inc(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def error(self, message: str) -> None:
        self.errors.add(message[:200])

    def merge(self, other: "Stats") -> "Stats":
        self.counts.update(other.counts)
        self.errors.update(other.errors)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "errors": dict(self.errors.counts.most_common())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Stats":
        return cls(Counter(data.get("counts", {})), CappedCounter(counts=data.get("errors", {})))

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "Stats":
        return cls.from_dict(json.loads(Path(path).read_text()))
