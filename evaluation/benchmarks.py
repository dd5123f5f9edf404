"""Benchmarks: fixed, versioned sets of samples (references, target, prompt) plus seeds.

- ``mrbench:RELEASE`` -- the held-in or held-out split of a release written by ``mrbench curate``: one sample per
  target image, its group's references, the target's caption as prompt.
- ``dreambench:PATH`` -- DreamBench in its published layout (``<subject>/*.jpg`` + ``prompts_and_classes.txt``):
  30 subjects x 25 prompt templates (object or live-subject list), class tokens from the file. DreamBench has no
  held-out target; MRBench rotates one: prompt ``p`` of a subject uses the subject's ``p mod n``-th photo (sorted by
  file name) as the target and the other photos as references, so every photo serves as target and the
  comparison with the target is always against an image the generator did not see.
- ``coco:PATH`` -- the EasyRef paper's zero-shot COCO evaluation: COCO 2017 val in its published layout
  (``annotations/captions_val2017.json`` + ``val2017/<file_name>``). One sample per image: the image itself is the
  single reference AND the target, its first caption (lowest annotation id) the prompt. Samples are in a seeded
  random order (``COCO_ORDER_SEED``), so ``--limit N`` evaluates a seeded random subsample of N images.
- ``folder:PATH`` -- any folder of ``<group>/<images>``: every image takes a turn as target, the rest of its group are
  the references, prompt ``a photo of a <class>`` (class from an optional ``classes.csv``: ``group,class``).

A benchmark spec records its version, the fingerprint of its sample list, seeds and images per prompt, and the
encoders its own convention asks for (``metric_encoders``): DINO-I is DINO v1 ViT-S/16 CLS (``dino-v1``) on
DreamBench, as its published numbers (real-image ceiling 0.774) use, and DINOv2-S (``dino``) elsewhere, as the EasyRef
paper does; the encoder is in the column name (``dino_i@dino-v1``) and the run config. ``dino_i@ENCODER`` overrides.
"""

from __future__ import annotations

import abc
import csv
import hashlib
import io
import json
import re
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, ClassVar

from PIL import Image

from mrbench.config import ConfigError, EvalConfig
from mrbench.evaluation.generator import ImageRef, Sample
from mrbench.evaluation.registry import BENCHMARKS, benchmarks

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
IDENTIFIER = "sks"  # DreamBooth's rare-token identifier
# The class noun of a release group, from its tag category: what DreamBooth-style prompts call the subject. Never the
# tag itself -- a celebrity's name would give the identity away as text.
CATEGORY_CLASS = {"celebrity": "person", "character": "character", "style": "style", "subject": "object"}


@dataclass
class BenchmarkSpec:
    """What a run was evaluated on; stored in every run folder.

    Attributes:
        name: Registry name (``mrbench``, ``dreambench``, ``folder``).
        version: Benchmark format version (``dreambench/1``); bumps when sample construction changes.
        path: The data folder.
        split: Split evaluated.
        seed: First seed; image ``k`` of a prompt uses ``seed + k``.
        images_per_prompt: Images generated per sample.
        limit: Only the first ``limit`` samples (samples are ordered round-robin over groups, so a limit still spans
            many groups); None for all.
        num_samples: Samples evaluated (after the limit).
        fingerprint: sha256 of the full sample list (ids, prompts, reference and target ids).
        metric_encoders: Metric -> encoder the benchmark's convention uses when the metric names none.
    """

    name: str
    version: str
    path: str
    split: str
    seed: int = 0
    images_per_prompt: int = 4
    limit: int | None = None
    num_samples: int = 0
    fingerprint: str = ""
    metric_encoders: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.images_per_prompt)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "path": self.path, "split": self.split, "seed": self.seed,
            "seeds": self.seeds, "images_per_prompt": self.images_per_prompt, "limit": self.limit,
            "num_samples": self.num_samples, "fingerprint": self.fingerprint, "metric_encoders": dict(self.metric_encoders),
        }


DEFAULT_MAX_IMAGE_PIXELS = EvalConfig.max_image_pixels


