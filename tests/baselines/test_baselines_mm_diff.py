"""MM-Diff (tiny profile): the decoupled cross-attention's math, the authors' checkpoint layout (LoRA merges checked
against hand computations and diffusers' own loader), the subject-word fusion, and the generator's rows."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from baselinehelpers import make_sample, pixels, request

from mrbench.backends.base import MissingWeightsError
from mrbench.baselines.mm_diff import (
    CKPT_FILES, TINY_SPEC, MMDiffGenerator, TinyMMDiffGenerator, find_checkpoint_dir, subject_position, subject_prompt,
    write_checkpoint,
)
from mrbench.baselines.mm_diff_layers import (
    DecoupledImageAttnProcessor, ImageTokens, MMDiffSpec, fuse_text_encoder_lora, fused_subject_tokens,
    image_condition, install_unet_adapter, random_checkpoint,
)
from mrbench.baselines.tiny import tiny_clip_tokenizer, tiny_clip_vision, tiny_sdxl_components
from mrbench.evaluation.generator import Sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gen() -> MMDiffGenerator:
    return TinyMMDiffGenerator(num_inference_steps=2)


def _pipe():  # noqa: ANN202 - a diffusers pipeline
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(**tiny_sdxl_components(0))


def _cross_attn(unet):  # noqa: ANN001, ANN202
    name = next(n for n in unet.attn_processors if n.endswith("attn2.processor"))
    return name, unet.get_submodule(name[: -len(".processor")])


# ------------------------------------------------------------------------------------------------ attention math


def test_image_branch_is_a_separate_softmax_weighted_per_row() -> None:
    """out = to_out(softmax(q k_t) v_t + w_row softmax(q k_i) v_i), by hand, per head; a row weighted 0 equals
    diffusers' own attention on the text tokens alone."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = _pipe().unet
    _, attn = _cross_attn(unet)
    state = ImageTokens()
    proc = DecoupledImageAttnProcessor(attn, state)
    torch.manual_seed(0)
    with torch.no_grad():
        proc.to_k_image.weight.normal_(std=0.1)
        proc.to_v_image.weight.normal_(std=0.1)
    x = torch.randn(2, 6, attn.to_q.in_features)
    text, image = torch.randn(2, 5, attn.to_k.in_features), torch.randn(2, 8, attn.to_k.in_features)
    with torch.no_grad(), image_condition(state, 8, torch.tensor([0.0, 0.7])):
        got = proc(attn, x, torch.cat([text, image], 1))
    with torch.no_grad():
        base = AttnProcessor2_0()(attn, x, text)
        h, d = attn.heads, attn.to_q.out_features // attn.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(2, -1, h, d).transpose(1, 2)

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1) @ v

        q = heads(attn.to_q(x))
        t_out = attend(q, heads(attn.to_k(text)), heads(attn.to_v(text)))
        i_out = attend(q, heads(proc.to_k_image(image)), heads(proc.to_v_image(image)))
        mixed = t_out + torch.tensor([0.0, 0.7]).view(2, 1, 1, 1) * i_out
        manual = attn.to_out[0](mixed.transpose(1, 2).reshape(2, 6, -1))
    assert torch.allclose(got, manual, atol=1e-5)
    assert torch.allclose(got[0], base[0], atol=1e-5)  # weight 0: the image tokens change nothing
    assert not torch.allclose(got[1], base[1], atol=1e-3)


