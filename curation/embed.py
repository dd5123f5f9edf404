"""Embed step: per download shard, run the configured models once and cache their outputs as a feature shard.

``embed/shard_{i:05d}.parquet`` holds one row per ok image of download shard ``i``: its image embedding, faces
(images of person categories only) and detections (images whose tag names a COCO class only). Later steps (filters,
index, dedup, grouping, audit) read these files, never the models. A shard is complete when its output, then its
stats, then its marker are written, so a killed run re-embeds only unfinished shards.

The same module embeds plain files for the standalone ``mrbench dedup`` / ``mrbench group`` commands.
"""

from __future__ import annotations

import os

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa

from mrbench.curation.config import CurateConfig, EmbedConfig
from mrbench.curation.inputs import tag_list_identity
from mrbench.log import get_logger, warn_once
from mrbench.records import ImageRecord
from mrbench.shards import read_records
from mrbench.stage import ShardedStep, Step, model_resources
from mrbench.progress import shard_progress
from mrbench.stats import Stats

log = get_logger(__name__)

FEATURE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("embedding", pa.list_(pa.float32())),  # null when no image encoder is configured
        ("num_faces", pa.int32()),  # null when the face encoder did not run on this image
        ("face_box", pa.list_(pa.float32())),  # largest face x1 y1 x2 y2
        ("face_score", pa.float32()),
        ("face_boxes", pa.list_(pa.list_(pa.float32()))),  # every face x1 y1 x2 y2 score
        ("face_embedding", pa.list_(pa.float32())),
        ("det_labels", pa.list_(pa.string())),  # null when the detector did not run on this image
        ("det_scores", pa.list_(pa.float32())),
        ("status", pa.string()),
        ("error_message", pa.string()),
    ]
)


def build_encoder(name: str, options: dict[str, Any] | None = None) -> Any:
    """Build encoder ``name`` with ``options``. A variant whose vectors differ (another view, another crop) is a
    registry name of its own (``mobilenet_v2-flip``), never a default option: one name, one kind of vector."""
    from mrbench.backends import get_encoder

    return get_encoder(name, **(options or {}))


def preflight(config: EmbedConfig) -> dict[str, dict[str, Any]]:
    """Build every configured model once, so missing weights or dependencies fail before any work starts.

    Returns:
        Each model's BackendInfo as a dict (recorded in the run folder).
    """
    from mrbench.backends import get_detector

    infos: dict[str, dict[str, Any]] = {}
    if config.encoder:
        infos["encoder"] = build_encoder(config.encoder, config.encoder_options).info.to_dict()
    if config.face_encoder:
        infos["face_encoder"] = build_encoder(config.face_encoder, config.face_options).info.to_dict()
    if config.detector:
        infos["detector"] = get_detector(config.detector, **config.detector_options).info.to_dict()
    return infos


def decode(data: bytes) -> Any:
    """Bytes -> RGB PIL image, EXIF orientation applied (``mrbench.images`` policy); raises OSError/ValueError for
    undecodable data."""
    from mrbench.images import load_image

    return load_image(data)