class Benchmark(abc.ABC):
    """Base class: subclasses build the full, ordered sample list of one split.

    Args:
        path: Data folder.
        split: Split name (None: the benchmark's default).
        seed: First seed.
        images_per_prompt: Images per sample (default 4, the paper's and DreamBench's setting).
        limit: Keep the first ``limit`` samples.
        max_image_pixels: Images declaring more pixels are never decoded (the runner fails their samples by name).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("test",)
    # Encoders of the benchmark's own metric convention (metric -> encoder; with --profile tiny, the tiny encoder's
    # options that mirror it). The EasyRef paper scores DINO-I with DINOv2-Small.
    metric_encoders: ClassVar[dict[str, str]] = {"dino_i": "dino"}
    tiny_encoder_args: ClassVar[dict[str, dict[str, Any]]] = {"dino_i": {"variant": "v2"}}

    def __init__(self, path: str | Path, split: str | None = None, seed: int = 0, images_per_prompt: int = 4,
                 limit: int | None = None, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.path = Path(path)
        self.max_image_pixels = max_image_pixels
        split = normalize_split(split) if split else self.splits[0]
        if split not in self.splits:
            raise ConfigError(f"benchmark {self.name!r} has splits {', '.join(self.splits)}; got {split!r}")
        if images_per_prompt < 1:
            raise ConfigError("images_per_prompt must be >= 1")
        if limit is not None and limit < 1:
            raise ConfigError("limit must be >= 1")
        if not self.path.exists():
            raise ConfigError(f"benchmark {self.name!r}: no such folder {self.path}")
        if not self.path.is_dir():
            raise ConfigError(f"benchmark {self.name!r}: {self.path} is not a folder (give the folder that holds the "
                              "images)")
        self.split = split
        self.seed = seed
        self.images_per_prompt = images_per_prompt
        self.limit = limit
        self._all: list[Sample] | None = None

    @abc.abstractmethod
    def _build(self) -> list[Sample]:
        """All samples of ``self.split``, in a fixed order."""

    def all_samples(self) -> list[Sample]:
        """Every sample of the split (the pool real-image rows draw from), ignoring the limit."""
        if self._all is None:
            self._all = self._build()
            ids = [s.id for s in self._all]
            if len(set(ids)) != len(ids):
                raise ValueError(f"benchmark {self.name}: duplicate sample ids")
        return self._all

    def samples(self) -> list[Sample]:
        """The samples to evaluate (limit applied)."""
        out = self.all_samples()
        return out[: self.limit] if self.limit else out

    def spec(self) -> BenchmarkSpec:
        blob = json.dumps([s.to_dict() for s in self.all_samples()], sort_keys=True)
        return BenchmarkSpec(
            name=self.name, version=self.version, path=str(self.path), split=self.split, seed=self.seed,
            images_per_prompt=self.images_per_prompt, limit=self.limit, num_samples=len(self.samples()),
            fingerprint=hashlib.sha256(blob.encode()).hexdigest(), metric_encoders=dict(self.metric_encoders),
        )


def normalize_split(split: str) -> str:
    """``held-in`` -> ``held_in`` (the CLI spelling to the release's)."""
    return split.replace("-", "_").lower()


def round_robin(by_group: dict[str, list[Sample]]) -> list[Sample]:
    """Interleave groups (sorted) so that the first N samples span as many groups as possible."""
    out: list[Sample] = []
    queues = [list(by_group[g]) for g in sorted(by_group)]
    i = 0
    while any(queues):
        for q in queues:
            if i < len(q):
                out.append(q[i])
        i += 1
        queues = [q for q in queues if i < len(q)]
    return out


def load_image_file(path: Path | IO[bytes], max_pixels: int | None = None) -> Image.Image:
    """Open an image file (a path or a binary file object) as RGB, applying its EXIF orientation (``mrbench.images``);
    an image declaring more than ``max_pixels`` pixels is refused before decoding (``ImageTooLargeError``)."""
    from mrbench.images import load_image

    return load_image(path, max_pixels=max_pixels)


def file_ref(image_id: str, group: str, path: Path, max_pixels: int | None) -> ImageRef:
    """An :class:`ImageRef` of an image file: loaded on demand under the pixel limit, its size read from the header."""
    from mrbench.images import declared_size

    return ImageRef(image_id, group, partial(load_image_file, path, max_pixels=max_pixels), partial(declared_size, path))


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``, symlinks resolved, lies under ``root`` (a link leading out of a benchmark is not its file)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _images_in(folder: Path, root: Path) -> list[Path]:
    """The image files of ``folder`` that really lie under the benchmark's ``root`` (links out of it are skipped)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    kept = [p for p in files if _inside(root, p)]
    if len(kept) < len(files):
        from mrbench.log import get_logger, warn_once

        warn_once(get_logger("evaluation.benchmarks"), f"outside:{root}",
                  f"{root}: skipped symlinks that lead outside the benchmark folder (e.g. {next(p for p in files if p not in kept)})")
    return kept


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------------------------------- DreamBench


@dataclass
class DreamBenchPrompts:
    """The parsed ``prompts_and_classes.txt``: class per subject and the two prompt template lists."""

    classes: dict[str, str]
    object_prompts: list[str]
    live_prompts: list[str]

    LIVE_CLASSES: ClassVar[tuple[str, ...]] = ("cat", "dog")  # DreamBench's 9 live subjects are its cats and dogs

    def is_live(self, subject: str) -> bool:
        return self.classes[subject] in self.LIVE_CLASSES

    def templates(self, subject: str) -> list[str]:
        return self.live_prompts if self.is_live(subject) else self.object_prompts


def parse_dreambench_prompts(path: Path) -> DreamBenchPrompts:
    """Parse DreamBench's ``prompts_and_classes.txt`` (a CSV of classes, then two Python prompt lists).

    Templates keep DreamBench's ``{0}`` (unique token) and ``{1}`` (class token) placeholders.
    """
    text = path.read_text(encoding="utf-8")
    classes: dict[str, str] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_]+),([^,]+?)\s*", line)
        if m and m.group(1) != "subject_name":
            classes[m.group(1)] = m.group(2).strip()
    obj_start = text.find("Object Prompts")
    live_start = text.find("Live Subject Prompts")
    if obj_start < 0 or live_start < 0 or not classes:
        raise ConfigError(f"{path}: not DreamBench's prompts_and_classes.txt (classes and both prompt lists needed)")
    pattern = re.compile(r"'([^']*)'\s*\.format\(\s*unique_token\s*,\s*class_token\s*\)")
    objects = pattern.findall(text[obj_start:live_start])
    live = pattern.findall(text[live_start:])
    if not objects or not live:
        raise ConfigError(f"{path}: could not read the prompt lists")
    return DreamBenchPrompts(classes, objects, live)


@BENCHMARKS.register("dreambench", help="DreamBench folder (dreambench:PATH): 30 subjects x 25 prompts, rotating target")
class DreamBench(Benchmark):
    """DreamBench (Ruiz et al. 2023) from its published folder layout."""

    name = "dreambench"
    version = "dreambench/1"
    splits = ("test",)
    # DreamBench's DINO-I (Ruiz et al.): DINO v1 ViT-S/16 CLS; its real-image ceiling 0.774 is on that scale.
    metric_encoders = {"dino_i": "dino-v1"}
    tiny_encoder_args = {"dino_i": {"variant": "v1"}}

    def _build(self) -> list[Sample]:
        prompts_file = self.path / "prompts_and_classes.txt"
        if not prompts_file.is_file():
            raise ConfigError(f"dreambench: {prompts_file} not found (expected DreamBench's published layout)")
        parsed = parse_dreambench_prompts(prompts_file)
        by_group: dict[str, list[Sample]] = {}
        for subject in sorted(parsed.classes):
            folder = self.path / subject
            if not folder.is_dir() or not _inside(self.path, folder):
                raise ConfigError(f"dreambench: subject folder {folder} is missing (or a link out of {self.path})")
            files = _images_in(folder, self.path)
            if len(files) < 2:
                raise ConfigError(f"dreambench: {folder} needs at least 2 images (one target, one reference)")
            refs = [file_ref(f"{subject}/{f.name}", subject, f, self.max_image_pixels) for f in files]
            cls = parsed.classes[subject]
            samples = []
            for p, template in enumerate(parsed.templates(subject)):
                t = p % len(refs)
                samples.append(Sample(
                    id=f"{subject}/{p:02d}", group=subject, split=self.split,
                    prompt=_clean(template.format("", cls)), references=refs[:t] + refs[t + 1:], target=refs[t],
                    class_token=cls, identifier_prompt=_clean(template.format(IDENTIFIER, cls)),
                    category="live" if parsed.is_live(subject) else "object",
                ))
            by_group[subject] = samples
        return round_robin(by_group)


# ------------------------------------------------------------------------------------------------ COCO

COCO_ORDER_SEED = 0  # the seeded order of COCO samples (part of the benchmark version: changing it is coco/2)


@BENCHMARKS.register("coco", help="COCO 2017 val (coco:PATH): one reference = the target image, its caption as prompt")
class CocoCaptions(Benchmark):
    """The paper's zero-shot single-reference COCO setting (EasyRef Table 1: CLIP-I / CLIP-T / DINO-I on COCO val).

    Each image is its own group: the ceiling row has nothing to draw (``no_candidate``), the chance row draws another
    image. Images listed in the annotations but missing from ``val2017/`` are left out with a warning (the
    fingerprint records the list actually evaluated).
    """

    name = "coco"
    version = "coco/1"
    splits = ("val2017",)
    annotations = "annotations/captions_val2017.json"
    images = "val2017"

    def _build(self) -> list[Sample]:
        import numpy as np

        from mrbench.log import get_logger

        ann_file = self.path / self.annotations
        if not ann_file.is_file():
            raise ConfigError(f"coco: {ann_file} not found (expected COCO's layout: {self.annotations} + {self.images}/)")
        try:
            data = json.loads(ann_file.read_text(encoding="utf-8"))
            files = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
            captions: dict[int, tuple[int, str]] = {}
            for a in data["annotations"]:
                iid, aid = int(a["image_id"]), int(a["id"])
                if iid not in captions or aid < captions[iid][0]:
                    captions[iid] = (aid, _clean(str(a["caption"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"coco: {ann_file} is not a COCO captions file ({type(e).__name__}: {e})") from e
        present = [iid for iid in sorted(files) if iid in captions and (self.path / self.images / files[iid]).is_file()
                   and _inside(self.path, self.path / self.images / files[iid])]
        missing = sum(1 for iid in files if iid in captions) - len(present)
        if not present:
            raise ConfigError(f"coco: none of the {len(files)} annotated images is under {self.path / self.images}")
        if missing:
            get_logger("evaluation.benchmarks").warning(
                "coco: %d annotated images are missing from %s and left out", missing, self.path / self.images)
        order = np.random.default_rng(COCO_ORDER_SEED).permutation(len(present))
        samples = []
        for k in order:
            iid = present[int(k)]
            f = self.path / self.images / files[iid]
            ref = file_ref(f"coco/{iid}", f"coco/{iid}", f, self.max_image_pixels)
            samples.append(Sample(id=f"coco/{iid}", group=ref.group, split=self.split, prompt=captions[iid][1],
                                  references=[ref], target=ref, category="coco"))
        return samples


# ------------------------------------------------------------------------------------------------ folder


@BENCHMARKS.register("folder", help="any folder of <group>/<images> (folder:PATH): each image in turn is the target")
class FolderBenchmark(Benchmark):
    """Groups are sub-folders; every image is once the target with the rest of its group as references.

    Groups with a single image still yield a sample (no references): generators that need references report it as a
    failed row, and real-image rows show what a group without a second image gives.
    """

    name = "folder"
    version = "folder/1"
    splits = ("test",)

    def _build(self) -> list[Sample]:
        classes: dict[str, str] = {}
        cfile = self.path / "classes.csv"
        if cfile.is_file():
            with open(cfile, newline="", encoding="utf-8") as f:
                for row in csv.reader(f):
                    if len(row) >= 2 and row[0] != "group":
                        classes[row[0].strip()] = row[1].strip()
        by_group: dict[str, list[Sample]] = {}
        for folder in sorted(p for p in self.path.iterdir() if p.is_dir() and _inside(self.path, p)):
            files = _images_in(folder, self.path)
            if not files:
                continue
            group = folder.name
            refs = [file_ref(f"{group}/{f.name}", group, f, self.max_image_pixels) for f in files]
            cls = classes.get(group, group.replace("_", " "))
            by_group[group] = [
                Sample(id=f"{group}/{t:02d}", group=group, split=self.split, prompt=f"a photo of a {cls}",
                       references=refs[:t] + refs[t + 1:], target=refs[t], class_token=cls,
                       identifier_prompt=f"a photo of {IDENTIFIER} {cls}")
                for t in range(len(refs))
            ]
        if not by_group:
            raise ConfigError(f"folder benchmark: no <group>/<image> files under {self.path}")
        return round_robin(by_group)


# ------------------------------------------------------------------------------------------------ MRBench release


def _check_release_file(release: Path, path: Path, columns: list[str]) -> None:
    """Raise a :class:`ConfigError` saying who wrote the release and what to do when ``path`` (a release data file)
    lacks a column this reader needs or holds images in a layout it does not know. Both release formats are read:
    2 (``image`` as the Hugging Face Image struct) and 1 (plain binary)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mrbench.curation.release import IMAGE_TYPE, RELEASE_FORMAT

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"mrbench: {path} is not a readable parquet file ({e}); `mrbench release verify "
                          f"{release}` lists what is damaged") from None
    missing = [c for c in [*columns, "image"] if c not in schema.names]
    image = schema.field("image").type if "image" in schema.names else None
    if not missing and image in (IMAGE_TYPE, pa.binary()):
        return
    try:
        manifest = json.loads((release / "manifest.json").read_text())
        writer = manifest.get("versions", {}).get("mrbench", "?")
        wrote = f"format {manifest.get('format')!r}, written by mrbench {writer}"
    except (OSError, ValueError, AttributeError):
        wrote = "no readable manifest.json"
    what = f"lacks column(s) {missing}" if missing else f"stores image as {image}"
    raise ConfigError(f"mrbench: {path.name} {what}: not a release layout this mrbench reads ({wrote}; this version "
                      f"writes {RELEASE_FORMAT!r} and reads it and 'mrbench-release/1'). Curate it again with this "
                      f"mrbench (mrbench curate --out NEW_FOLDER), or evaluate with the mrbench that wrote it.")


