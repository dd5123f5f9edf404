"""Real-image rows that give every leaderboard its scale.

- ``reference`` (ceiling, leave-one-out): the "generation" is a real image of the same group that is neither the
  sample's target nor among the references it is scored against. A group image outside the sample (an MRBench
  group's other targets) is taken first, so the row is scored against the sample's full references; where every
  image of the group is the target or a reference (DreamBench, folder benchmarks) one reference is left out and the
  row is scored against the others. The row's ``reference_ids`` are exactly the references it was scored against
  and its ``source_id`` names its image. A group with no such image (no image besides the target and a single
  reference) gives a ``no_candidate`` row.
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
    """Ceiling by leave-one-out: another real image of the same group, never the target, never a reference it is
    scored against (see the module docstring)."""

    name = "reference"
    no_candidate = ("group {group} has no real image besides the target that leaves a reference to score against "
                    "(needs a second reference or another image of the group)")

    def __init__(self, profile: str = "default", **options: object) -> None:
        super().__init__(profile, **options)
        self._by_group: dict[str, list[ImageRef]] = {}

    def prepare(self, samples: Sequence[Sample]) -> None:
        by_group: dict[str, dict[str, ImageRef]] = {}
        for s in samples:
            for ref in s.real_images():
                by_group.setdefault(s.group, {}).setdefault(ref.id, ref)
        self._by_group = {g: [imgs[k] for k in sorted(imgs)] for g, imgs in by_group.items()}

    def candidates(self, sample: Sample) -> list[ImageRef]:
        in_sample = {r.id for r in sample.real_images()}
        outside = [r for r in self._by_group.get(sample.group, []) if r.id not in in_sample]
        if outside:  # the sample's references stay whole
            return outside
        # Leave one reference out; at least one must remain to score against.
        return list(sample.references) if len(sample.references) >= 2 else []

    def weights(self) -> dict[str, str]:
        return {"kind": "real images of the same group (leave-one-out)"}


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