def test_zero_image_scale_gives_the_base_unets_output() -> None:
    """With the adapter installed (its LoRA set to zero) and every image weight 0, the UNet's prediction on
    [text; image tokens] is the base UNet's prediction on the text alone."""
    pipe = _pipe()
    base = copy.deepcopy(pipe.unet)
    clip, _ = tiny_clip_vision(1)
    ckpt = random_checkpoint(pipe, clip, MMDiffSpec(refiner_depth=1, refiner_dim_head=16, lora_rank=2), seed=3)
    zero_lora = {k: (torch.zeros_like(v) if ".up." in k else v) for k, v in ckpt.unet_adapter.items()}
    state = ImageTokens()
    install_unet_adapter(pipe.unet, zero_lora, state)
    torch.manual_seed(1)
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 64)
    image = torch.randn(2, 12, 64)
    added = {"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)}
    with torch.no_grad():
        want = base(latents, 10, encoder_hidden_states=text, added_cond_kwargs=added).sample
        with image_condition(state, 12, torch.zeros(2)):
            got = pipe.unet(latents, 10, encoder_hidden_states=torch.cat([text, image], 1), added_cond_kwargs=added).sample
        with image_condition(state, 12, torch.full((2,), 0.8)):
            on = pipe.unet(latents, 10, encoder_hidden_states=torch.cat([text, image], 1), added_cond_kwargs=added).sample
    assert torch.allclose(got, want, atol=1e-5)
    assert (on - want).abs().max() > 1e-3  # and the image branch does act when weighted


def test_unet_adapter_merges_each_lora_where_the_authors_apply_it() -> None:
    """``{i}.to_k_lora`` lands on to_k; ``{i}.to_k_lora_image`` on the image branch built from the ORIGINAL to_k."""
    pipe = _pipe()
    clip, _ = tiny_clip_vision(1)
    ckpt = random_checkpoint(pipe, clip, MMDiffSpec(refiner_depth=1, refiner_dim_head=16, lora_rank=2), seed=3)
    names = list(pipe.unet.attn_processors)
    name, attn = _cross_attn(pipe.unet)
    i = names.index(name)
    self_name = names[i - 1]  # the block's attn1 comes right before its attn2
    self_attn = pipe.unet.get_submodule(self_name[: -len(".processor")])
    k0, q0, sq0 = attn.to_k.weight.clone(), attn.to_q.weight.clone(), self_attn.to_q.weight.clone()
    sd = ckpt.unet_adapter
    report = install_unet_adapter(pipe.unet, sd, ImageTokens())
    assert report["unet_adapter_keys"] == len(sd)

    def delta(prefix: str) -> torch.Tensor:
        return sd[f"{prefix}.up.weight"] @ sd[f"{prefix}.down.weight"]

    proc = pipe.unet.attn_processors[name]
    assert isinstance(proc, DecoupledImageAttnProcessor)
    assert torch.allclose(attn.to_k.weight, k0 + delta(f"{i}.to_k_lora"), atol=1e-6)
    assert torch.allclose(attn.to_q.weight, q0 + delta(f"{i}.to_q_lora"), atol=1e-6)
    assert torch.allclose(proc.to_k_image.weight, k0 + delta(f"{i}.to_k_lora_image"), atol=1e-6)
    assert torch.allclose(self_attn.to_q.weight, sq0 + delta(f"{i - 1}.to_q_lora"), atol=1e-6)
    assert not isinstance(pipe.unet.attn_processors[self_name], DecoupledImageAttnProcessor)


def test_unet_adapter_rejects_a_checkpoint_that_does_not_fit() -> None:
    pipe = _pipe()
    clip, _ = tiny_clip_vision(1)
    sd = random_checkpoint(pipe, clip, MMDiffSpec(refiner_depth=1, refiner_dim_head=16, lora_rank=2), 3).unet_adapter
    with pytest.raises(ValueError, match="fit no attention"):
        install_unet_adapter(copy.deepcopy(pipe.unet), {**sd, "999.to_q_lora.up.weight": torch.zeros(1)}, ImageTokens())
    missing = {k: v for k, v in sd.items() if not k.startswith("1.")}
    with pytest.raises(ValueError, match=r"1\.to_k_lora_image\.down/up\.weight not in the checkpoint"):
        install_unet_adapter(copy.deepcopy(pipe.unet), missing, ImageTokens())


def test_text_encoder_lora_merge_equals_diffusers_loader() -> None:
    """The authors' diffusers-0.21 text-encoder LoRA file, merged here, gives the weights diffusers' own loader
    (load_lora_weights + fuse_lora) gives."""
    ours, ref = _pipe(), _pipe()
    clip, _ = tiny_clip_vision(1)
    spec = MMDiffSpec(refiner_depth=1, refiner_dim_head=16, lora_rank=2)
    sd = random_checkpoint(ours, clip, spec, 5).text_encoder_adapter
    before = ours.text_encoder.state_dict()["encoder.layers.0.self_attn.q_proj.weight"].clone()
    fuse_text_encoder_lora({"text_encoder": ours.text_encoder, "text_encoder_2": ours.text_encoder_2}, sd)
    ref.load_lora_weights({k: v.clone() for k, v in sd.items()}, adapter_name="mmdiff")
    ref.fuse_lora(components=["text_encoder", "text_encoder_2"], lora_scale=1.0)
    ref.unload_lora_weights()
    for te in ("text_encoder", "text_encoder_2"):
        a, b = getattr(ours, te).state_dict(), getattr(ref, te).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6), (te, k)
    assert (ours.text_encoder.state_dict()["encoder.layers.0.self_attn.q_proj.weight"] - before).abs().max() > 1e-4
    # A LoRA alpha scales its pair by alpha / rank (diffusers' network_alphas); one that matches no pair is an error.
    key = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    halved = _pipe()
    fuse_text_encoder_lora({"text_encoder": halved.text_encoder, "text_encoder_2": halved.text_encoder_2},
                           {**sd, f"{key}.alpha": torch.tensor(1.0)})  # rank 2: half of the update
    q = "encoder.layers.0.self_attn.q_proj.weight"
    full_delta = ours.text_encoder.state_dict()[q] - before
    assert torch.allclose(halved.text_encoder.state_dict()[q] - before, full_delta / 2, atol=1e-6)
    with pytest.raises(ValueError, match="alpha keys match no LoRA pair"):
        fuse_text_encoder_lora({"text_encoder": _pipe().text_encoder}, {"text_encoder.nowhere.alpha": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="no linear layer"):
        fuse_text_encoder_lora({"text_encoder": ours.text_encoder},
                               {"text_encoder.text_model.nowhere.lora_linear_layer.up.weight": torch.zeros(2, 2),
                                "text_encoder.text_model.nowhere.lora_linear_layer.down.weight": torch.zeros(2, 2)})


# ------------------------------------------------------------------------------------------------ subject word


def test_subject_prompt_marks_the_class_noun() -> None:
    s = make_sample(prompt="a red toy on a table", class_token="toy")
    assert subject_prompt(s) == "a red toy<|subj|> on a table"
    s = Sample(id="x", group="g", split="held_out", prompt="Taylor at the beach", references=[], target=None,
               class_token="person", identifier_prompt="Taylor at the beach, sks person")
    assert subject_prompt(s) == "Taylor at the beach, person<|subj|>"
    s = Sample(id="x", group="g", split="test", prompt="a stuffed animal in the snow", references=[], target=None,
               class_token="stuffed animal")
    assert subject_prompt(s) == "a stuffed animal<|subj|> in the snow"
    s.class_token = ""
    assert subject_prompt(s) is None


def test_subject_position_is_the_noun_token_as_the_authors_mask() -> None:
    tok = tiny_clip_tokenizer()
    clean, pos = subject_position(tok, "a photo of a stuffed animal<|subj|> in the snow")
    assert clean == "a photo of a stuffed animal in the snow"
    ids = tok(clean).input_ids
    assert tok.convert_ids_to_tokens(ids[pos]) == "animal</w>"
    # The authors' way: the trigger as an added token, its left neighbour marked in the trigger-free sequence.
    tok2 = tiny_clip_tokenizer()
    tok2.add_tokens(["<|subj|>"], special_tokens=True)
    trig = tok2.convert_tokens_to_ids("<|subj|>")
    full = tok2("a photo of a stuffed animal<|subj|> in the snow").input_ids
    assert full.index(trig) - 1 == pos
    assert subject_position(tok, "word " * 80 + "dog<|subj|>")[1] is None  # truncated away: no fusion


def test_fused_subject_tokens_replace_only_the_marked_token() -> None:
    emb = torch.nn.Embedding(50, 4)
    fuse = torch.nn.Linear(8, 4)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    obj = torch.randn(2, 4)
    with torch.no_grad():
        plain = emb(ids)
        with fused_subject_tokens(emb, fuse, [2, None], obj):
            got = emb(ids)
        after = emb(ids)
    assert torch.equal(after, plain)  # the hook is gone
    assert torch.allclose(got[0, 2], fuse(torch.cat([plain[0, 2], obj[0]])), atol=1e-6)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 2] = False
    assert torch.equal(got[mask], plain[mask])


