"""Per-shard statistics: counts per status/reason and a bounded counter of error messages."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class CappedCounter:
    """A counter that keeps at most ``max_keys`` distinct keys (the rest are summed under ``<other>``).

    Error messages from the web are unbounded in variety; this keeps stats files small.
    """

    def __init__(self, max_keys: int = 50, counts: dict[str, int] | None = None) -> None:
        self.max_keys = max_keys
        self.counts: Counter[str] = Counter()
        for k, v in (counts or {}).items():
            self.add(k, v)

    def add(self, key: str, n: int = 1) -> None:
        if key in self.counts or len(self.counts) < self.max_keys:
            self.counts[key] += n
        else:
            self.counts["<other>"] += n

    def update(self, other: "CappedCounter") -> None:
        for k, v in other.counts.items():
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
        from mrbench.shards import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "Stats":
        return cls.from_dict(json.loads(Path(path).read_text()))
