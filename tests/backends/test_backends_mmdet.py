"""mmdet backends: fail fast without mmdet; with it (``make install-mmdet``), a tiny RetinaNet from a config dict."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrbench.backends import MissingWeightsError, get_detector
from mrbench.backends.coco import COCO_CLASSES
from mrbench.backends.mmdet_backend import MMDetUnavailableError


def _mmdet_importable() -> bool:
    if importlib.util.find_spec("mmdet") is None:
        return False
    try:
        import mmcv.ops  # noqa: F401
        import mmdet  # noqa: F401
    except (ImportError, AssertionError):
        return False
    return True


HAVE_MMDET = _mmdet_importable()
needs_mmdet = pytest.mark.skipif(not HAVE_MMDET, reason="mmdet not installed (optional: `make install-mmdet` builds "
                                 "mmcv once and caches the wheel; `make test` installs it when cached)")


@pytest.mark.skipif(HAVE_MMDET, reason="mmdet is installed here")
@pytest.mark.parametrize("name", ["mmdet", "mmdet-tiny"])
def test_without_mmdet_fails_fast_with_install_hint(name: str) -> None:
    with pytest.raises(MMDetUnavailableError, match="make install-mmdet"):
        get_detector(name)


@needs_mmdet
def test_codetr_without_config_and_checkpoint_names_them(offline_env: Path) -> None:
    with pytest.raises(MissingWeightsError) as err:
        get_detector("mmdet")
    message = str(err.value)
    assert "co_dino_5scale_swin_l_16xb1_16e_o365tococo.py" in message and "checkpoint=" in message


@needs_mmdet
def test_tiny_mmdet_deterministic_coco_detections(small_images: list[Image.Image]) -> None:
    a = get_detector("mmdet-tiny", seed=0)
    assert a.info.random_weights
    ra = a.detect(small_images)
    rb = get_detector("mmdet-tiny", seed=0, batch_size=2).detect(small_images)
    rc = get_detector("mmdet-tiny", seed=1).detect(small_images[:1])
    assert len(ra) == len(small_images)
    for da, db, im in zip(ra, rb, small_images):
        assert 0 < len(da.scores) <= 20 and da.boxes.shape == (len(da.scores), 4) and da.boxes.dtype == np.float32
        assert set(da.labels) <= set(COCO_CLASSES)
        assert (da.boxes[:, 0] >= -1e-3).all() and (da.boxes[:, 2] <= im.width + 1e-3).all()
        assert (da.boxes[:, 1] >= -1e-3).all() and (da.boxes[:, 3] <= im.height + 1e-3).all()
        np.testing.assert_allclose(da.scores, db.scores, atol=1e-5)
        np.testing.assert_allclose(da.boxes, db.boxes, atol=1e-2)
    assert not np.allclose(rc[0].scores[:3], ra[0].scores[:3])
    high = get_detector("mmdet-tiny", seed=0, threshold=0.99).detect(small_images[:2])
    assert all(len(d.scores) == 0 for d in high)


@needs_mmdet
def test_codetr_path_loads_config_and_safe_checkpoint(tmp_path: Path, small_images: list[Image.Image]) -> None:
    """The ``mmdet`` loader (config file + checkpoint via weights_only) on the tiny config stands in for Co-DETR."""
    import torch
    from mmengine.config import Config

    from mrbench.backends.mmdet_backend import tiny_mmdet_config

    tiny = get_detector("mmdet-tiny", seed=0)
    config = tmp_path / "tiny_retinanet.py"
    Config(tiny_mmdet_config()).dump(str(config))
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": tiny.model.state_dict(), "meta": {"epoch": 1}}, ckpt)
    real = get_detector("mmdet", config=str(config), checkpoint=str(ckpt), threshold=0.0)
    assert not real.info.random_weights
    for a, b in zip(real.detect(small_images), tiny.detect(small_images)):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        assert a.labels == b.labels
