"""Safety step: score every embedded image with a safety (NSFW) classifier, for sources that carry no safety columns
(folders, crawls other than LAION/COYO/DataComp; those filter on their own columns at ingest, ``sources[].where``).

``safety/shard_{i:05d}.parquet`` holds, per image the embed step embedded in download shard ``i``, its score (0
safe .. 1 unsafe) from ``safety.classifier`` (a :data:`mrbench.backends.SAFETY_CLASSIFIERS` entry, loaded lazily in
the worker); the ``filters`` step then drops the images scoring at or above ``safety.threshold`` as ``unsafe``
(:class:`SafetyFilter`), with the score in the message. Scores from a random-weights classifier (``laion-nsfw-tiny``)
are labelled so in ``models.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrbench.curation.config import CurateConfig
from mrbench.records import ImageRecord
from mrbench.stage import Filter, ShardedStep, Step
from mrbench.stats import Stats

SCORE_SCHEMA = pa.schema([("id", pa.string()), ("nsfw_score", pa.float32())])


def build_classifier(config: CurateConfig) -> Any:
    """The run's safety classifier (weights loaded now: missing ones fail here)."""
    from mrbench.backends import get_safety_classifier

    return get_safety_classifier(config.safety.classifier, **config.safety.options)


def safety_enabled(config: CurateConfig) -> bool:
    return bool(config.safety.classifier)


class SafetyTask(ShardedStep):
    """Per download shard: the classifier's score of every image with an embedding."""

    def __init__(self, config: CurateConfig, run_dir: str | Path, step: Step) -> None:
        super().__init__(config, run_dir, step)
        self._classifier: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_classifier": None}  # never ship a loaded model between processes

    def process(self, shard: int) -> tuple[pa.Table, Stats]:
        features = pq.read_table(self.layout.embed.output(shard), columns=["id", "embedding", "status"])
        ok = features.filter(pc.equal(features.column("status"), "ok"))
        ok = ok.filter(pc.is_valid(ok.column("embedding")))
        stats = Stats()
        if ok.num_rows == 0:
            return SCORE_SCHEMA.empty_table(), stats
        if self._classifier is None:
            self._classifier = build_classifier(self.config)
        emb = ok.column("embedding").combine_chunks()
        vectors = emb.values.to_numpy(zero_copy_only=False).reshape(len(emb), -1).astype(np.float32)
        scores = self._classifier.score(vectors)
        stats.inc("safety/scored", len(scores))
        unsafe = int((scores >= self.config.safety.threshold).sum())
        if unsafe:
            stats.inc("safety/at_or_above_threshold", unsafe)
        return pa.table({"id": ok.column("id"), "nsfw_score": pa.array(scores, pa.float32())}, schema=SCORE_SCHEMA), stats


class SafetyFilter(Filter):
    """Drops images whose safety score is at or above the threshold (``unsafe``); images without a score (no
    embedding) are kept and counted as ``safety_score/unscored``.

    Args:
        scores: Image id -> score.
        threshold: ``safety.threshold``.
        classifier: Its name, for the message.
    """

    name = "safety_score"
    reasons = ("unsafe",)
    label = "safety"

    def __init__(self, scores: Mapping[str, float], threshold: float, classifier: str) -> None:
        super().__init__()
        self.scores = scores
        self.threshold = threshold
        self.classifier = classifier

    @classmethod
    def for_shard(cls, config: CurateConfig, shard: Any) -> "SafetyFilter | None":
        """The filter of one shard from the safety step's score file (None when the step is off for the run)."""
        t = shard.table("safety") if config.safety.classifier else None
        if t is None:
            return None
        return cls(dict(zip(t.column("id").to_pylist(), t.column("nsfw_score").to_pylist())),
                   config.safety.threshold, config.safety.classifier)

    def check(self, record: ImageRecord) -> str | None:
        score = self.scores.get(record.id)
        if score is None:
            self.stats.inc(f"{self.name}/unscored")
            return None
        if score >= self.threshold:
            record.error_message = f"{self.classifier} score {score:.3f} >= {self.threshold}"
            return "unsafe"
        return None


SAFETY_STEP = Step("safety", SafetyTask, after="embed", reads=("embed",), enabled=safety_enabled, frees_models=True,
                   settings=("safety.classifier", "safety.options", "embed.encoder", "embed.encoder_options"))
