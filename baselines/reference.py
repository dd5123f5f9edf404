"""Real-image rows that give every leaderboard its scale.

- ``reference`` (ceiling): the "generation" is another real image of the same group -- one of the sample's
  references, never its target. Metrics against the references leave that image out.
- ``chance``: the "generation" is a real image of a different group, drawn from the benchmark's whole pool.

The choice depends only on the request's seed and sample id (a seeded hash), so reruns pick the same images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from mrbench.evaluation.generator import GenerationRequest, GenerationResult, Generator, ImageRef, Sample


@dataclass
class RealImageConfig:
    """Real-image rows have no options; the dataclass exists so unknown options are rejected."""


def seeded_index(seed: int, sample_id: str, n: int, salt: str) -> int:
    """A deterministic index in ``range(n)`` from (seed, sample id, salt)."""
    digest = hashlib.sha256(f"{salt}:{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


class ReferenceRow(Generator):
    """Ceiling: returns another real image of the same group (one of the sample's references)."""

    name = "reference"
    config_cls = RealImageConfig
    default_batch_size = 16

    @property
    def random_weights(self) -> bool:
        return False  # real images: no weights involved, whatever the profile

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for req in requests:
            refs = req.sample.references
            if not refs:
                out.append(GenerationResult.failed("no_candidate", f"group {req.sample.group} has no other real image"))
                continue
            ref = refs[seeded_index(req.seed, req.sample.id, len(refs), self.name)]
            out.append(GenerationResult(ref.load(), source_id=ref.id, info={"source_group": ref.group}))
        return out

    def weights(self) -> dict[str, str]:
        return {"kind": "real images of the same group"}


class ChanceRow(Generator):
    """Chance: returns a real image of a different group, drawn from every image of the benchmark's split."""

    name = "chance"
    config_cls = RealImageConfig
    default_batch_size = 16

    def __init__(self, profile: str = "default", **options: object) -> None:
        super().__init__(profile, **options)
        self._pool: list[ImageRef] = []

    @property
    def random_weights(self) -> bool:
        return False

    def prepare(self, samples: Sequence[Sample]) -> None:
        seen: dict[str, ImageRef] = {}
        for s in samples:
            for ref in [*s.references, *([s.target] if s.target else [])]:
                seen.setdefault(ref.id, ref)
        self._pool = [seen[k] for k in sorted(seen)]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for req in requests:
            others = [r for r in self._pool if r.group != req.sample.group]
            if not others:
                out.append(GenerationResult.failed("no_candidate", "the benchmark has no other group to draw from"))
                continue
            ref = others[seeded_index(req.seed, req.sample.id, len(others), self.name)]
            out.append(GenerationResult(ref.load(), source_id=ref.id, info={"source_group": ref.group}))
        return out

    def weights(self) -> dict[str, str]:
        return {"kind": "real images of other groups"}