class ReleaseImageStore:
    """Loads release images by id, one parquet row group at a time (a small LRU keeps memory bounded).

    Args:
        files: The release's parquet files to index.
        cache_row_groups: Decoded row groups kept in memory.
    """

    def __init__(self, files: list[Path], cache_row_groups: int = 4, max_pixels: int | None = None) -> None:
        import pyarrow.parquet as pq

        self.max_pixels = max_pixels
        self._where: dict[str, tuple[Path, int, int]] = {}
        for f in files:
            pf = pq.ParquetFile(f)
            for rg in range(pf.num_row_groups):
                ids = pf.read_row_group(rg, columns=["id"]).column("id").to_pylist()
                for i, rid in enumerate(ids):
                    self._where[rid] = (f, rg, i)
        self._cache: OrderedDict[tuple[Path, int], list[bytes]] = OrderedDict()
        self._size = cache_row_groups
        self._lock = threading.Lock()

    def image_bytes(self, image_id: str) -> bytes:
        import pyarrow.parquet as pq

        from mrbench.curation.release import image_bytes

        f, rg, i = self._where[image_id]
        with self._lock:
            key = (f, rg)
            if key not in self._cache:
                column = pq.ParquetFile(f).read_row_group(rg, columns=["image"]).column("image")
                self._cache[key] = image_bytes(column)  # the Image struct (format 2) or plain binary (format 1)
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return self._cache[key][i]

    def load(self, image_id: str) -> Image.Image:
        return load_image_file(io.BytesIO(self.image_bytes(image_id)), self.max_pixels)

    def size(self, image_id: str) -> tuple[int, int]:
        from mrbench.images import declared_size

        return declared_size(self.image_bytes(image_id))

    def ref(self, image_id: str, group: str) -> ImageRef:
        return ImageRef(image_id, group, partial(self.load, image_id), partial(self.size, image_id))


