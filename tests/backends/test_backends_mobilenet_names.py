"""One ``mobilenet_v2`` vector definition per registry name, whichever command computes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from mrbench.backends import get_encoder
from mrbench.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(dreambench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three DreamBench photos, shrunk (the views differ the same way; the test runs faster)."""
    out = tmp_path_factory.mktemp("photos")
    paths = []
    for k, src in enumerate(sorted(dreambench_dir.glob("dog/*.jpg"))[:2] + sorted(dreambench_dir.glob("can/*.jpg"))[:1]):
        with Image.open(src) as im:
            im.convert("RGB").resize((320, 240)).save(out / f"{k}.png")
        paths.append(out / f"{k}.png")
    return paths


def test_mobilenet_v2_is_one_vector_everywhere(photos: list[Path], tmp_path: Path, one_thread: object) -> None:
    from mrbench.curation.embed import build_encoder
    from mrbench.evaluation.metrics import MetricSpec, build_metrics

    images = [Image.open(p).convert("RGB") for p in photos]
    direct = get_encoder("mobilenet_v2").embed_images(images)
    curation = build_encoder("mobilenet_v2", {}).embed_images(images)  # what curate's embed step builds
    (metric,) = build_metrics([MetricSpec("image_sim", "mobilenet_v2")])  # what image_sim@mobilenet_v2 scores with
    evaluation = metric.encoder.embed_images(images)
    res = CliRunner().invoke(app, ["embed", "--encoder", "mobilenet_v2", *map(str, photos), "--out", str(tmp_path / "e.parquet")])
    assert res.exit_code == 0, res.output
    table = pq.read_table(tmp_path / "e.parquet").to_pylist()
    cli = np.array([next(r["embedding"] for r in table if Path(r["path"]).name == p.name) for p in photos], np.float32)
    for other in (curation, evaluation, cli):
        np.testing.assert_allclose(other, direct, atol=1e-5)
    assert "multicrop" in get_encoder("mobilenet_v2").info.weights

    # Other views are other names, with other vectors; the views cannot be changed under a name.
    flip = get_encoder("mobilenet_v2-flip")
    assert flip.info.name == "mobilenet_v2-flip" and "flip" in flip.info.weights
    assert np.abs(flip.embed_images(images) - direct).max() > 1e-3
    assert np.abs(get_encoder("mobilenet_v2-center").embed_images(images) - direct).max() > 1e-3
    with pytest.raises(ValueError, match="mobilenet_v2-flip"):
        get_encoder("mobilenet_v2", tta="flip")