def _batches(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _spare_core() -> bool:
    """Whether this process has a CPU core that torch's intra-op threads do not use."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return cores > torch.get_num_threads()


def _forward(encoder: Any, pixels: list[Any]) -> np.ndarray:
    """``TorchImageEncoder.embed_images`` on inputs already preprocessed (by ``EmbedTask._prepare``)."""
    import torch

    from mrbench.backends.torch_common import l2_normalize

    device, dtype = encoder.options.torch_device, encoder.options.torch_dtype
    with torch.inference_mode():
        out = [encoder.forward(px.to(device=device, dtype=dtype)).float().cpu().numpy() for px in pixels]
    return l2_normalize(np.concatenate(out))


class EmbedTask(ShardedStep):
    """Per download shard: image embedding, faces and detections of every ok image (see the module docstring).

    Models are built lazily inside the call, so the task pickles to any executor.
    """

    def __init__(self, config: CurateConfig, run_dir: str | Path, step: Step) -> None:
        super().__init__(config, run_dir, step)
        self._models: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_models"] = {}  # never ship loaded models between processes
        return state

    def _model(self, key: str) -> Any:
        if key not in self._models:
            cfg = self.config.embed
            if key == "encoder":
                self._models[key] = build_encoder(cfg.encoder, cfg.encoder_options)
            elif key == "face":
                self._models[key] = build_encoder(cfg.face_encoder, cfg.face_options)
            else:
                from mrbench.backends import get_detector

                self._models[key] = get_detector(cfg.detector, **cfg.detector_options)
        return self._models[key]

    def process(self, shard: int) -> tuple[pa.Table, Stats]:
        from concurrent.futures import ThreadPoolExecutor

        from mrbench.curation.filters import TagClasses

        cfg = self.config.embed
        classes = TagClasses(self.config, self.layout.cache) if cfg.detector else {}
        download = self.layout.download.output(shard)
        stats = Stats()
        rows: dict[str, list[Any]] = {n: [] for n in FEATURE_SCHEMA.names}
        encoder = self._model("encoder") if cfg.encoder else None  # built here: the reader thread preprocesses with it
        batches = (self._prepare(batch, encoder) for batch in _batches((r for r in read_records(download) if r.ok), cfg.batch_size))
        # With a core that torch's threads leave free, one reader thread reads, decodes and preprocesses the next
        # batch while this one runs the models: PIL's decoding and resizing and torch's tensor ops release the GIL,
        # so they overlap the forward pass instead of adding to it. Without a free core the reader only preempts
        # torch's threads (measured slower than doing the same work in turn), so batches are then prepared inline.
        if _spare_core():
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-read") as reader:
                pending = reader.submit(next, batches, None)
                while (prepared := pending.result()) is not None:
                    pending = reader.submit(next, batches, None)
                    for row in self._embed_batch(*prepared, classes, stats):
                        for k in FEATURE_SCHEMA.names:
                            rows[k].append(row.get(k))
        else:
            for prepared in batches:
                for row in self._embed_batch(*prepared, classes, stats):
                    for k in FEATURE_SCHEMA.names:
                        rows[k].append(row.get(k))
        return pa.table(rows, schema=FEATURE_SCHEMA), stats

    @staticmethod
    def _prepare(batch: list[ImageRecord], encoder: Any) -> tuple[list[ImageRecord], list[Any], list[Any] | None]:
        """Decode a batch (None for undecodable images) and, for torch encoders, build its model inputs: the same
        chunks and tensors ``embed_images`` would build, so the embeddings are the same bit for bit."""
        from mrbench.backends.torch_common import TorchImageEncoder, batched, to_rgb

        images: list[Any] = []
        for rec in batch:
            try:
                images.append(decode(rec.image or b""))
            except (OSError, ValueError, SyntaxError) as e:
                images.append(e)
        pixels = None
        if isinstance(encoder, TorchImageEncoder):
            live = [to_rgb(im) for im in images if not isinstance(im, BaseException)]
            pixels = [encoder.preprocess_batch(chunk) for chunk in batched(live, encoder.options.batch_size)]
        return batch, images, pixels

    def _embed_batch(self, batch: list[ImageRecord], decoded: list[Any], pixels: list[Any] | None,
                     classes: dict[str, str], stats: Stats) -> list[dict[str, Any]]:
        cfg = self.config.embed
        out: list[dict[str, Any]] = []
        images: list[Any] = []
        for rec, im in zip(batch, decoded):
            row: dict[str, Any] = {"id": rec.id, "width": rec.width, "height": rec.height, "status": "ok", "error_message": ""}
            if isinstance(im, BaseException):
                row.update(status="embed_decode_error", error_message=f"{type(im).__name__}: {im}"[:200])
                warn_once(log, "embed_decode_error", f"embed: could not decode {rec.id}: {im}")
                im = None
            images.append(im)
            out.append(row)
        live = [k for k, im in enumerate(images) if im is not None]
        for row in out:
            stats.inc(f"embed/{row['status']}")
        if cfg.encoder and live:
            encoder = self._model("encoder")
            vectors = _forward(encoder, pixels) if pixels is not None else encoder.embed_images([images[k] for k in live])
            for k, v in zip(live, vectors):
                out[k]["embedding"] = v  # a float32 row: arrow converts it whole (no Python float per value)
        faces_for = [k for k in live if batch[k].category in cfg.face_categories] if cfg.face_encoder else []
        if faces_for:
            for k, face in zip(faces_for, self._model("face").faces([images[k] for k in faces_for])):
                out[k].update(
                    num_faces=int(face.num_faces),
                    face_box=None if face.box is None else [float(x) for x in face.box],
                    face_score=None if face.score is None else float(face.score),
                    face_boxes=[[float(x) for x in b] for b in face.all_boxes],
                    face_embedding=None if face.embedding is None else np.asarray(face.embedding, np.float32).tolist(),
                )
                stats.inc("embed/faces_checked")
        det_for = [k for k in live if classes.get(batch[k].tags[0] if batch[k].tags else "")] if cfg.detector else []
        if det_for:
            for k, det in zip(det_for, self._model("detector").detect([images[k] for k in det_for])):
                out[k].update(det_labels=list(det.labels), det_scores=[float(s) for s in det.scores])
                stats.inc("embed/detections_checked")
        shard_progress().add(len(out), failed=sum(row["status"] != "ok" for row in out))  # live bar: rows embedded
        return out


def uses_models(config: CurateConfig) -> bool:
    """Whether the run configures any model (else embed, index and the model-driven rules are off)."""
    cfg = config.embed
    return bool(cfg.encoder or cfg.face_encoder or cfg.detector)


# The detector runs on images whose tag names a COCO class: the tag list's aliases and filters.object_classes say which.
EMBED_STEP = Step("embed", EmbedTask, after="download", reads=("download",), enabled=uses_models,
                  drops=(("embed", ("embed_decode_error",)),), frees_models=True,
                  settings=("embed", "filters.object_classes"), inputs=tag_list_identity,
                  resources=model_resources)


@dataclass
class FileEmbeddings:
    """Embeddings of image files: one entry per file (``vectors`` rows only for ``status == "ok"``)."""

    paths: list[str]
    status: list[str]
    error_message: list[str]
    resolution: list[int]
    vectors: np.ndarray  # (number of ok files, D)
    faces: bool = False  # face embeddings (the largest face of each file), not whole-image ones

    @property
    def ok_index(self) -> np.ndarray:
        return np.flatnonzero(np.array([s == "ok" for s in self.status], bool))


def embed_files(encoder: Any, paths: Iterable[str | Path], batch_size: int = 32, progress: Any = None) -> FileEmbeddings:
    """Embed image files and folders (recursive) for the standalone commands; errors are rows, not crashes.

    Image encoders embed the whole image; face encoders embed the largest face (``no_face`` when none is found).
    """
    from mrbench.backends import FaceEncoder
    from mrbench.backends.files import find_images, read_image

    files = find_images(paths)
    is_face = isinstance(encoder, FaceEncoder)
    out = FileEmbeddings([str(p) for p in files], [], [], [], np.zeros((0, 0), np.float32), faces=is_face)
    vectors: list[np.ndarray] = []
    for chunk in _batches(files, batch_size):
        images, where = [], []
        for path in chunk:
            image, status, message = read_image(path)
            out.status.append(status)
            out.error_message.append(message or "")
            out.resolution.append(image.width * image.height if image is not None else 0)
            if image is not None:
                images.append(image.convert("RGB"))
                where.append(len(out.status) - 1)
        if images and is_face:
            for idx, face in zip(where, encoder.faces(images)):
                if face.embedding is None:
                    out.status[idx], out.error_message[idx] = "no_face", "no face detected"
                else:
                    vectors.append(np.asarray(face.embedding, np.float32))
        elif images:
            vectors.extend(np.asarray(encoder.embed_images(images), np.float32))
        if progress:
            progress(len(chunk))
    dim = getattr(encoder, "dim", 0)
    out.vectors = np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
    return out