@BENCHMARKS.register("mrbench", help="an MRBench release (mrbench:RELEASE_DIR), split held-in or held-out")
class MRBenchRelease(Benchmark):
    """A split of a release made by ``mrbench curate``: one sample per target image.

    The prompt is the target's caption. The class token (for DreamBooth-style prompts) is the class noun of the
    group's category (``CATEGORY_CLASS``: person, character, style, object), never its tag (an identity's name); the
    identifier prompt is ``"<caption>, sks <class>"``.
    """

    name = "mrbench"
    version = "mrbench/2"  # 2: class token from the category, not the tag
    splits = ("held_out", "held_in")

    def _build(self) -> list[Sample]:
        import pyarrow.parquet as pq

        files = sorted((self.path / "data").glob(f"{self.split}-*.parquet"))
        if not files:
            raise ConfigError(_no_split_message(self.path, self.split))
        columns = ["id", "caption", "tags", "category", "group", "split", "role"]
        for f in files:
            _check_release_file(self.path, f, columns)
        rows_by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for f in files:
            for row in pq.read_table(f, columns=columns).to_pylist():
                rows_by_group[row["group"]].append(row)
        store = ReleaseImageStore(files, max_pixels=self.max_image_pixels)
        by_group: dict[str, list[Sample]] = {}
        for gid in sorted(rows_by_group):
            rows = sorted(rows_by_group[gid], key=lambda r: r["id"])
            targets = [r for r in rows if r["role"] == "target"]
            refs = [store.ref(r["id"], gid) for r in rows if r["role"] == "reference"]
            samples = []
            for t in targets:
                cls = CATEGORY_CLASS.get(t["category"] or "", CATEGORY_CLASS["subject"])
                caption = t["caption"] or ""
                samples.append(Sample(
                    id=t["id"], group=gid, split=self.split, prompt=caption, references=refs,
                    target=store.ref(t["id"], gid), class_token=cls,
                    identifier_prompt=_clean(f"{caption}, {IDENTIFIER} {cls}") if cls else caption,
                    category=t["category"] or "",
                ))
            if samples:
                by_group[gid] = samples
        return round_robin(by_group)


