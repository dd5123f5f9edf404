"""Benchmarks: fixed, versioned sets of samples (references, target, prompt) plus seeds.

- ``mrbench:RELEASE`` -- the held-in or held-out split of a release written by ``mrbench curate``: one sample per
  target image, its group's references, the target's leak-free caption as prompt (the release's ``prompt`` column:
  every tag mention replaced by its noun, "a person", so a base model's knowledge of a name earns nothing).
- ``dreambench:PATH`` -- DreamBench in its published layout (``<subject>/*.jpg`` + ``prompts_and_classes.txt``):
  30 subjects x 25 prompt templates (object or live-subject list), class tokens from the file. DreamBench has no
  held-out target; MRBench rotates one: prompt ``p`` of a subject uses the subject's ``p mod n``-th photo (sorted by
  file name) as the target and the other photos as references, so every photo serves as target and the
  comparison with the target is always against an image the generator did not see.
- ``coco:PATH`` -- COCO as IP-Adapter (arXiv 2308.06721, Sec. 4.2, Table 1) ran it and EasyRef (arXiv 2412.09618,
  Table 2, whose other rows are IP-Adapter's) copied it: every image of COCO 2017 val (5,000), in its published
  layout (``annotations/captions_val2017.json`` + ``val2017/<file_name>``), is the single image prompt and the target;
  the generator gets the image alone (prompt mode ``image-only``, the default) and 4 images per sample; CLIP-I / DINO-I
  compare with that image, CLIP-T with its caption (first caption: lowest annotation id). ``prompt=raw`` gives the
  caption as the text prompt too. Samples are in a seeded random order (``COCO_ORDER_SEED``), so ``--limit N``
  evaluates a seeded random subsample of N images.
- ``folder:PATH`` -- any folder of ``<group>/<images>``: every image takes a turn as target, the rest of its group are
  the references, prompt ``a photo of a <class>`` (class from an optional ``classes.csv``: ``group,class``).

Prompt modes (``prompt``): ``leak-free`` (no identity named: the release's masked captions; DreamBench's and
folder's class-noun templates), ``raw`` (the text as the source wrote it: a release's caption, COCO's caption) and
``image-only`` (an empty prompt; CLIP-T then scores the text the sample is about). Each benchmark has its default
(COCO: image-only, the others: leak-free); the spec records the mode.

A benchmark spec records its version, the fingerprint of its sample list and image bytes, seeds and images per prompt, and the
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

from mrbench.config import ConfigError
from mrbench.evaluation.config import EvalConfig
from mrbench.evaluation.generator import ImageRef, Sample
from mrbench.evaluation.registry import BENCHMARKS, benchmarks

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
IDENTIFIER = "sks"  # DreamBooth's rare-token identifier
# The class noun of a release group, from its tag category: what DreamBooth-style prompts call the subject. Never the
# tag itself -- a celebrity's name would give the identity away as text.
CATEGORY_CLASS = {"celebrity": "person", "character": "character", "style": "style", "subject": "object"}
PROMPT_MODES = ("leak-free", "raw", "image-only")


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
        fingerprint: sha256 of the full sample list (ids, prompts, reference and target ids) and of the sha256 of
            every real image's bytes (two copies with the same names and other pixels never share a table).
        metric_encoders: Metric -> encoder the benchmark's convention uses when the metric names none.
        prompt: The prompt mode evaluated (``leak-free``, ``raw``, ``image-only``).
        prompt_source: Where leak-free prompts came from, when a benchmark has a choice (a release: ``release``,
            its ``prompt`` column, or ``tags_column`` for releases written before it).
        headline_field: The metric field the benchmark's published numbers use (``all`` on DreamBench).
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
    prompt: str = "leak-free"
    prompt_source: str = ""
    headline_field: str = "target"

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.images_per_prompt)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "path": self.path, "split": self.split, "seed": self.seed,
            "seeds": self.seeds, "images_per_prompt": self.images_per_prompt, "limit": self.limit,
            "num_samples": self.num_samples, "fingerprint": self.fingerprint, "metric_encoders": dict(self.metric_encoders),
            "prompt": self.prompt, "headline_field": self.headline_field,
            **({"prompt_source": self.prompt_source} if self.prompt_source else {}),
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
        prompt: Prompt mode (:data:`PROMPT_MODES`); None or ``auto``: the benchmark's default.
        max_image_pixels: Images declaring more pixels are never decoded (the runner fails their samples by name).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("test",)
    # Encoders of the benchmark's own metric convention (metric -> encoder; with --profile tiny, the tiny encoder's
    # options that mirror it). The EasyRef paper scores DINO-I with DINOv2-Small.
    metric_encoders: ClassVar[dict[str, str]] = {"dino_i": "dino"}
    tiny_encoder_args: ClassVar[dict[str, dict[str, Any]]] = {"dino_i": {"variant": "v2"}}
    default_prompt: ClassVar[str] = "leak-free"
    headline_field: ClassVar[str] = "target"  # the .target column: the EasyRef paper scores the held-out target

    def __init__(self, path: str | Path, split: str | None = None, seed: int = 0, images_per_prompt: int = 4,
                 limit: int | None = None, prompt: str | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.path = Path(path)
        self.max_image_pixels = max_image_pixels
        split = normalize_split(split) if split else self.splits[0]
        if split not in self.splits:
            raise ConfigError(f"benchmark {self.name!r} has splits {', '.join(self.splits)}; got {split!r}")
        if images_per_prompt < 1:
            raise ConfigError("images_per_prompt must be >= 1")
        if limit is not None and limit < 1:
            raise ConfigError("limit must be >= 1")
        prompt = self.default_prompt if prompt in (None, "auto") else prompt
        if prompt not in PROMPT_MODES:
            raise ConfigError(f"prompt must be auto or one of {', '.join(PROMPT_MODES)}; got {prompt!r}")
        self.prompt_mode = prompt
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
        self._image_files: dict[str, Path] = {}  # real image id -> file (builders of file-based benchmarks fill it)
        self._digests: dict[str, str] | None = None
        self.prompt_source = ""

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

    def texts(self, raw: str, leak_free: str) -> tuple[str, str]:
        """(prompt, caption) of a sample whose text is ``raw`` as written and ``leak_free`` with no identity named,
        under the benchmark's prompt mode; the caption (what CLIP-T scores) is set only when it is not the prompt."""
        text = raw if self.prompt_mode == "raw" else leak_free
        return ("", text) if self.prompt_mode == "image-only" else (text, "")

    def image_digests(self) -> dict[str, str]:
        """sha256 of every real image's bytes by image id (files hashed once per benchmark object)."""
        self.all_samples()  # a release's builder fills the digests from its sha256 column
        if self._digests is None:
            from mrbench.shards import sha256_file

            self._digests = {i: sha256_file(f) for i, f in sorted(self._image_files.items())}
        return self._digests

    def spec(self) -> BenchmarkSpec:
        blob = json.dumps({"samples": [s.to_dict() for s in self.all_samples()], "images": self.image_digests()},
                          sort_keys=True)
        return BenchmarkSpec(
            name=self.name, version=self.version, path=str(self.path), split=self.split, seed=self.seed,
            images_per_prompt=self.images_per_prompt, limit=self.limit, num_samples=len(self.samples()),
            fingerprint=hashlib.sha256(blob.encode()).hexdigest(), metric_encoders=dict(self.metric_encoders),
            prompt=self.prompt_mode, headline_field=self.headline_field, prompt_source=self.prompt_source,
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
    version = "dreambench/2"  # 2: image bytes in the fingerprint
    splits = ("test",)
    # DreamBench's DINO-I (Ruiz et al.): DINO v1 ViT-S/16 CLS; its real-image ceiling 0.774 is on that scale.
    metric_encoders = {"dino_i": "dino-v1"}
    tiny_encoder_args = {"dino_i": {"variant": "v1"}}
    # DreamBooth's DINO / CLIP-I average over every real photo of the subject: the .all field is the published column.
    headline_field = "all"

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
            self._image_files.update({r.id: f for r, f in zip(refs, files)})
            cls = parsed.classes[subject]
            samples = []
            for p, template in enumerate(parsed.templates(subject)):
                t = p % len(refs)
                text = _clean(template.format("", cls))  # class nouns only: raw and leak-free are the same
                prompt, caption = self.texts(text, text)
                samples.append(Sample(
                    id=f"{subject}/{p:02d}", group=subject, split=self.split,
                    prompt=prompt, references=refs[:t] + refs[t + 1:], target=refs[t],
                    class_token=cls, identifier_prompt=_clean(template.format(IDENTIFIER, cls)),
                    category="live" if parsed.is_live(subject) else "object", caption=caption,
                ))
            by_group[subject] = samples
        return round_robin(by_group)


# ------------------------------------------------------------------------------------------------ COCO

COCO_ORDER_SEED = 0  # the seeded order of COCO samples (part of the benchmark version: changing it is coco/2)


@BENCHMARKS.register("coco", help="COCO 2017 val (coco:PATH): the image alone as the prompt (IP-Adapter's protocol), "
                                  "CLIP-T against its caption; prompt=raw adds the caption")
class CocoCaptions(Benchmark):
    """COCO 2017 val as IP-Adapter's quantitative comparison ran it and EasyRef's COCO table (its Table 2) reuses it.

    What the protocol is, and where it comes from:

    - IP-Adapter (Ye et al., arXiv 2308.06721, Sec. 4.2.2): the COCO2017 validation set, 5,000 images with captions;
      4 images generated per sample from the image prompt (20,000 per method); CLIP-I is the CLIP image-embedding
      similarity of a generation with the image prompt, CLIP-T the CLIPScore of a generation with the caption of
      the image prompt. So: every val image (no subset), image-only prompting, CLIP-T against the caption.
    - EasyRef (Zong et al., arXiv 2412.09618, Table 2 "generation conditioned by COCO validation images"): its rows
      for the other methods are IP-Adapter's Table 1 numbers, so its setting is IP-Adapter's; it adds DINO-I and says
      its row uses "the checkpoint trained by single-reference finetuning" (see the README for the --model-args).

    Each image is its own group: the ceiling row has nothing to draw (``no_candidate``), the chance row draws another
    image. Images listed in the annotations but missing from ``val2017/`` are left out with a warning (the
    fingerprint records the list actually evaluated).
    """

    name = "coco"
    version = "coco/2"  # 2: image-only prompt with CLIP-T against the caption by default; image bytes in the fingerprint
    splits = ("val2017",)
    default_prompt = "image-only"
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
            self._image_files[ref.id] = f
            prompt, caption = self.texts(captions[iid][1], captions[iid][1])  # no tag list: the caption names no one
            samples.append(Sample(id=f"coco/{iid}", group=ref.group, split=self.split, prompt=prompt,
                                  references=[ref], target=ref, category="coco", caption=caption))
        return samples


# ------------------------------------------------------------------------------------------------ folder


@BENCHMARKS.register("folder", help="any folder of <group>/<images> (folder:PATH): each image in turn is the target")
class FolderBenchmark(Benchmark):
    """Groups are sub-folders; every image is once the target with the rest of its group as references.

    Groups with a single image still yield a sample (no references): generators that need references report it as a
    failed row, and real-image rows show what a group without a second image gives.
    """

    name = "folder"
    version = "folder/2"  # 2: image bytes in the fingerprint
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
            self._image_files.update({r.id: f for r, f in zip(refs, files)})
            cls = classes.get(group, group.replace("_", " "))
            prompt, caption = self.texts(f"a photo of a {cls}", f"a photo of a {cls}")
            by_group[group] = [
                Sample(id=f"{group}/{t:02d}", group=group, split=self.split, prompt=prompt,
                       references=refs[:t] + refs[t + 1:], target=refs[t], class_token=cls,
                       identifier_prompt=f"a photo of {IDENTIFIER} {cls}", caption=caption)
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

    from mrbench.curation.release_format import IMAGE_TYPE, RELEASE_FORMAT

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

        from mrbench.curation.release_format import image_bytes

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

    The prompt is the target's leak-free caption: the release's ``prompt`` column (format 3: every mention of a tag,
    name or alias, found by the crawl's own matcher and replaced by its noun at release time). A release written
    before that column existed gets it here, from the names in its ``tags`` column (the tag list's aliases are not in
    the release, so only names are masked; ``config.json`` records ``prompt_source: tags_column``). ``prompt=raw``
    gives the caption as written. The class token (for DreamBooth-style prompts) is the class noun of the group's
    category (``CATEGORY_CLASS``: person, character, style, object), never its tag; the identifier prompt is
    ``"<prompt>, sks <class>"``, so the LoRA row never sees the name either.
    """

    name = "mrbench"
    version = "mrbench/3"  # 2: class token from the category, not the tag; 3: leak-free prompts, image bytes hashed
    splits = ("held_out", "held_in")

    def _build(self) -> list[Sample]:
        import pyarrow.parquet as pq

        files = sorted((self.path / "data").glob(f"{self.split}-*.parquet"))
        if not files:
            raise ConfigError(_no_split_message(self.path, self.split))
        columns = ["id", "caption", "tags", "category", "group", "split", "role", "sha256"]
        for f in files:
            _check_release_file(self.path, f, columns)
        rows_by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for f in files:
            names = pq.read_schema(f).names
            for row in pq.read_table(f, columns=columns + [c for c in ("prompt",) if c in names]).to_pylist():
                rows_by_group[row["group"]].append(row)
        all_rows = [r for rows in rows_by_group.values() for r in rows]
        self._digests = {r["id"]: r["sha256"] or "" for r in sorted(all_rows, key=lambda r: r["id"])}
        leak_free = _leak_free_prompts(all_rows)
        self.prompt_source = "release" if all(r.get("prompt") is not None for r in all_rows) else "tags_column"
        store = ReleaseImageStore(files, max_pixels=self.max_image_pixels)
        by_group: dict[str, list[Sample]] = {}
        for gid in sorted(rows_by_group):
            rows = sorted(rows_by_group[gid], key=lambda r: r["id"])
            targets = [r for r in rows if r["role"] == "target"]
            refs = [store.ref(r["id"], gid) for r in rows if r["role"] == "reference"]
            samples = []
            for t in targets:
                cls = CATEGORY_CLASS.get(t["category"] or "", CATEGORY_CLASS["subject"])
                prompt, caption = self.texts(t["caption"] or "", leak_free[t["id"]])
                text = prompt or caption
                samples.append(Sample(
                    id=t["id"], group=gid, split=self.split, prompt=prompt, references=refs,
                    target=store.ref(t["id"], gid), class_token=cls,
                    identifier_prompt=_clean(f"{text}, {IDENTIFIER} {cls}") if text else f"{IDENTIFIER} {cls}",
                    category=t["category"] or "", caption=caption,
                ))
            if samples:
                by_group[gid] = samples
        return round_robin(by_group)


def _leak_free_prompts(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Row id -> leak-free prompt: the release's ``prompt`` column, or (a release without it) the caption with the
    tag names of the release's ``tags`` column masked by the crawl's matcher (each tag's category is that of a group
    it named first; aliases are unknown here)."""
    from mrbench.curation.tags import CATEGORIES, Tag, TagList, TagMatcher

    if all(r.get("prompt") is not None for r in rows):
        return {r["id"]: r["prompt"] for r in rows}
    category: dict[str, str] = {}
    for r in rows:
        for i, t in enumerate(r["tags"] or []):
            c = r["category"] if i == 0 and r["category"] in CATEGORIES else "subject"
            if i == 0 or t not in category:
                category[t] = c
    try:
        matcher = TagMatcher(TagList([Tag(t, c) for t, c in sorted(category.items())]))
    except ValueError:  # two tags normalising alike: mask each row with its own tags alone
        matcher = None
    out = {}
    for r in rows:
        if r.get("prompt") is not None:
            out[r["id"]] = r["prompt"]
            continue
        m = matcher or TagMatcher(TagList([Tag(t, category[t]) for t in dict.fromkeys(r["tags"] or [])]))
        out[r["id"]] = m.mask(r["caption"] or "")
    return out


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
                    limit: int | None = None, prompt: str | None = None,
                    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Benchmark:
    """Build the benchmark named by ``text`` (``dreambench:PATH``, ``mrbench:RELEASE``, ``folder:PATH``), with
    prompt mode ``prompt`` (None / ``auto``: the benchmark's default)."""
    name, path = parse_benchmark_arg(text)
    cls = benchmarks().get(name)
    kwargs: dict[str, Any] = {"max_image_pixels": max_image_pixels}
    if prompt not in (None, "auto"):  # third-party benchmarks written before prompt modes take no such argument
        kwargs["prompt"] = prompt
    return cls(path, split=split, seed=seed, images_per_prompt=images_per_prompt, limit=limit, **kwargs)


__all__ = [
    "Benchmark", "BenchmarkSpec", "CocoCaptions", "DreamBench", "FolderBenchmark", "MRBenchRelease", "ReleaseImageStore",
    "build_benchmark", "parse_benchmark_arg", "parse_dreambench_prompts", "normalize_split",
]
