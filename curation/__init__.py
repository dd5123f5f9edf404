"""Curation stages: crawl, download, validate, group, split, release.

Stages register here (lazily, by ``module:attr``) so ``mrbench ls stages`` lists them without importing them. Each
step of a run is one line naming its :class:`mrbench.stage.Step`, in run order; ``inside=`` marks a part its step
runs itself. A registered :class:`mrbench.stage.Filter` runs in the ``filters`` step (README: "Add a stage").
"""

from mrbench.stage import STAGES

STAGES.register("ingest", "mrbench.curation.crawl:INGEST_STEP", help="match captions against the tag list, per source file")
STAGES.register("select", "mrbench.curation.crawl:SELECT_STEP", help="cap candidates per tag, assign ids, cut URL shards")
STAGES.register("download", "mrbench.curation.download:DOWNLOAD_STEP", help="fetch and validate every URL; one status row per URL")
STAGES.register("fetch", "mrbench.curation.download:Downloader", inside="download", help="http(s) download under the egress policy; one status row per URL")
STAGES.register("validate", "mrbench.curation.download:ImageValidator", inside="download", help="full decode: corrupt, non-image, decompression-bomb checks; size and sha256")
STAGES.register("hash_blocklist", "mrbench.curation.blocklist:HashBlocklist", inside="download", help="crawl.blocklists sha256 / perceptual-hash lists: blocked images keep no bytes")
STAGES.register("embed", "mrbench.curation.embed:EMBED_STEP", help="image embedding, faces, detections per shard, cached")
STAGES.register("safety", "mrbench.curation.safety:SAFETY_STEP", help="safety classifier (safety.classifier) on the stored embeddings: a score per image")
STAGES.register("filters", "mrbench.curation.filters:FILTERS_STEP", help="resolution/aspect, safety score, face policy, object presence, registered filters; drops with reasons")
STAGES.register("index", "mrbench.curation.index:INDEX_STEP", help="memory-mapped vectors of the images still in play")
STAGES.register("dedup", "mrbench.curation.dedup:DEDUP_STEP", help="faiss near-duplicate search, keep by resolution then id")
STAGES.register("group", "mrbench.curation.group:GROUP_STEP", help="group, refine, split by group, audit leakage; groups/")
STAGES.register("group_by_tag", "mrbench.curation.group:group_by_tag", inside="group", help="exact-duplicate removal, groups by tag, size bounds, target choice")
STAGES.register("refine_groups", "mrbench.curation.refine:GroupRefiner", inside="group", help="identities, outliers, in-group dedup, visual groups")
STAGES.register("split_by_group", "mrbench.curation.split:split_groups", inside="group", help="held-out, held-in, train by group, seeded")
STAGES.register("leakage_audit", "mrbench.curation.audit:leakage_audit", inside="group", help="near-duplicates and identities across splits; removes train leaks")
STAGES.register("release", "mrbench.curation.release:RELEASE_STEP", help="parquet shards per split, rejects")
STAGES.register("finalize", "mrbench.curation.release:FINALIZE_STEP", help="EasyRef JSON, dataset card, manifest; the release verifies itself")
