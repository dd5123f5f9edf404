"""Curation stages: crawl, download, validate, group, split, release.

Stages register here (lazily, by ``module:attr``) so ``mrbench ls stages`` lists them without importing them. Each
step of a run is one line naming its :class:`mrbench.stage.Step` (the one place its name, folder, settings and
drops are spelled), in run order. Each filter of the ``filters`` step is one line naming its
:class:`mrbench.stage.Filter`, in the order they run; a plugin's filters run after these (README: "Add a stage").
Re-registering a name (after ``STAGES.unregister``) replaces what runs under it.
"""

from mrbench.stage import STAGES

STAGES.register("ingest", "mrbench.curation.crawl:INGEST_STEP", help="match captions against the tag list, per source file")
STAGES.register("select", "mrbench.curation.crawl:SELECT_STEP", help="cap candidates per tag, assign ids, cut URL shards")
STAGES.register("download", "mrbench.curation.download:DOWNLOAD_STEP", help="fetch and validate every URL; one status row per URL")
STAGES.register("embed", "mrbench.curation.embed:EMBED_STEP", help="image embedding, faces, detections per shard, cached")
STAGES.register("safety", "mrbench.curation.safety:SAFETY_STEP", help="safety classifier (safety.classifier) on the stored embeddings: a score per image")
STAGES.register("filters", "mrbench.curation.filters:FILTERS_STEP", help="runs the registered filters below; drops with reasons")
STAGES.register("resolution", "mrbench.curation.filters:ResolutionFilter", help="shorter side below filters.min_side, side ratio above filters.max_aspect")
STAGES.register("safety_score", "mrbench.curation.safety:SafetyFilter", help="safety score at or above safety.threshold (with safety.classifier)")
STAGES.register("embed_failure", "mrbench.curation.filters:EmbedFailureFilter", help="images the embed step could not read (no features to judge them by)")
STAGES.register("face", "mrbench.curation.filters:FaceFilter", help="person categories: one dominant, large enough, confident face")
STAGES.register("object", "mrbench.curation.filters:ObjectFilter", help="a tag naming a COCO class: the detector found that class")
STAGES.register("index", "mrbench.curation.index:INDEX_STEP", help="memory-mapped vectors of the images still in play")
STAGES.register("dedup", "mrbench.curation.dedup:DEDUP_STEP", help="faiss near-duplicate search, keep by resolution then id")
STAGES.register("group", "mrbench.curation.group:GROUP_STEP", help="group, refine, split by group, audit leakage; groups/")
STAGES.register("release", "mrbench.curation.release:RELEASE_STEP", help="parquet shards per split, rejects")
STAGES.register("finalize", "mrbench.curation.release:FINALIZE_STEP", help="EasyRef JSON, dataset card, manifest; the release verifies itself")