# ------------------------------------------------------------------------------------------------ generator


def test_references_become_four_tokens_each_and_the_rows_are_deterministic(gen: MMDiffGenerator) -> None:
    s = make_sample(n_refs=3)
    cond = gen.encode_references([(r.id, r.load()) for r in s.references])
    assert cond is not None and cond.used == [r.id for r in s.references]
    assert tuple(cond.tokens.shape) == (1, 12, gen.pipe.unet.config.cross_attention_dim)
    assert tuple(cond.objects[0].shape) == (1, gen.pipe.text_encoder.config.hidden_size)
    a, b, c = gen.generate([request(s, 1), request(s, 1), request(s, 2)])
    assert a.status == "ok" and a.info == {"num_references": 3, "face_references": cond.used,
                                           "prompt": "a red toy<|subj|> on a table"}
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert not np.array_equal(pixels(a.image), pixels(c.image))
    with _options(gen, max_references=1):
        (r,) = gen.generate([request(s, 1)])
    assert r.info["num_references"] == 1 and r.info["face_references"] == [s.references[0].id]
    assert not np.array_equal(pixels(r.image), pixels(a.image))  # more references, other image tokens


@contextmanager
def _options(gen: MMDiffGenerator, **options: object) -> Iterator[None]:
    """Run the shared generator with other options inside the block (saves building one per option)."""
    old = {k: getattr(gen.config, k) for k in options}
    for k, v in options.items():
        setattr(gen.config, k, v)
    gen._last_refs = None
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(gen.config, k, v)
        gen._last_refs = None


