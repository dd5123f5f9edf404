"""Real-image rows that give every leaderboard its scale.

- ``reference`` (ceiling): the "generation" is another real image of the same group -- one of the sample's
  references, never its target. Metrics against the references leave that image out.
- ``chance``: the "generation" is a real image of a different group, drawn from the benchmark's whole pool.

The choice depends only on the request's seed and sample id (a seeded hash), so reruns pick the same images.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import ClassVar, Sequence

from mrbench.evaluation.generator import GenerationRequest, GenerationResult, Generator, ImageRef, Sample


@dataclass
class RealImageConfig:
    """Real-image rows have no options; the dataclass exists so unknown options are rejected."""


def seeded_index(seed: int, sample_id: str, n: int, salt: str) -> int:
    """A deterministic index in ``range(n)`` from (seed, sample id, salt)."""
    digest = hashlib.sha256(f"{salt}:{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


class _RealImageRow(Generator):
    """A row whose "generation" is a real image drawn, by a seeded hash, from :meth:`candidates`."""

    config_cls = RealImageConfig
    default_batch_size = 16
    no_candidate: ClassVar[str] = ""  # failure message when there is nothing to draw from; ``{group}`` is filled in

    @property
    def random_weights(self) -> bool:
        return False  # real images: no weights involved, whatever the profile

    @abc.abstractmethod
    def candidates(self, sample: Sample) -> list[ImageRef]:
        """The real images a request for ``sample`` may return."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for req in requests:
            pool = self.candidates(req.sample)
            if not pool:
                out.append(GenerationResult.failed("no_candidate", self.no_candidate.format(group=req.sample.group)))
                continue
            ref = pool[seeded_index(req.seed, req.sample.id, len(pool), self.name)]
            out.append(GenerationResult(ref.load(), source_id=ref.id, info={"source_group": ref.group}))
        return out


class ReferenceRow(_RealImageRow):
    """Ceiling: returns another real image of the same group (one of the sample's references)."""

    name = "reference"
    no_candidate = "group {group} has no other real image"

    def candidates(self, sample: Sample) -> list[ImageRef]:
        return sample.references

    def weights(self) -> dict[str, str]:
        return {"kind": "real images of the same group"}


class ChanceRow(_RealImageRow):
    """Chance: returns a real image of a different group, drawn from every image of the benchmark's split."""

    name = "chance"
    no_candidate = "the benchmark has no other group to draw from"

    def __init__(self, profile: str = "default", **options: object) -> None:
        super().__init__(profile, **options)
        self._pool: list[ImageRef] = []

    def prepare(self, samples: Sequence[Sample]) -> None:
        seen: dict[str, ImageRef] = {}
        for s in samples:
            for ref in s.real_images():
                seen.setdefault(ref.id, ref)
        self._pool = [seen[k] for k in sorted(seen)]

    def candidates(self, sample: Sample) -> list[ImageRef]:
        return [r for r in self._pool if r.group != sample.group]

    def weights(self) -> dict[str, str]:
        return {"kind": "real images of other groups"}
