"""Per-image filters (streaming, per shard): resolution/aspect, face policy, object presence.

Each filter only answers keep or drop-with-reason (:class:`mrbench.stage.Filter`); model outputs come from the
embed step's feature shards, so no filter loads a model. Drop reasons:

* ``low_resolution``: shorter side below ``filters.min_side``; ``extreme_aspect``: side ratio above ``max_aspect``.
* ``embed_decode_error`` (or any other failure the embed step recorded): no features to judge the image by.
* Person categories (``embed.face_categories``, by default celebrity and character) want one dominant face:
  ``no_face``; ``face_too_small`` (largest face box below ``face_min_area`` of the image area);
  ``face_low_score`` (its detector score below ``face_min_score``); ``multiple_faces`` (another face at least
  ``face_max_other`` times the largest one's area). Other categories have no face requirement.
* ``object_missing``: the tag names a COCO class (``tag -> class`` rule below) and the detector found no box of it
  with score >= ``object_min_score``.

These are registered in ``mrbench.stage.STAGES`` (``mrbench.curation``) like any plugin's filter: the ``filters``
step runs every registered :class:`~mrbench.stage.Filter` in registration order (a plugin's after these) over the
images the ones before it kept, each built per shard by :meth:`~mrbench.stage.Filter.for_shard` from what earlier
steps wrote for the shard (:class:`ShardInputs`: embeddings, faces, detections, safety scores).

``filters/drops_{i:05d}.parquet`` lists the dropped ids of shard ``i`` with reason and detail (the rejects); the
grouping step reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mrbench.curation.config import CurateConfig, FilterConfig
from mrbench.curation.inputs import filters_identity
from mrbench.layout import RunLayout, StepRef
from mrbench.records import ImageRecord
from mrbench.shards import read_records
from mrbench.stage import Filter, ShardedStep, Stage, Step, filter_stages
from mrbench.stats import Stats

DROP_SCHEMA = pa.schema([("id", pa.string()), ("status", pa.string()), ("error_message", pa.string())])
# A few everyday words for COCO classes; anything else must be spelled as COCO spells it (or set in
# filters.object_classes).
SYNONYMS = {
    "puppy": "dog", "kitten": "cat", "sofa": "couch", "television": "tv", "motorbike": "motorcycle",
    "aeroplane": "airplane", "plane": "airplane", "bike": "bicycle", "mug": "cup", "teddy": "teddy bear",
    "smartphone": "cell phone", "cellphone": "cell phone",
}


def object_class(names: Iterable[str], overrides: Mapping[str, str] | None = None) -> str | None:
    """The COCO class a tag names, if any.

    Rule: an override for the first name wins (an empty value means "no class"); otherwise, over the tag's name and
    aliases in order, the COCO class name (or a :data:`SYNONYMS` word, singular or with a plural ``s``) that ends
    last in the text is taken: English puts the head noun last ("coffee cup" -> cup, "wall clock" -> clock).

    Args:
        names: The tag's name, then its aliases.
        overrides: Tag name -> COCO class.
    """
    from mrbench.backends.coco import COCO_CLASSES

    names = list(names)
    if overrides and names and names[0] in overrides:
        return overrides[names[0]] or None
    vocab = {c: c for c in COCO_CLASSES} | SYNONYMS
    for name in names:
        text = " " + re.sub(r"[^a-z0-9]+", " ", name.lower()).strip() + " "
        best: tuple[int, int, str] | None = None
        for word, cls in vocab.items():
            for form in (word, word + "s"):
                pos = text.rfind(" " + form + " ")
                if pos >= 0:
                    cand = (pos + len(form), len(form), cls)
                    best = cand if best is None or cand[:2] > best[:2] else best
        if best is not None:
            return best[2]
    return None


class TagClasses:
    """Tag name -> COCO class (or None) for a run's tag list and overrides, memoised."""

    def __init__(self, config: CurateConfig, cache_dir: str | Path | None = None) -> None:
        from mrbench.curation.tags import load_tag_list

        self.overrides = dict(config.filters.object_classes)
        self.aliases: dict[str, list[str]] = {}
        if config.crawl.tag_list:
            for t in load_tag_list(config.crawl.tag_list, cache_dir).tags:
                self.aliases[t.name] = t.aliases
        self._memo: dict[str, str | None] = {}

    def get(self, tag: str, default: Any = None) -> str | None:
        if tag not in self._memo:
            self._memo[tag] = object_class([tag, *self.aliases.get(tag, [])], self.overrides)
        return self._memo[tag] or default