def test_image_branch_weight_changes_the_image(gen: MMDiffGenerator) -> None:
    s = make_sample(n_refs=2)
    with _options(gen, fuse_scale=0.0):
        off = gen.generate([request(s, 3)])[0].image
    assert not np.array_equal(pixels(off), pixels(gen.generate([request(s, 3)])[0].image))


def test_negative_prompt_fusion_follows_the_authors_by_default(gen: MMDiffGenerator) -> None:
    """The authors' hook also fuses the subject into the negative prompt's token at the subject position."""
    s = make_sample(n_refs=2)
    cond = gen.encode_references([(r.id, r.load()) for r in s.references])
    prompt = subject_prompt(s)
    pe, ne, pooled, npooled = gen.encode_prompts(prompt, cond)
    with _options(gen, fuse_negative=False):
        pe2, ne2, pooled2, npooled2 = gen.encode_prompts(prompt, cond)
        plain, _, plain_pooled, _ = gen.pipe.encode_prompt(gen.config.negative_prompt, device="cpu",
                                                           do_classifier_free_guidance=False)
    assert torch.allclose(pe, pe2) and torch.allclose(pooled, pooled2)  # the prompt is fused either way
    unfused, _, _, _ = gen.pipe.encode_prompt(prompt.replace("<|subj|>", ""), device="cpu",
                                              do_classifier_free_guidance=False)
    assert not torch.allclose(pe, unfused, atol=1e-4)
    assert torch.allclose(ne2, plain) and torch.allclose(npooled2, plain_pooled)
    assert not torch.allclose(ne, plain, atol=1e-4)


def test_failed_rows_are_named(gen: MMDiffGenerator) -> None:
    from mrbench.backends.insightface_face import TinyInsightFaceEncoder

    (r,) = gen.generate([request(make_sample(n_refs=0))])
    assert r.status == "no_references" and r.image is None
    s = make_sample(n_refs=2)
    s.class_token, s.identifier_prompt = "", ""
    (r,) = gen.generate([request(s)])
    assert r.status == "no_subject_word"
    seeing = gen.face_app
    gen.face_app, gen._last_refs = TinyInsightFaceEncoder(seed=32, det_thresh=1.01), None  # accepts no face
    try:
        (r,) = gen.generate([request(make_sample(n_refs=2, seed=4))])
    finally:
        gen.face_app, gen._last_refs = seeing, None
    assert r.status == "no_face" and "no face in any of the 2 references" in r.error_message


def test_checkpoint_folder_in_the_authors_layout_loads_through_the_same_path(gen: MMDiffGenerator,
                                                                             tmp_path: Path) -> None:
    """The tiny profile's random checkpoint written as the authors' three files and read back gives the same image."""
    clip, _ = tiny_clip_vision(31)
    folder = write_checkpoint(random_checkpoint(_pipe(), clip, TINY_SPEC, 0), tmp_path / "portrait")
    assert sorted(p.name for p in folder.iterdir()) == sorted(CKPT_FILES)
    loaded = TinyMMDiffGenerator(num_inference_steps=2, ckpt=str(folder))
    assert loaded.weights()["mm_diff"] == str(folder)
    s = make_sample(n_refs=2)
    assert np.array_equal(pixels(loaded.generate([request(s, 5)])[0].image), pixels(gen.generate([request(s, 5)])[0].image))