def _no_split_message(path: Path, split: str) -> str:
    """Why a release folder has no ``split`` files: another kind of folder, a release without that split (what it
    does hold), or no release at all."""
    from mrbench.layout import folder_hint

    hint = folder_hint(path)
    if hint:
        return f"mrbench:{path}: {hint}"
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            rows = json.loads(manifest.read_text()).get("rows")
        except (OSError, ValueError, AttributeError):
            rows = None
        held = sorted({f.name.split("-", 1)[0] for f in (path / "data").glob("*.parquet")})
        return (f"mrbench:{path}: this release has no {split} images (it holds {rows} images"
                f"{' in ' + ', '.join(held) if held else ''}); its curation made no {split} group: see the run's "
                "report.html, or evaluate another split with --split")
    return f"mrbench:{path}: no release here (no manifest.json and no data/{split}-*.parquet)"


def parse_benchmark_arg(text: str) -> tuple[str, str]:
    """``NAME:PATH`` -> (name, path). A bare path is a release folder (``mrbench``) or, when it holds
    ``prompts_and_classes.txt``, DreamBench."""
    name, sep, path = text.partition(":")
    if sep and name in benchmarks():
        return name, path
    p = Path(text)
    if (p / "prompts_and_classes.txt").is_file():
        return "dreambench", text
    if (p / "data").is_dir():
        return "mrbench", text
    if sep:
        benchmarks().entry(name)  # raises "unknown benchmark ...; did you mean"
    from mrbench.layout import folder_hint

    hint = f" ({folder_hint(p)})" if folder_hint(p) else ""
    raise ConfigError(f"cannot tell which benchmark {text!r} is{hint}; write NAME:PATH (NAME in "
                      f"{', '.join(benchmarks().names())})")


def build_benchmark(text: str, split: str | None = None, seed: int = 0, images_per_prompt: int = 4,
                    limit: int | None = None, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Benchmark:
    """Build the benchmark named by ``text`` (``dreambench:PATH``, ``mrbench:RELEASE``, ``folder:PATH``)."""
    name, path = parse_benchmark_arg(text)
    cls = benchmarks().get(name)
    return cls(path, split=split, seed=seed, images_per_prompt=images_per_prompt, limit=limit,
               max_image_pixels=max_image_pixels)


__all__ = [
    "Benchmark", "BenchmarkSpec", "CocoCaptions", "DreamBench", "FolderBenchmark", "MRBenchRelease", "ReleaseImageStore",
    "build_benchmark", "parse_benchmark_arg", "parse_dreambench_prompts", "normalize_split",
]
