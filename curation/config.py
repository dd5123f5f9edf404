"""The curation config: one dataclass per section of a curation YAML (``configs/*.yaml``), each field declared with
its constraints (:func:`mrbench.config.option`), and :class:`CurateConfig`'s checks that relate several fields or
read a file (the tag list, the calibration file, the model registries)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrbench.config import ConfigError, InputError, option, validate_fields, yaml_error_message
from mrbench.curation.tags import load_tag_list
from mrbench.executors import ExecutorConfig
from mrbench.log import get_logger, warn_once
from mrbench.registry import UnknownEntryError
from mrbench.thresholds import load_calibration

COSINE = "a cosine similarity"
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")  # img2dataset's ResizeMode
ENCODE_FORMATS = ("jpg", "png", "webp")  # what img2dataset's resizer encodes
PARQUET_CODECS = ("none", "snappy", "gzip", "brotli", "lz4", "lz4_raw", "zstd")  # what pyarrow's parquet writer takes


def _check_license(value: str) -> str | None:
    # The Hub's license ids are lowercase SPDX-like tokens (apache-2.0, cc-by-nc-4.0, other); anything else is
    # rejected by its metadata check.
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", value):
        return f"must be a Hub license id such as cc-by-4.0, mit or other (lowercase), got {value!r}"
    return None


def _check_compression(value: str) -> str | None:
    if value.lower() not in PARQUET_CODECS:
        return f"must be one of {', '.join(PARQUET_CODECS)}, got {value!r}"
    import pyarrow as pa

    if value.lower() != "none" and not pa.Codec.is_available(value.lower()):
        return f"codec {value!r} is not built into this pyarrow"
    return None


@dataclass
class SourceConfig:
    """One input source.

    Attributes:
        kind: ``metadata`` (LAION/COYO/DataComp-style parquet, csv or jsonl files), ``folder`` (local images) or
            ``img2dataset`` (an img2dataset output folder, ``output_format`` parquet, webdataset or files: the images
            are read from its shards, not downloaded; its rows are metadata rows for ``where`` / ``keep_columns``).
        paths: Files, folders or glob patterns. Folders of ``metadata`` sources are searched for ``*.parquet``;
            folders of ``img2dataset`` sources hold its shards (``NNNNN.parquet``, with ``NNNNN.tar`` or ``NNNNN/``).
        url_col: Column holding the image URL (``URL`` in LAION, ``url`` in COYO/DataComp).
        caption_col: Column holding the caption (``TEXT`` in LAION, ``text`` in COYO/DataComp).
        folder_tag: For ``folder`` sources, use the image's sub-folder name as its tag.
        where: ``metadata`` sources: a SQL predicate over the source's own columns (duckdb syntax, e.g.
            ``punsafe < 0.1 AND pwatermark < 0.8``); rows for which it is not true are counted
            (``ingest/where_failed``) and never downloaded. Empty: every row.
        keep_columns: ``metadata`` sources: columns of the source carried into the release as columns of their own
            (e.g. ``punsafe``, ``similarity``); a column of that name must not clash with a release column.
    """

    kind: str = option("metadata", choices=("metadata", "folder", "img2dataset"))
    paths: list[str] = option(default_factory=list, nonempty=True, path=True)
    url_col: str = option("url", nonempty=True)
    caption_col: str = option("caption", nonempty=True)
    folder_tag: bool = True
    where: str = ""
    keep_columns: list[str] = field(default_factory=list)


BLOCKLIST_KINDS = ("url", "domain", "id", "sha256", "phash")


@dataclass
class BlocklistConfig:
    """One block list: a text file, one entry a line (``#`` starts a comment).

    Attributes:
        path: The file.
        kind: ``url`` (exact URL), ``domain`` (a host and its sub-domains), ``id`` (release ids), ``sha256`` (of the
            image bytes as released), ``phash`` (64-bit perceptual hash, 16 hex digits, as ``imagehash.phash``
            prints it).
        max_distance: ``phash`` lists: an image within this many differing bits of an entry is blocked.
    """

    path: str = option("", nonempty=True, path=True)
    kind: str = option("url", choices=BLOCKLIST_KINDS)
    max_distance: int = option(4, ge=0, le=32)


@dataclass
class CrawlConfig:
    """Tag matching and download settings (MRBench's fetch loop under the egress policy, ``curation.netguard``).

    Attributes:
        tag_list: Path to the tag list (YAML or TSV: name, category, aliases).
        max_candidates_per_tag: Cap on candidate URLs per tag, chosen by a seeded hash (deterministic).
        require_tag: Drop metadata rows whose caption matches no tag (folder images always keep their folder tag).
        allow_private_network: Allow URLs resolving to private/loopback/link-local/metadata addresses.
        max_body_bytes: Bodies larger than this are refused (``oversize_body``).
        max_image_pixels: Images declaring more pixels are refused (``decompression_bomb``).
        timeout: Per-request timeout in seconds.
        retries: Retries per URL for timeouts, connection errors, 429 and 5xx (never 403/404), with backoff.
        thread_count: Download threads per worker process.
        output_format: Accepted for older configs and ignored: download shards are parquet.
        resize_mode: ``no`` keeps the publisher's bytes; ``border``, ``keep_ratio``, ``keep_ratio_largest``,
            ``center_crop`` (img2dataset's modes) resize to ``image_size`` and re-encode.
        image_size: Target size for resize modes other than ``no``.
        encode_format: ``jpg``, ``png`` or ``webp`` when re-encoding.
        user_agent_token: Named in the downloader's User-Agent.
        max_redirects: Redirects followed per URL; a longer chain is ``too_many_redirects``.
        backoff_base: First retry waits up to this many seconds; each further retry doubles it (full jitter).
        backoff_max: Upper bound of one backoff wait.
        retry_after_max: A server's ``Retry-After`` is honoured up to this many seconds.
        max_per_domain: Concurrent requests per host name within one download worker (0: no limit).
        convert_format: Re-encode every image to ``encode_format`` even without a resize (off: the publisher's
            bytes are kept whenever ``resize_mode`` is ``no``).
        disallowed_header_directives: ``X-Robots-Tag`` directives that make an image ``opted_out`` (before its body
            is read), unscoped or scoped to ``user_agent_token`` (``X-Robots-Tag: mrbench: noai``); img2dataset's
            defaults. An empty list turns the check off.
        honor_tdm_reservation: A ``tdm-reservation: 1`` header (W3C TDMRep) makes an image ``opted_out``.
        blocklists: Files of URLs, domains, record ids, sha256 digests or perceptual hashes never to release
            (``curation.blocklist``); URL, domain and id rows are dropped at selection (never requested), hash
            rows after download.
    """

    tag_list: str = option("", path=True)
    max_candidates_per_tag: int = option(1000, ge=1)
    require_tag: bool = True
    allow_private_network: bool = False
    max_body_bytes: int = option(20 * 1024 * 1024, ge=1)
    max_image_pixels: int = option(64_000_000, ge=1)
    timeout: float = option(10.0, gt=0, le=3600)
    retries: int = option(0, ge=0, le=100)
    thread_count: int = option(16, ge=1, le=1024)
    output_format: str = option("parquet", choices=("parquet", "webdataset"))
    resize_mode: str = option("no", choices=RESIZE_MODES)
    image_size: int = option(512, ge=1, le=65535)
    encode_format: str = option("jpg", choices=ENCODE_FORMATS)
    user_agent_token: str = "mrbench"
    max_redirects: int = option(10, ge=0, le=100)
    backoff_base: float = option(0.5, ge=0, le=3600)
    backoff_max: float = option(30.0, ge=0, le=3600)
    retry_after_max: float = option(60.0, ge=0, le=3600)
    max_per_domain: int = option(0, ge=0, le=10_000)
    convert_format: bool = False
    disallowed_header_directives: list[str] = field(
        default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"])
    honor_tdm_reservation: bool = True
    blocklists: list[BlocklistConfig] = field(default_factory=list)


@dataclass
class GroupConfig:
    """Grouping settings.

    Attributes:
        min_group_size: Groups with fewer ok images are dropped (a target needs at least one reference).
        max_group_size: Larger groups keep this many images, chosen by seeded hash.
        max_references: References per group in the EasyRef export.
        identity_threshold: Face cosine similarity of one identity when clustering the faces of a person group
            (None: the face encoder's identity threshold, ``mrbench.thresholds``); the dominant identity stays.
        consistency_min: Subject and style groups drop images whose similarity to the mean of the rest of the
            group is below this (``inconsistent``; calibrated for ``mobilenet_v2`` on DreamBench); 0 = off.
        consistency_mad: Also drop images below ``median - consistency_mad * MAD`` of their group; 0 = off.
        consistency_categories: Categories the consistency rule applies to (not those of
            ``embed.face_categories`` when a face encoder is set: they are refined by identity). A content encoder
            such as ``mobilenet_v2`` sees what is depicted, not the style: leave ``style`` out unless the encoder
            captures style (CLIP does).
        dedup_threshold: Within a group, images at least this similar are near-duplicates of each other
            (``duplicate_in_group``); None = off.
        visual_groups: Untagged images (tag ``untagged``) are grouped visually into this many groups; 0 infers
            the number (best silhouette) unless ``visual_threshold`` is set.
        visual_threshold: Group untagged images by average-linkage cosine similarity instead.
    """

    min_group_size: int = option(2, ge=2, why="a target needs a reference")
    max_group_size: int = option(64, ge=2)
    max_references: int = option(8, ge=1)
    identity_threshold: float | None = option(None, ge=-1.0, le=1.0, why=COSINE)
    consistency_min: float = option(0.7, ge=-1.0, le=1.0, why=COSINE)
    consistency_mad: float = option(0.0, ge=0)
    consistency_categories: list[str] = field(default_factory=lambda: ["subject", "style"])
    dedup_threshold: float | None = option(0.92, ge=-1.0, le=1.0, why=COSINE)
    visual_groups: int = option(0, ge=0)
    visual_threshold: float | None = option(None, ge=-1.0, le=1.0, why=COSINE)


@dataclass
class EmbedConfig:
    """Models run per download shard; an empty name turns off every step that needs that model.

    With the defaults (all empty) the curation run is the tag-only foundation. Offline choices with real weights:
    ``encoder: mobilenet_v2`` and ``face_encoder: dlib``.

    Attributes:
        encoder: Image encoder (``mrbench ls encoders``) for dedup, outlier removal, visual grouping and the
            near-duplicate leakage audit.
        encoder_options: Keyword options for it (``mrbench ls encoders``).
        face_encoder: Face encoder for the face filter, identity grouping and the identity leakage audit; it runs
            on images of ``face_categories`` only.
        face_options: Keyword options for it.
        face_categories: Tag categories whose groups are one person (a celebrity or character).
        detector: Object detector for the object filter; runs on images whose tag names a COCO class.
        detector_options: Keyword options for it.
        batch_size: Images decoded and embedded together.
    """

    encoder: str = ""
    encoder_options: dict[str, Any] = field(default_factory=dict)
    face_encoder: str = ""
    face_options: dict[str, Any] = field(default_factory=dict)
    face_categories: list[str] = field(default_factory=lambda: ["celebrity", "character"])
    detector: str = ""
    detector_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = option(32, ge=1)


@dataclass
class DedupConfig:
    """Near-duplicate removal over all images (global) with faiss; see ``curation.dedup``.

    Attributes:
        enabled: Run it (needs ``embed.encoder``).
        threshold: Cosine similarity at or above which two images are near-duplicates; None uses the image
            encoder's near-duplicate threshold (``mrbench.thresholds``: the run's calibration file, else the one
            measured for the encoder, else an uncalibrated fallback).
        exact_max: Sets up to this size are range-searched exactly; larger ones are partitioned (k-means).
        nprobe: Cells compared per vector in the partitioned search.
    """

    enabled: bool = True
    threshold: float | None = option(None, gt=0.05, le=1.0, why="it marks near-duplicates")
    exact_max: int = option(50_000, ge=2)
    nprobe: int = option(4, ge=1)


@dataclass
class FilterConfig:
    """Per-image filters; every drop carries its reason (also written to ``filters/`` and the rejects).

    The defaults keep every image (resolution rules off; face and object rules need models from ``embed``);
    e.g. ``min_side: 64``, ``max_aspect: 4`` are reasonable for a web crawl.

    Attributes:
        min_side: Images whose shorter side is smaller are dropped (``low_resolution``); 0 turns it off.
        max_aspect: Images whose longer/shorter side ratio is larger are dropped (``extreme_aspect``); 0 = off.
        face: Apply the face policy to images of ``embed.face_categories`` (needs ``embed.face_encoder``):
            exactly one dominant face, large and confident enough.
        face_min_area: Smallest dominant-face box area, as a fraction of the image area (``face_too_small``).
        face_min_score: Smallest detector score of the dominant face (``face_low_score``).
        face_max_other: A second face with at least this fraction of the dominant face's area makes the image
            ``multiple_faces``.
        object: Require the tag's COCO class to be detected where the tag names one (needs ``embed.detector``).
        object_min_score: Smallest detection score that counts (``object_missing`` otherwise).
        object_classes: Tag name -> COCO class overrides (an empty value: the tag names no class).
    """

    min_side: int = option(0, ge=0)
    max_aspect: float = option(0.0, ge=0)
    face: bool = True
    face_min_area: float = option(0.01, ge=0, le=1.0)
    face_min_score: float = option(0.5, ge=0, le=1.0)
    face_max_other: float = option(0.5, gt=0, le=1.0)
    object: bool = True
    object_min_score: float = option(0.5, ge=0, le=1.0)
    object_classes: dict[str, str] = field(default_factory=dict)


@dataclass
class SafetyConfig:
    """The safety filter on stored image embeddings (``curation.safety``), for sources without safety columns.

    Attributes:
        classifier: A registered safety classifier (``mrbench ls safety``: ``laion-nsfw-h14``, LAION's NSFW
            detector on CLIP ViT-H-14 embeddings); empty turns the step off. Needs ``embed.encoder``.
        options: Keyword options for it (``checkpoint: PATH`` for the LAION weights).
        threshold: Images scoring at or above this are dropped (``unsafe``); the score of every image is kept in
            ``safety/``.
    """

    classifier: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    threshold: float = option(0.5, ge=0.0, le=1.0, why="a probability")


@dataclass
class AuditConfig:
    """Leakage audit across train / held-in / held-out (needs ``embed.encoder`` or ``embed.face_encoder``).

    Attributes:
        enabled: Run the audit and write ``audit/leakage.json`` and ``audit/leaks.parquet``.
        near_dup_threshold: Image cosine similarity at or above which two images in different splits leak (None:
            the image encoder's near-duplicate threshold, ``mrbench.thresholds``).
        identity_threshold: Face cosine similarity for "same person" (None: the face encoder's identity threshold,
            ``mrbench.thresholds``).
        remove_train_leaks: Drop the training image of every leaking pair (``leak_near_duplicate``,
            ``leak_identity``); pairs between the two test splits are reported only.
    """

    enabled: bool = True
    near_dup_threshold: float | None = option(None, ge=-1.0, le=1.0, why=COSINE)
    identity_threshold: float | None = option(None, ge=-1.0, le=1.0, why=COSINE)
    remove_train_leaks: bool = True


@dataclass
class SplitConfig:
    """Split by group: held-out groups first, then held-in, the rest train (paper sizes by default)."""

    held_out_groups: int = option(50, ge=0)
    held_in_groups: int = option(300, ge=0)


@dataclass
class ReleaseConfig:
    """Release settings.

    Attributes:
        name: Dataset name written in the card and manifest.
        easyref_json: Also export EasyRef's training JSON (three record shapes).
        compression: Parquet compression codec.
        license: License id written in the dataset card's YAML header (a Hub license id: ``cc-by-4.0``, ``mit``,
            ``other``, ...). ``other`` by default: a web crawl's images stay their owners' property.
        license_note: What the card says under "License" (who holds the image rights).
    """

    name: str = option("mrbench", nonempty=True)
    easyref_json: bool = True
    compression: str = option("zstd", check=_check_compression)
    license: str = option("other", check=_check_license)
    license_note: str = option("The images belong to their rights holders; each row's url names where it came from. "
                               "Check the terms of each source before using an image.", nonempty=True)


@dataclass
class CurateConfig:
    """Top-level curation config; see ``configs/*.yaml`` for examples.

    Attributes:
        num_shards: Shards of every per-URL step (download, embed, filters, release), fixed for a run folder; 0 (the
            default): chosen at selection, one shard per ``rows_per_shard`` selected URLs.
        rows_per_shard: With ``num_shards: 0``, the URLs per shard the selection aims at (img2dataset's
            ``number_sample_per_shard``); shards hold about that many rows (URLs are spread by id), so resume and
            retry work in pieces of that size, whatever the run's size.
        calibration: A calibration file written by ``mrbench calibrate``: its thresholds apply per encoder (identity
            for the face encoder; near-duplicates for the image encoder) wherever the config sets none.
    """

    seed: int = option(0, ge=0)
    num_shards: int = option(0, ge=0)
    rows_per_shard: int = option(10_000, ge=1)
    sources: list[SourceConfig] = field(default_factory=list)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    calibration: str = option("", path=True)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for any value that would make the run fail later.

        Field types, ranges and choices come from each field's :func:`option`; the rules that relate several fields
        or read a file (the tag list) are here.
        """
        validate_fields(self)
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        if any(s.kind == "metadata" for s in self.sources) and not self.crawl.tag_list:
            raise ConfigError("crawl.tag_list is required for metadata sources")
        if self.crawl.tag_list:
            check_tag_list(self.crawl.tag_list)
        if self.calibration:
            load_calibration(self.calibration)
        if self.group.max_group_size < self.group.min_group_size:
            raise ConfigError("group.max_group_size must be >= group.min_group_size")
        if self.crawl.output_format != "parquet":  # kept so that older configs load; say that it does nothing
            warn_once(get_logger(__name__), "crawl.output_format",
                      f"crawl.output_format={self.crawl.output_format!r} is ignored: download shards and the release "
                      "are parquet (remove the key)")
        self._validate_visual()

    def _validate_visual(self) -> None:
        """Embed, dedup, filter, audit and visual grouping settings; model names are checked against the
        registries (no model is loaded here)."""
        check_embed_models(self.embed)
        if self.safety.classifier:
            check_safety_classifier(self.safety, self.embed)


def check_embed_models(config: EmbedConfig) -> None:
    """Check the configured model names against the backend registries (nothing is loaded); raises ConfigError."""
    from mrbench.backends import DETECTORS, ENCODERS  # lazy: the backends package is not needed to load a config

    def kind(name: str) -> str:  # image, text-image or face: registered with each encoder
        return dict(ENCODERS.entry(name).meta).get("kind", "image")

    try:
        if config.encoder and kind(config.encoder) == "face":
            raise ConfigError(f"embed.encoder {config.encoder!r} is a face encoder; set it as embed.face_encoder")
        if config.face_encoder and kind(config.face_encoder) != "face":
            raise ConfigError(f"embed.face_encoder {config.face_encoder!r} is not a face encoder")
        if config.detector:
            DETECTORS.entry(config.detector)
    except UnknownEntryError as e:
        raise ConfigError(f"embed: {e}") from None


def check_safety_classifier(safety: SafetyConfig, embed: EmbedConfig) -> None:
    """The safety classifier is registered and reads the embedding the run stores (nothing is loaded)."""
    from mrbench.backends import SAFETY_CLASSIFIERS

    try:
        meta = dict(SAFETY_CLASSIFIERS.entry(safety.classifier).meta)
    except UnknownEntryError as e:
        raise ConfigError(f"safety: {e}") from None
    if not embed.encoder:
        raise ConfigError(f"safety.classifier {safety.classifier!r} scores image embeddings: set embed.encoder")
    want = meta.get("encoder")
    if want and embed.encoder != want:
        raise ConfigError(f"safety.classifier {safety.classifier!r} reads {want} {meta.get('arch', '')} embeddings, "
                          f"not {embed.encoder!r}: set embed.encoder: {want}")
    arch = meta.get("arch")
    if arch and arch not in str(embed.encoder_options.get("model", "")):
        raise ConfigError(f"safety.classifier {safety.classifier!r} reads {want} {arch} embeddings: set "
                          f"embed.encoder_options.model to a {arch} tag (e.g. {arch}/laion2b_s32b_b79k)")


def check_tag_list(path: str | Path) -> None:
    """Load the tag list once (as the crawl will) so a missing, malformed or empty one fails before any work.

    Raises:
        InputError: naming the file (and the line and column of a YAML syntax error).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"crawl.tag_list: no such file {str(path)!r}")
    try:
        tags = load_tag_list(path)  # parsed once per process and file version
    except yaml.YAMLError as e:
        raise InputError(yaml_error_message(path, e)) from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (ValueError, TypeError, KeyError, AttributeError, csv.Error, OSError) as e:
        raise InputError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    if not tags.tags:
        raise InputError(f"crawl.tag_list {path} has no tags: nothing would be crawled")
