"""The safety step: LAION's NSFW classifier on stored embeddings (real loading code, tiny seeded profile in the run),
scores per row, the threshold, and ``unsafe`` drops named like any other."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from smallweb import write_small_inputs
from mrbench.backends import MissingWeightsError, get_safety_classifier
from mrbench.backends.nsfw import H14Mlp, LaionNsfwH14
from mrbench.config import ConfigError, load_config
from mrbench.curation.config import CurateConfig
from mrbench.curation.pipeline import run_curation
from webserver import SampleWebServer

# LAION's h14_nsfw.pth state dict (CLIP-based-NSFW-Detector, h14_nsfw_model.py): key -> shape
LAION_H14_KEYS = {
    "layers.0.weight": (1024, 1024), "layers.0.bias": (1024,), "layers.3.weight": (2048, 1024), "layers.3.bias": (2048,),
    "layers.6.weight": (1024, 2048), "layers.6.bias": (1024,), "layers.9.weight": (256, 1024), "layers.9.bias": (256,),
    "layers.12.weight": (128, 256), "layers.12.bias": (128,), "layers.15.weight": (16, 128), "layers.15.bias": (16,),
    "layers.16.weight": (1, 16), "layers.16.bias": (1,),
}


def test_h14_layers_are_laions():
    assert {k: tuple(v.shape) for k, v in H14Mlp().state_dict().items()} == LAION_H14_KEYS


def test_h14_loads_a_checkpoint_and_scores_clipped(tmp_path):
    torch.manual_seed(0)  # a stand-in for LAION's file: same keys and shapes, random values
    model = H14Mlp()
    torch.save(model.state_dict(), tmp_path / "h14_nsfw.pth")
    clf = LaionNsfwH14(checkpoint=str(tmp_path / "h14_nsfw.pth"))
    x = np.random.default_rng(0).normal(size=(5, 1024)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).squeeze(-1).clamp(0, 1).numpy()
    np.testing.assert_allclose(clf.score(x), want, rtol=1e-6, atol=1e-7)
    assert "h14_nsfw.pth" in clf.info.weights and not clf.info.random_weights
    with pytest.raises(ValueError, match="1024-d CLIP ViT-H-14"):
        clf.score(x[:, :768])


def test_h14_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MRBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"h14_nsfw.pth(.|\n)*CLIP-based-NSFW-Detector/raw/main/h14_nsfw.pth"):
        get_safety_classifier("laion-nsfw-h14")


def test_tiny_profile_is_seeded_and_random_labelled():
    x = np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32)
    a, b = get_safety_classifier("laion-nsfw-tiny", seed=3), get_safety_classifier("laion-nsfw-tiny", seed=3)
    np.testing.assert_array_equal(a.score(x), b.score(x))
    assert not np.array_equal(a.score(x), get_safety_classifier("laion-nsfw-tiny", seed=4).score(x))
    assert a.info.random_weights and ((a.score(x) >= 0) & (a.score(x) <= 1)).all()


@pytest.mark.parametrize("settings, message", [
    ({"safety": {"classifier": "laion-nsfw-tiny"}}, "set embed.encoder"),
    ({"safety": {"classifier": "laion-nsfw"}, "embed": {"encoder": "dino-tiny"}}, "did you mean"),
    ({"safety": {"classifier": "laion-nsfw-h14"}, "embed": {"encoder": "dino-tiny"}}, "set embed.encoder: clip"),
    ({"safety": {"classifier": "laion-nsfw-h14"}, "embed": {"encoder": "clip"}}, "ViT-H-14 tag"),
    ({"safety": {"classifier": "laion-nsfw-tiny", "threshold": 1.5}, "embed": {"encoder": "dino-tiny"}}, "<= 1.0"),
])
def test_safety_settings_are_checked(tmp_path, settings, message):
    cfg = yaml.safe_load(write_small_inputs(tmp_path, "http://127.0.0.1:9", {}).read_text())
    cfg.update(settings)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=message):
        load_config(CurateConfig, tmp_path / "c.yaml")


@pytest.mark.slow
def test_safety_step_scores_every_image_and_drops_those_over_the_threshold(tmp_path, small_web):
    threshold = 0.5
    with SampleWebServer(small_web) as server:
        cfg_path = write_small_inputs(tmp_path / "in", server.base_url, small_web,
                                      embed__encoder="dino-tiny",
                                      safety__classifier="laion-nsfw-tiny", safety__threshold=threshold,
                                      group__consistency_min=0.0, group__dedup_threshold=None,
                                      audit__enabled=False, dedup__enabled=False)
        summary = run_curation(load_config(CurateConfig, cfg_path), tmp_path / "run")
    run = tmp_path / "run"
    scores = {r["id"]: r["nsfw_score"] for f in sorted((run / "safety").glob("shard_*.parquet"))
              for r in pq.read_table(f).to_pylist()}
    embedded = {r["id"] for f in sorted((run / "embed").glob("shard_*.parquet"))
                for r in pq.read_table(f, columns=["id", "status"]).to_pylist() if r["status"] == "ok"}
    assert set(scores) == embedded and len(scores) == 13  # 12 images + the duplicate bytes, before grouping
    over = {i for i, s in scores.items() if s >= threshold}
    assert 0 < len(over) < len(scores)  # the seeded tiny classifier splits this web (random-model scores)
    rejects = {r["id"]: r for f in (run / "rejects").glob("*.parquet") for r in pq.read_table(f).to_pylist()}
    assert {i for i, r in rejects.items() if r["status"] == "unsafe"} == over
    assert all("laion-nsfw-tiny score" in rejects[i]["error_message"] for i in over)
    assert summary["drops_per_reason"]["unsafe"] == len(over)
    assert json.loads((run / "models.json").read_text())["safety"]["random_weights"] is True
    assert "| unsafe | safety |" in (run / "release" / "README.md").read_text()
