"""flux2, qwen-image-edit, omnigen (tiny profiles): the pipelines' own API, reference caps, determinism, weights."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from baselinehelpers import make_sample, pixels, request

from mrbench.backends.base import MissingWeightsError
from mrbench.baselines.multiref import resolve_pipeline_dir, select_references
from mrbench.config import ConfigError
from mrbench.evaluation.runner import build_generator

MODELS = [("flux2", {}), ("flux2", {"variant": "klein"}), ("qwen-image-edit", {}), ("omnigen", {})]
IDS = ["flux2-dev", "flux2-klein", "qwen-image-edit", "omnigen"]


@pytest.fixture(scope="module", params=MODELS, ids=IDS)
def tiny(request: pytest.FixtureRequest):  # noqa: ANN201
    name, args = request.param
    return build_generator(name, "tiny", dict(args, num_inference_steps=2))


def test_pipeline_call_signatures() -> None:
    """The parameters each generator passes exist in the installed pipelines' ``__call__`` (diffusers' own API)."""
    from diffusers import Flux2KleinPipeline, Flux2Pipeline, OmniGenPipeline, QwenImageEditPlusPipeline

    expected = {
        Flux2Pipeline: {"image", "prompt", "height", "width", "num_inference_steps", "guidance_scale", "generator",
                        "max_sequence_length", "text_encoder_out_layers"},
        Flux2KleinPipeline: {"image", "prompt", "height", "width", "num_inference_steps", "guidance_scale",
                             "generator", "max_sequence_length", "text_encoder_out_layers"},
        QwenImageEditPlusPipeline: {"image", "prompt", "negative_prompt", "true_cfg_scale", "height", "width",
                                    "num_inference_steps", "generator", "max_sequence_length"},
        OmniGenPipeline: {"prompt", "input_images", "height", "width", "num_inference_steps", "guidance_scale",
                          "img_guidance_scale", "max_input_image_size", "generator"},
    }
    for cls, params in expected.items():
        assert params <= set(inspect.signature(cls.__call__).parameters), cls.__name__
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as qmod

    assert (qmod.CONDITION_IMAGE_SIZE, qmod.VAE_IMAGE_SIZE) == (384 * 384, 1024 * 1024)  # the areas the tiny model lowers


def test_select_references_is_seeded_and_ordered() -> None:
    s = make_sample(n_refs=5)
    used, info = select_references(s, 3, seed=0)
    again, _ = select_references(s, 3, seed=0)
    assert [r.id for r in used] == [r.id for r in again] == info["references_used"]
    ids = [r.id for r in s.references]
    assert len(used) == 3 and [ids.index(r.id) for r in used] == sorted(ids.index(r.id) for r in used)  # benchmark order
    assert info["num_references"] == 5 and "seeded subsample of 3 of 5" in info["reference_policy"]
    subsets = {tuple(r.id for r in select_references(s, 3, seed=k)[0]) for k in range(20)}
    assert len(subsets) > 1  # the seed matters
    assert [r.id for r in select_references(s, 0, seed=0)[0]] == ids  # 0: every reference
    assert select_references(s, 5, seed=0)[1]["reference_policy"] == "all"


def test_same_seed_same_image_and_references_recorded(tiny) -> None:  # noqa: ANN001
    s = make_sample(n_refs=5)
    state = torch.get_rng_state()
    (a,) = tiny.generate([request(s, 3)])
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    (a2,) = tiny.generate([request(s, 3)])
    (b,) = tiny.generate([request(s, 4)])
    assert a.status == "ok" and a.image.size == (32, 32)
    assert np.array_equal(pixels(a.image), pixels(a2.image))  # bit for bit on CPU
    assert not np.array_equal(pixels(a.image), pixels(b.image))  # another seed, another image
    cap = tiny.max_references
    flux_cap = 6 if getattr(tiny.config, "variant", "") == "dev" else 4  # BFL: [dev] at most 6, [klein] at most 4
    assert cap == {"flux2": flux_cap, "qwen-image-edit": 3, "omnigen": 3}[tiny.name]
    used = a.info["references_used"]
    assert a.info["num_references"] == 5 and len(used) == min(5, cap)
    assert used == b.info["references_used"]  # every seed of a sample sees the same subset
    assert tiny.random_weights and tiny.describe()["random_weights"]


def test_references_matter(tiny) -> None:  # noqa: ANN001
    (a,) = tiny.generate([request(make_sample(n_refs=2, seed=0), 1)])
    (b,) = tiny.generate([request(make_sample(n_refs=2, seed=9), 1)])  # same prompt, other references
    assert not np.array_equal(pixels(a.image), pixels(b.image))


def test_omnigen_prompt_has_one_placeholder_per_reference() -> None:
    gen = build_generator("omnigen", "tiny", {"num_inference_steps": 1, "max_references": 2})
    (res,) = gen.generate([request(make_sample(n_refs=4), 0)])
    prompt = res.info["prompt"]
    assert prompt.count("<img><|image_") == 2 and "<img><|image_1|></img>" in prompt and "<img><|image_2|></img>" in prompt
    assert prompt.startswith("a red toy on a table")
    with pytest.raises(ConfigError, match="prompt"):
        build_generator("omnigen", "tiny", {"prompt_template": "no slot"})


def test_qwen_image_areas_leave_the_library_alone() -> None:
    """The tiny model's smaller image areas reach its pipeline (the prompt sees 56 x 56 references) while diffusers'
    module constants keep their values, during the call as well as after it."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as qmod

    gen = build_generator("qwen-image-edit", "tiny", {"num_inference_steps": 1})
    seen: list[tuple[int, int, list[tuple[int, int]]]] = []
    encode = gen.pipe.encode_prompt

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append((qmod.CONDITION_IMAGE_SIZE, qmod.VAE_IMAGE_SIZE, [im.size for im in kwargs["image"]]))
        return encode(*args, **kwargs)

    gen.pipe.encode_prompt = spy
    (res,) = gen.generate([request(make_sample(n_refs=2), 0)])
    assert res.status == "ok" and seen
    for cond, vae, sizes in seen:
        assert (cond, vae) == (384 * 384, 1024 * 1024)
        assert sizes == [(64, 64), (64, 64)]  # calculate_dimensions(56 * 56, 1.0): the tiny area, not 384 x 384


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="variant"):
        build_generator("flux2", "tiny", {"variant": "schnell"})
    with pytest.raises(ConfigError, match="multiples of 16"):
        build_generator("qwen-image-edit", "tiny", {"height": 40})
    with pytest.raises(ConfigError, match="scale"):
        build_generator("omnigen", "tiny", {"scale": 1.0})


