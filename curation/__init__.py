"""Curation stages: crawl, download, validate, group, split, release.

Stages register here (lazily, by ``module:attr``) so ``mrbench ls stages`` lists them without importing them.
"""

from mrbench.stage import STAGES

STAGES.register("ingest", "mrbench.curation.crawl:IngestTask", help="match captions against the tag list, per source file")
STAGES.register("select", "mrbench.curation.crawl:select_and_shard", help="cap candidates per tag, assign ids, cut URL shards (global)")
STAGES.register("download", "mrbench.curation.download:Downloader", help="http(s) download under the egress policy; one status row per URL")
STAGES.register("validate", "mrbench.curation.download:ImageValidator", help="full decode: corrupt, non-image, decompression-bomb checks; size and sha256")
STAGES.register("embed", "mrbench.curation.embed:EmbedTask", help="image embedding, faces, detections per shard, cached (sharded)")
STAGES.register("filters", "mrbench.curation.filters:FilterTask", help="resolution/aspect, face policy, object presence; drops with reasons (sharded)")
STAGES.register("index", "mrbench.curation.index:build_index", help="memory-mapped vectors of the images still in play (global)")
STAGES.register("dedup", "mrbench.curation.dedup:dedup_step", help="faiss near-duplicate search, keep by resolution then id (global)")
STAGES.register("refine_groups", "mrbench.curation.refine:GroupRefiner", help="identities, outliers, in-group dedup, visual groups (inside grouping)")
STAGES.register("leakage_audit", "mrbench.curation.audit:leakage_audit", help="near-duplicates and identities across splits; removes train leaks (global)")
STAGES.register("group_by_tag", "mrbench.curation.group:group_by_tag", help="exact-duplicate removal, groups by tag, size bounds, target choice (global)")
STAGES.register("split_by_group", "mrbench.curation.split:split_groups", help="held-out, held-in, train by group, seeded (global)")
STAGES.register("release", "mrbench.curation.release:ReleaseTask", help="parquet shards per split, rejects; then manifest, card, EasyRef JSON")
