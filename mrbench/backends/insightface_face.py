"""Face detection + ArcFace 512-d identity via insightface (``insightface``) and a tiny random ONNX pack
(``insightface-tiny``) that runs through the very same insightface code (SCRFD detector, 5-point alignment,
ArcFace recogniser).

Weights: model packs ``antelopev2`` (SCRFD-10G + glintr100, InstantID / PuLID convention) or ``buffalo_l``
(SCRFD-10G + w600k_r50, IP-Adapter-FaceID convention) from ``root`` (``ROOT/models/PACK`` or ``ROOT/PACK``), else
``$MRBENCH_WEIGHTS_DIR/insightface/models/PACK``, else ``~/.insightface/models/PACK``. insightface's own downloader
is never called: the pack folder is passed to it directly.

Pipeline (insightface's, deterministic): the RGB image is turned into BGR; SCRFD runs on the image letterboxed into
``det_size`` (default 640x640, aspect kept, padded bottom/right), threshold ``det_thresh``, NMS 0.4; the largest face
(box area) is aligned to 112x112 from its 5 landmarks (similarity transform to the ArcFace template) and embedded;
``normed_embedding`` (L2-normalised) is returned.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mrbench.backends import weights as W
from mrbench.backends.base import BackendInfo, FaceEncoder, FaceResult
from mrbench.backends.torch_common import pkg_version, to_rgb


@dataclass
class InsightFaceConfig:
    """Options of the insightface encoder.

    Attributes:
        pack: Model pack name (``antelopev2`` or ``buffalo_l``; any other folder name is accepted too).
        root: insightface root (holding ``models/PACK``) or a folder holding ``PACK`` directly.
        det_size: Detector input (width, height).
        det_thresh: Detector score threshold.
        device: ``cuda`` uses onnxruntime's CUDA provider when installed; None picks it when available.
        dtype, batch_size: Accepted for a uniform interface (the ONNX models run in their own precision, one image
            at a time, as insightface does).
    """

    pack: str = "antelopev2"
    root: str | None = None
    det_size: tuple[int, int] = (640, 640)
    det_thresh: float = 0.5
    device: str | None = None
    dtype: str = "float32"
    batch_size: int = 16

    def __post_init__(self) -> None:
        self.det_size = (int(self.det_size[0]), int(self.det_size[1]))


def resolve_pack(pack: str, root: str | None) -> Path:
    """The folder of ONNX files of ``pack`` (also accepts the nested ``PACK/PACK`` layout of some zips)."""
    looked = []
    direct = Path(pack).expanduser()
    candidates = [direct] if direct.is_dir() else [base / pack for base in W.insightface_root(root)]
    for c in candidates:
        for folder in (c, c / pack):
            if folder.is_dir() and any(folder.glob("*.onnx")):
                return folder
        looked.append(str(c))
    raise W.missing_weights(
        f"insightface model pack {pack!r} (detection + ArcFace recognition ONNX files)", looked,
        f"unzip {pack}.zip from the insightface model releases into ~/.insightface/models/{pack}/ (or "
        f"$MRBENCH_WEIGHTS_DIR/insightface/models/{pack}/), or pass root=FOLDER holding models/{pack}/.")


def _providers(device: str | None) -> tuple[list[str], int]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    want_cuda = (device is None or str(device).startswith("cuda")) and "CUDAExecutionProvider" in available
    if device is not None and str(device).startswith("cuda") and not want_cuda:
        raise ValueError("device=cuda requested but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    return (["CUDAExecutionProvider", "CPUExecutionProvider"], 0) if want_cuda else (["CPUExecutionProvider"], -1)


class _InsightFaceBase(FaceEncoder):
    def _load(self, folder: Path, cfg: InsightFaceConfig) -> None:
        from insightface.app import FaceAnalysis

        providers, ctx_id = _providers(cfg.device)
        app = FaceAnalysis(name=str(folder), allowed_modules=["detection", "recognition"], providers=providers)
        if "recognition" not in app.models:
            raise W.missing_weights(f"ArcFace recognition model in {folder}", [str(folder)],
                                    "the pack folder must hold the recognition ONNX (glintr100.onnx / w600k_r50.onnx).")
        app.prepare(ctx_id=ctx_id, det_thresh=cfg.det_thresh, det_size=cfg.det_size)
        self._app = app
        self.dim = int(app.models["recognition"].output_shape[-1])

    def analyse(self, image: Image.Image) -> tuple[list[Any], np.ndarray]:
        """insightface's own answer for one image: its ``Face`` objects (box, score, 5 landmarks ``kps``,
        ``normed_embedding``) in insightface's order (detector score, best first), and the BGR pixels they refer to."""
        bgr = np.ascontiguousarray(np.asarray(to_rgb(image))[:, :, ::-1])
        with warnings.catch_warnings():
            # insightface's alignment calls a scikit-image API deprecated in 0.26; nothing for our users to act on.
            warnings.filterwarnings("ignore", category=FutureWarning, module="insightface")
            return list(self._app.get(bgr)), bgr

    def faces(self, images: Sequence[Image.Image]) -> list[FaceResult]:
        """One :class:`FaceResult` per image: all boxes, and the largest face's box, score and ArcFace embedding."""
        results = []
        for image in images:
            found, bgr = self.analyse(image)
            h, w = bgr.shape[:2]
            boxes = []
            for f in found:
                x1, y1, x2, y2 = (float(v) for v in f.bbox)
                boxes.append((max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2), float(f.det_score)))
            if not found:
                results.append(FaceResult(num_faces=0))
                continue
            areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
            k = int(np.argmax(areas))
            emb = np.asarray(found[k].normed_embedding, dtype=np.float32)
            results.append(FaceResult(num_faces=len(found), box=boxes[k][:4], score=boxes[k][4], embedding=emb,
                                      all_boxes=boxes))
        return results