# The embed step's columns the built-in filters read (not the vectors: ShardInputs.embeddings reads those).
FEATURE_COLUMNS = ["id", "status", "error_message", "num_faces", "face_box", "face_score", "face_boxes", "det_labels",
                   "det_scores"]


class ShardInputs:
    """What earlier steps wrote for one download shard, as the filters of the ``filters`` step see it
    (:meth:`mrbench.stage.Filter.for_shard`); each file is read once per shard, whichever filters ask.

    Args:
        layout: The run folder.
        shard: The download shard.
        config: The run's ``CurateConfig``.
    """

    def __init__(self, layout: RunLayout, shard: int, config: CurateConfig) -> None:
        self.layout = layout
        self.shard = shard
        self.config = config
        self._tables: dict[tuple[str, tuple[str, ...] | None], pa.Table | None] = {}
        self._features: list[dict[str, Any]] | None = None

    def path(self, step: StepRef) -> Path:
        """The shard's output file of sharded step ``step`` (it may not exist: the step is off for the run)."""
        return self.layout.shards(step).output(self.shard)

    def table(self, step: StepRef, columns: list[str] | None = None) -> pa.Table | None:
        """The shard's output of sharded step ``step`` (``columns`` only, when given), or None when the step wrote
        none for it (off for the run)."""
        key = (RunLayout.step(step).name, tuple(columns) if columns is not None else None)
        if key not in self._tables:
            path = self.path(step)
            self._tables[key] = pq.read_table(path, columns=columns) if path.exists() else None
        return self._tables[key]

    def features(self) -> list[dict[str, Any]] | None:
        """The embed step's rows of the shard (:data:`FEATURE_COLUMNS`: status, faces, detections; no vectors), or
        None when the embed step did not run."""
        if self._features is None:
            table = self.table("embed", FEATURE_COLUMNS)
            self._features = table.to_pylist() if table is not None else None
        return self._features

    def embeddings(self) -> dict[str, np.ndarray]:
        """Image id -> its image embedding (float32, as the encoder wrote it) for every image of the shard the embed
        step embedded; empty when the embed step did not run or has no image encoder."""
        table = self.table("embed", ["id", "status", "embedding"])
        if table is None:
            return {}
        return {r["id"]: np.asarray(r["embedding"], dtype=np.float32) for r in table.to_pylist()
                if r["status"] == "ok" and r["embedding"] is not None}


class ResolutionFilter(Filter):
    """Drops images with a short side below ``min_side`` or a side ratio above ``max_aspect`` (0 turns a rule off)."""

    name = "resolution"
    reasons = ("low_resolution", "extreme_aspect")

    def __init__(self, min_side: int, max_aspect: float) -> None:
        super().__init__()
        self.min_side = min_side
        self.max_aspect = max_aspect

    @classmethod
    def from_config(cls, config: CurateConfig) -> "ResolutionFilter":
        return cls(config.filters.min_side, config.filters.max_aspect)

    def check(self, record: ImageRecord) -> str | None:
        w, h = record.width, record.height
        if self.min_side and min(w, h) < self.min_side:
            record.error_message = f"{w}x{h}: shorter side < {self.min_side}"
            return "low_resolution"
        if self.max_aspect and max(w, h) > self.max_aspect * max(1, min(w, h)):
            record.error_message = f"{w}x{h}: aspect ratio > {self.max_aspect}"
            return "extreme_aspect"
        return None