@pytest.mark.parametrize("name,args,repo", [
    ("flux2", {}, "black-forest-labs/FLUX.2-dev"),
    ("flux2", {"variant": "klein"}, "black-forest-labs/FLUX.2-klein-4B"),
    ("qwen-image-edit", {}, "Qwen/Qwen-Image-Edit-2509"),
    ("omnigen", {}, "Shitao/OmniGen-v1-diffusers"),
])
def test_missing_weights_fail_fast(name: str, args: dict, repo: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MRBENCH_WEIGHTS_DIR", str(tmp_path / "mirror"))
    with pytest.raises(MissingWeightsError) as e:
        build_generator(name, "default", args)
    msg = str(e.value)
    assert repo in msg and "not available offline" in msg and f"hf download {repo}" in msg
    assert "model=/local/folder" in msg and "--profile tiny" in msg


def test_partial_folder_names_missing_components(tmp_path: Path) -> None:
    folder = tmp_path / "omnigen"
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text("{}")
    (folder / "vae").mkdir()
    (folder / "vae" / "config.json").write_text("{}")  # a model config without weights is incomplete
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "OmniGenPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "vae": ["diffusers", "AutoencoderKL"], "transformer": ["diffusers", "OmniGenTransformer2DModel"],
        "tokenizer": ["transformers", "LlamaTokenizer"]}))
    with pytest.raises(MissingWeightsError, match="missing or incomplete: vae, transformer, tokenizer"):
        build_generator("omnigen", "default", {"model": str(folder)})
    for comp, files in {"vae": ["diffusion_pytorch_model.safetensors"], "transformer": ["config.json", "x.safetensors"],
                        "tokenizer": ["tokenizer.json"]}.items():
        (folder / comp).mkdir(exist_ok=True)
        for f in files:
            (folder / comp / f).write_text("{}")
    assert resolve_pipeline_dir(str(folder), what="OmniGen", how="-") == folder