def test_missing_checkpoint_names_the_files_and_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRBENCH_WEIGHTS_DIR", str(tmp_path / "mirror"))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / CKPT_FILES[0]).write_bytes(b"")
    with pytest.raises(MissingWeightsError) as e:
        find_checkpoint_dir(str(partial))
    msg = str(e.value)
    assert f"{partial} (no text_encoder_adapter_weights.bin, custom_weights.bin)" in msg
    assert "checkpoints.tar.gz" in msg and "--model-args ckpt=" in msg
    with pytest.raises(MissingWeightsError) as e:
        find_checkpoint_dir("mm-diff/portrait_generation")
    assert str(tmp_path / "mirror" / "mm-diff" / "portrait_generation") in str(e.value)
    with pytest.raises(MissingWeightsError):  # a folder given to the tiny profile is checked the same way
        TinyMMDiffGenerator(ckpt=str(partial))


def test_the_real_loading_path_with_small_weights_on_disk(tmp_path: Path) -> None:
    """Every weight in the layout the real run reads (a diffusers SDXL folder, a VAE folder, a saved CLIPModel, an
    insightface root with a buffalo_l pack, the authors' checkpoint folder), made of small random models, loaded by
    the default profile: the path a real run takes, end to end."""
    from diffusers import AutoencoderKL
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

    from mrbench.backends.insightface_face import build_tiny_arcface, build_tiny_scrfd
    from mrbench.baselines.tiny import TINY_CLIP_VISION, TINY_SDXL
    from mrbench.backends.torch_common import seeded

    pipe = _pipe()
    pipe.save_pretrained(tmp_path / "sdxl")
    with seeded(1):
        AutoencoderKL(**TINY_SDXL["vae"], force_upcast=False).save_pretrained(tmp_path / "vae")
        text = dict(TINY_SDXL["text_encoder"], projection_dim=32)
        vision = dict(TINY_CLIP_VISION, image_size=224, patch_size=32)  # CLIP's own 224 px preprocessing
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(tmp_path / "clip")
    pack = tmp_path / "insightface" / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    (pack / "det.onnx").write_bytes(build_tiny_scrfd(3))
    (pack / "rec.onnx").write_bytes(build_tiny_arcface(3))
    clip = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "clip")
    ckpt = write_checkpoint(random_checkpoint(pipe, clip, TINY_SPEC, 0), tmp_path / "checkpoints" / "portrait_generation")

    gen = MMDiffGenerator(base_model=str(tmp_path / "sdxl"), vae=str(tmp_path / "vae"),
                          image_encoder=str(tmp_path / "clip"),
                          face_root=str(tmp_path / "insightface"), ckpt=str(ckpt), refiner_dim_head=16,
                          num_inference_steps=2, height=64, device="cpu")
    assert gen.spec.refiner_depth == TINY_SPEC.refiner_depth and gen.spec.face_tokens == 4
    assert gen.load_report["unet_adapter_keys"] == len(torch.load(ckpt / CKPT_FILES[0]))
    assert gen.pipe.vae.config.force_upcast is False  # the fp16-fix VAE replaced SDXL's
    assert torch.equal(gen.face_clip.visual_projection.weight, clip.visual_projection.weight)  # CLIPModel's weights
    assert gen.face_app.info.name == "insightface" and str(pack) in gen.face_app.info.weights
    (r,) = gen.generate([request(make_sample(n_refs=2), 0)])
    assert r.status == "ok" and r.image.size == (64, 64)
    w = gen.weights()
    assert w["mm_diff"] == str(ckpt) and w["vae"] == str(tmp_path / "vae") and w["face"] == "buffalo_l"


@pytest.mark.weights
def test_mm_diff_pretrained(faces_dir: Path) -> None:
    """The released portrait checkpoint (MRBENCH_MMDIFF_CKPT or $MRBENCH_WEIGHTS_DIR/mm-diff/portrait_generation)."""
    import os

    from PIL import Image

    from mrbench.evaluation.generator import ImageRef

    options = {"ckpt": os.environ["MRBENCH_MMDIFF_CKPT"]} if "MRBENCH_MMDIFF_CKPT" in os.environ else {}
    gen = MMDiffGenerator(num_inference_steps=4, **options)
    assert gen.spec.face_dim == 512 and gen.spec.refiner_depth == 4 and gen.pipe.unet.config.cross_attention_dim == 2048
    photos = sorted(faces_dir.glob("*.jpg"))[:2]
    refs = [ImageRef(p.name, "person", (lambda p=p: Image.open(p).convert("RGB"))) for p in photos]
    s = Sample(id="p", group="person", split="test", prompt="a person in a spacesuit", references=refs, target=None,
               class_token="person")
    (r,) = gen.generate([request(s, 0)])
    assert r.status == "ok" and r.image.size == (512, 512) and r.info["face_references"]