class EmbedFailureFilter(Filter):
    """Drops images the embed step could not read, with the reason its feature row carries
    (``embed_decode_error``): such an image has no features, so no later rule could judge it.

    Args:
        failures: Image id -> (reason, detail) for the feature rows whose status is not ok.
    """

    name = "embed_failure"

    def __init__(self, failures: Mapping[str, tuple[str, str]]) -> None:
        super().__init__()
        self.failures = failures

    @classmethod
    def for_shard(cls, config: CurateConfig, shard: ShardInputs) -> "EmbedFailureFilter | None":
        rows = shard.features()
        if rows is None:
            return None
        return cls({r["id"]: (r["status"], r["error_message"]) for r in rows if r["status"] != "ok"})

    def check(self, record: ImageRecord) -> str | None:
        failure = self.failures.get(record.id)
        if failure is None:
            return None
        reason, record.error_message = failure
        return reason


@dataclass
class FaceInfo:
    """The face encoder's findings for one image (from the feature shard)."""

    num_faces: int
    box: list[float] | None
    score: float | None
    boxes: list[list[float]]


def _area(box: list[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


class FaceFilter(Filter):
    """Person categories want exactly one dominant, large enough, confident face (see the module docstring).

    Args:
        config: Thresholds.
        categories: Categories the policy applies to.
        faces: Image id -> :class:`FaceInfo` for the images the face encoder ran on.
    """

    name = "face"
    reasons = ("no_face", "face_too_small", "face_low_score", "multiple_faces")

    def __init__(self, config: FilterConfig, categories: Iterable[str], faces: Mapping[str, FaceInfo]) -> None:
        super().__init__()
        self.config = config
        self.categories = set(categories)
        self.faces = faces

    @classmethod
    def for_shard(cls, config: CurateConfig, shard: ShardInputs) -> "FaceFilter | None":
        rows = shard.features()
        if rows is None or not (config.filters.face and config.embed.face_encoder):
            return None
        faces = {r["id"]: FaceInfo(r["num_faces"], r["face_box"], r["face_score"], r["face_boxes"] or [])
                 for r in rows if r["num_faces"] is not None}
        return cls(config.filters, config.embed.face_categories, faces)

    def check(self, record: ImageRecord) -> str | None:
        if record.category not in self.categories:
            return None
        info = self.faces.get(record.id)
        if info is None:
            self.stats.inc(f"{self.name}/unchecked")
            return None
        if info.num_faces == 0 or info.box is None:
            record.error_message = "no face detected"
            return "no_face"
        area = _area(info.box)
        frac = area / max(1, record.width * record.height)
        if frac < self.config.face_min_area:
            record.error_message = f"largest face covers {frac:.4f} of the image < {self.config.face_min_area}"
            return "face_too_small"
        if info.score is not None and info.score < self.config.face_min_score:
            record.error_message = f"face score {info.score:.3f} < {self.config.face_min_score}"
            return "face_low_score"
        others = sorted((_area(b) for b in info.boxes), reverse=True)[1:]
        if others and others[0] >= self.config.face_max_other * area:
            record.error_message = f"{info.num_faces} faces; the second is {others[0] / max(area, 1e-9):.2f} of the largest"
            return "multiple_faces"
        return None


class ObjectFilter(Filter):
    """Where the image's tag names a COCO class, the detector must have found that class.

    Args:
        classes: Tag name -> COCO class (or None).
        detections: Image id -> (labels, scores) for the images the detector ran on.
        min_score: Smallest score that counts.
    """

    name = "object"
    reasons = ("object_missing",)

    def __init__(self, classes: TagClasses, detections: Mapping[str, tuple[list[str], list[float]]], min_score: float) -> None:
        super().__init__()
        self.classes = classes
        self.detections = detections
        self.min_score = min_score

    @classmethod
    def for_shard(cls, config: CurateConfig, shard: ShardInputs) -> "ObjectFilter | None":
        rows = shard.features()
        if rows is None or not (config.filters.object and config.embed.detector):
            return None
        dets = {r["id"]: (r["det_labels"], r["det_scores"]) for r in rows if r["det_labels"] is not None}
        return cls(TagClasses(config, shard.layout.cache), dets, config.filters.object_min_score)

    def check(self, record: ImageRecord) -> str | None:
        want = self.classes.get(record.tags[0]) if record.tags else None
        if want is None:
            return None
        found = self.detections.get(record.id)
        if found is None:
            self.stats.inc(f"{self.name}/unchecked")
            return None
        labels, scores = found
        if any(lbl == want and s >= self.min_score for lbl, s in zip(labels, scores)):
            return None
        best = max((s for lbl, s in zip(labels, scores) if lbl == want), default=None)
        record.error_message = f"no {want!r} detected with score >= {self.min_score}" + (f" (best {best:.3f})" if best is not None else "")
        return "object_missing"


def chain(stages: list[Stage], records: Iterable[ImageRecord]) -> Iterator[ImageRecord]:
    """Compose stages lazily: records flow through each in order."""
    stream: Iterable[ImageRecord] = records
    for stage in stages:
        stream = stage(stream)
    return iter(stream)


class FilterTask(ShardedStep):
    """Per download shard: apply the registered filters and write the dropped ids with their reasons."""

    def __init__(self, config: CurateConfig, run_dir: str | Path, step: Step) -> None:
        super().__init__(config, run_dir, step)
        # Looked up here, in the driver, and shipped with the task: a stage registered in-process runs in spawned
        # workers too (classes pickle by reference).
        self.stages = filter_stages()

    def filters(self, shard: int) -> list[Filter]:
        """Every registered filter that is on for this shard (:meth:`~mrbench.stage.Filter.for_shard`), in
        registration order, each named as it is registered."""
        inputs = ShardInputs(self.layout, shard, self.config)
        out: list[Filter] = []
        for name, cls in self.stages:
            stage = cls.for_shard(self.config, inputs)
            if stage is not None:
                stage.name = name  # its counters' prefix
                out.append(stage)
        return out

    def process(self, shard: int) -> tuple[pa.Table, Stats]:
        download = self.layout.download.output(shard)
        columns = [n for n in pq.ParquetFile(download).schema_arrow.names if n != "image"]  # bytes are not needed
        filters = self.filters(shard)
        rows: dict[str, list[str]] = {n: [] for n in DROP_SCHEMA.names}
        for rec in chain(filters, (r for r in read_records(download, columns) if r.ok)):
            if not rec.ok:
                for k in DROP_SCHEMA.names:
                    rows[k].append(getattr(rec, k))
        stats = Stats()
        for f in filters:
            stats.merge(f.stats)
        return pa.table(rows, schema=DROP_SCHEMA), stats


# The filters' drop reasons are theirs (Filter.reasons, under Filter.label); embed_decode_error, which
# EmbedFailureFilter passes on, is the embed step's (curation.embed.EMBED_STEP).
FILTERS_STEP = Step("filters", FilterTask, after="safety", reads=("download", "embed"), prefix="drops",
                    runs_filters=True,
                    settings=("filters", "embed.face_encoder", "embed.face_categories", "embed.detector",
                              "safety.threshold"),
                    inputs=filters_identity)


def read_drops(folder: Path, prefix: str, num_shards: int) -> dict[str, tuple[str, str]]:
    """Id -> (reason, message) from the drop lists of a sharded step (missing files: nothing dropped)."""
    from mrbench.shards import ShardSet

    out: dict[str, tuple[str, str]] = {}
    shards = ShardSet(folder, prefix)
    for i in range(num_shards):
        path = shards.output(i)
        if path.exists():
            for r in pq.read_table(path).to_pylist():
                out[r["id"]] = (r["status"], r["error_message"])
    return out


def dropped_ids(path: Path) -> set[str]:
    """The ids of one drop list (one shard's worth: bounded by the shard), or none when it does not exist."""
    return set(pq.read_table(path, columns=["id"]).column("id").to_pylist()) if Path(path).exists() else set()
