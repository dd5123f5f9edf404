"""Tiny random backends of every family: deterministic per seed, right shapes, L2-normalised, flagged random."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mrbench.backends import FaceEncoder, TextImageEncoder, get_detector, get_encoder
from mrbench.backends.coco import COCO_CLASSES

TINY_ENCODERS = [
    ("clip-tiny", {"impl": "open_clip"}, 16),
    ("clip-tiny", {"impl": "hf"}, 16),
    ("dino-tiny", {"variant": "v2"}, 32),
    ("dino-tiny", {"variant": "v1"}, 32),
]
IDS = [f"{n}-{list(kw.values())[0]}" for n, kw, _ in TINY_ENCODERS]


@pytest.mark.parametrize(("name", "kwargs", "dim"), TINY_ENCODERS, ids=IDS)
def test_tiny_encoder_same_seed_same_bits(name: str, kwargs: dict, dim: int, small_images: list[Image.Image]) -> None:
    a = get_encoder(name, seed=0, **kwargs)
    b = get_encoder(name, seed=0, **kwargs)
    c = get_encoder(name, seed=1, **kwargs)
    ea, eb, ec = (e.embed_images(small_images) for e in (a, b, c))
    assert ea.shape == (len(small_images), dim) and a.dim == dim
    assert ea.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(ea, eb), "same seed must give the same embedding bit for bit"
    assert np.abs(ea - ec).max() > 1e-3, "a different seed must give different weights"
    assert a.info.random_weights and a.info.name == name and "seed=0" in a.info.weights


@pytest.mark.parametrize(("name", "kwargs", "dim"), TINY_ENCODERS, ids=IDS)
def test_tiny_encoder_batching_and_modes(name: str, kwargs: dict, dim: int, small_images: list[Image.Image]) -> None:
    whole = get_encoder(name, seed=0, **kwargs).embed_images(small_images)
    pairs = get_encoder(name, seed=0, batch_size=2, **kwargs).embed_images(small_images)
    np.testing.assert_allclose(whole, pairs, atol=1e-5)
    one = get_encoder(name, seed=0, **kwargs).embed_images(small_images[1:2])
    np.testing.assert_allclose(one[0], whole[1], atol=1e-5)
    # L and RGBA inputs are embedded as their RGB conversion
    rgb = get_encoder(name, seed=0, **kwargs).embed_images([im.convert("RGB") for im in small_images[3:]])
    np.testing.assert_allclose(rgb, whole[3:], atol=1e-6)
    assert get_encoder(name, seed=0, **kwargs).embed_images([]).shape == (0, dim)


@pytest.mark.parametrize("impl", ["open_clip", "hf"])
def test_tiny_clip_texts(impl: str) -> None:
    enc = get_encoder("clip-tiny", seed=0, impl=impl)
    assert isinstance(enc, TextImageEncoder)
    texts = ["a photo of a dog", "a red backpack on a table", "a photo of a dog"]
    t = enc.embed_texts(texts)
    assert t.shape == (3, 16) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(t[0], t[2]) and not np.allclose(t[0], t[1])
    assert np.array_equal(t, get_encoder("clip-tiny", seed=0, impl=impl).embed_texts(texts))


def test_tiny_insightface_pack(small_images: list[Image.Image]) -> None:
    a = get_encoder("insightface-tiny", seed=0)
    assert isinstance(a, FaceEncoder) and a.dim == 512 and a.info.random_weights
    ra = a.faces(small_images)
    rb = get_encoder("insightface-tiny", seed=0).faces(small_images)
    assert len(ra) == len(small_images)
    for fa, fb, im in zip(ra, rb, small_images):
        assert fa.num_faces == fb.num_faces == len(fa.all_boxes) > 0  # random detector: scores ~0.5, some pass
        assert fa.embedding is not None and fa.embedding.shape == (512,) and fa.embedding.dtype == np.float32
        assert np.array_equal(fa.embedding, fb.embedding)
        assert abs(float(np.linalg.norm(fa.embedding)) - 1.0) < 1e-5
        x1, y1, x2, y2 = fa.box
        assert 0 <= x1 < x2 <= im.width and 0 <= y1 < y2 <= im.height
        largest = max((b[2] - b[0]) * (b[3] - b[1]) for b in fa.all_boxes)
        assert (x2 - x1) * (y2 - y1) == pytest.approx(largest)
    other = get_encoder("insightface-tiny", seed=1).faces(small_images[:1])[0]
    assert not np.allclose(other.embedding, ra[0].embedding)


def test_tiny_insightface_no_face_gives_null_embedding(small_images: list[Image.Image]) -> None:
    res = get_encoder("insightface-tiny", seed=0, det_thresh=0.999).faces(small_images[:2])
    assert [r.num_faces for r in res] == [0, 0]
    assert all(r.embedding is None and r.box is None for r in res)


def test_tiny_rtdetr(small_images: list[Image.Image]) -> None:
    det = get_detector("rtdetr-tiny", seed=0)
    assert det.info.random_weights
    a = det.detect(small_images)
    b = get_detector("rtdetr-tiny", seed=0, batch_size=2).detect(small_images)
    assert len(a) == len(small_images)
    for da, db, im in zip(a, b, small_images):
        assert da.boxes.shape == (len(da.scores), 4) and da.boxes.dtype == np.float32 and len(da.labels) == len(da.scores)
        assert len(da.scores) > 0 and (da.scores >= 0.5).all()
        assert set(da.labels) <= set(COCO_CLASSES)
        assert (da.boxes[:, 0] >= -1e-3).all() and (da.boxes[:, 2] <= im.width + 1e-3).all()
        assert (da.boxes[:, 1] >= -1e-3).all() and (da.boxes[:, 3] <= im.height + 1e-3).all()
        np.testing.assert_allclose(da.scores, db.scores, atol=1e-5)
        np.testing.assert_allclose(da.boxes, db.boxes, atol=1e-3)
        assert da.labels == db.labels
    assert all(len(d.scores) == 0 for d in get_detector("rtdetr-tiny", seed=0, threshold=0.99).detect(small_images))