class InsightFaceEncoder(_InsightFaceBase):
    """insightface SCRFD detection + ArcFace 512-d identity of the largest face (``antelopev2`` / ``buffalo_l``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.config = cfg = InsightFaceConfig(**kwargs)
        folder = resolve_pack(cfg.pack, cfg.root)
        self._load(folder, cfg)
        self.info = BackendInfo(name="insightface", weights=f"{cfg.pack} ({folder})",
                                version=pkg_version("insightface", "onnxruntime"))


# ----------------------------------------------------------------------------------------------------------------
# Tiny random pack: an SCRFD-shaped detector (3 strides x 2 anchors, scores/boxes/5 landmarks, 9 outputs) and an
# ArcFace-shaped recogniser (112x112 -> 512), as ONNX graphs built with onnx.helper from a seed.

TINY_PACK_CFG: dict[str, Any] = {"det_channels": 8, "rec_channels": 16, "rec_dim": 512, "strides": (8, 16, 32),
                                 "anchors": 2, "det_size": (64, 64)}


def _init(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return (rng.standard_normal(shape) * scale / np.sqrt(fan_in)).astype(np.float32)


def build_tiny_scrfd(seed: int, cfg: dict[str, Any] = TINY_PACK_CFG) -> bytes:
    """A seeded SCRFD-shaped detection graph (insightface routes any ONNX with >= 5 outputs to SCRFD)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c, a = cfg["det_channels"], cfg["anchors"]
    nodes, inits, outputs = [], [], {"score": [], "bbox": [], "kps": []}
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])
    for s in cfg["strides"]:
        inits.append(numpy_helper.from_array(_init(rng, c, 3, s, s), f"stem{s}.w"))
        nodes += [helper.make_node("Conv", ["input.1", f"stem{s}.w"], [f"stem{s}"], name=f"conv_stem{s}",
                                   kernel_shape=[s, s], strides=[s, s]),
                  helper.make_node("Relu", [f"stem{s}"], [f"feat{s}"], name=f"relu_stem{s}")]
        for head, k in (("score", 1), ("bbox", 4), ("kps", 10)):
            w, b = f"{head}{s}.w", f"{head}{s}.b"
            inits += [numpy_helper.from_array(_init(rng, a * k, c, 1, 1), w),
                      numpy_helper.from_array(np.zeros(a * k, np.float32), b)]
            nodes += [helper.make_node("Conv", [f"feat{s}", w, b], [f"{head}{s}.c"], name=f"conv_{head}{s}", kernel_shape=[1, 1]),
                      helper.make_node("Transpose", [f"{head}{s}.c"], [f"{head}{s}.t"], name=f"tr_{head}{s}", perm=[0, 2, 3, 1])]
            inits.append(numpy_helper.from_array(np.array([-1, k], np.int64), f"{head}{s}.shape"))
            last = f"{head}{s}.r"
            nodes.append(helper.make_node("Reshape", [f"{head}{s}.t", f"{head}{s}.shape"], [last], name=f"reshape_{head}{s}"))
            if head == "score":
                nodes.append(helper.make_node("Sigmoid", [last], [f"score_{s}"], name=f"sigmoid{s}"))
            elif head == "bbox":  # distances to the box sides must be positive: exp
                nodes.append(helper.make_node("Exp", [last], [f"bbox_{s}"], name=f"exp{s}"))
            else:
                nodes.append(helper.make_node("Identity", [last], [f"kps_{s}"], name=f"id{s}"))
            outputs[head].append(helper.make_tensor_value_info(f"{head}_{s}", TensorProto.FLOAT, [f"n{s}", k]))
    graph = helper.make_graph(nodes, "tiny_scrfd", [x], outputs["score"] + outputs["bbox"] + outputs["kps"], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mrbench-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_tiny_arcface(seed: int, cfg: dict[str, Any] = TINY_PACK_CFG) -> bytes:
    """A seeded ArcFace-shaped recognition graph: (N, 3, 112, 112) -> (N, rec_dim)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed + 1_000_003)
    c, d = cfg["rec_channels"], cfg["rec_dim"]
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", d])
    inits = [numpy_helper.from_array(_init(rng, c, 3, 8, 8), "conv.w"),
             numpy_helper.from_array(_init(rng, c * 4, c, 3, 3), "conv2.w"),
             numpy_helper.from_array(_init(rng, c * 4, d), "fc.w"),
             numpy_helper.from_array(np.zeros(d, np.float32), "fc.b")]
    nodes = [
        helper.make_node("Conv", ["input.1", "conv.w"], ["c1"], name="conv_1", kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu_1"),
        helper.make_node("Conv", ["r1", "conv2.w"], ["c2"], name="conv_2", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu_2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["embedding"], name="fc"),
    ]
    graph = helper.make_graph(nodes, "tiny_arcface", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mrbench-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass
class TinyInsightFaceConfig(InsightFaceConfig):
    """Options of the tiny random insightface pack (``pack``/``root`` are ignored).

    Attributes:
        seed: Seeds both graphs.
        pack_cfg: Overrides of :data:`TINY_PACK_CFG`.
    """

    seed: int = 0
    det_size: tuple[int, int] = (64, 64)
    pack_cfg: dict[str, Any] = field(default_factory=dict)


class TinyInsightFaceEncoder(_InsightFaceBase):
    """A tiny random insightface-shaped pack (SCRFD-like detector + ArcFace-like recogniser), seeded."""

    def __init__(self, **kwargs: Any) -> None:
        self.config = cfg = TinyInsightFaceConfig(**kwargs)
        pack_cfg = {**TINY_PACK_CFG, **cfg.pack_cfg, "det_size": cfg.det_size}
        # insightface loads packs from files (and re-reads the detector per input size), so the graphs live in a
        # temporary folder owned by this object.
        self._tmp = tempfile.TemporaryDirectory(prefix="mrbench-insightface-tiny-")
        folder = Path(self._tmp.name)
        (folder / "det_tiny.onnx").write_bytes(build_tiny_scrfd(cfg.seed, pack_cfg))
        (folder / "rec_tiny.onnx").write_bytes(build_tiny_arcface(cfg.seed, pack_cfg))
        self._load(folder, cfg)
        self.info = BackendInfo(name="insightface-tiny", weights=f"random(seed={cfg.seed}, {pack_cfg})",
                                version=pkg_version("insightface", "onnxruntime", "onnx"), random_weights=True)
