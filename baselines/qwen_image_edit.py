"""Qwen-Image-Edit-Plus (Qwen-Image-Edit-2509) with several input images, through diffusers'
``QwenImageEditPlusPipeline``.

Pipeline API (diffusers 0.42, read from the source): ``pipe(image=[PIL, ...], prompt=str, negative_prompt=str,
true_cfg_scale, height, width, num_inference_steps, generator, max_sequence_length)``. Each image of the list is used
twice: resized to ``CONDITION_IMAGE_SIZE`` (384 x 384 pixels, aspect kept) it enters the Qwen2.5-VL prompt as
``Picture i: <|vision_start|><|image_pad|><|vision_end|>``; resized to ``VAE_IMAGE_SIZE`` (1024 x 1024 pixels) it is
VAE-encoded (posterior mode) and its latents are concatenated to the noise tokens. The pipeline accepts one prompt per
call (``batch_size > 1`` raises), so one call serves one request. Without explicit ``height``/``width`` the output
takes the last image's aspect; here it is fixed (1024, or 32 for ``qwen-image-edit-tiny``).

Sampling defaults are the model card's: 40 steps, ``true_cfg_scale`` 4.0 with negative prompt ``" "`` (this
generator's ``guidance_scale`` is that true-CFG scale; the transformer has no guidance embedding).

References: the Qwen team give **3** input images as the range the model works best in ("optimal performance 1 to
3 images", Qwen-Image-Edit-2509 model card), so at most 3 are passed; a sample with more gets a seeded subsample
(recorded in the row). ``max_references=0`` passes them all.

``qwen-image-edit-tiny`` (``--profile tiny``) builds the same pipeline from diffusers' test shapes
(``tests/pipelines/qwenimage``): a two-layer transformer, a tiny Qwen-Image VAE and a Qwen2.5-VL of width 16, with the
byte-level Qwen tokenizer and a real ``Qwen2VLProcessor`` built offline. The pipeline's two image areas are module
constants of diffusers; this generator leaves them alone and calls the pipeline's code bound to its own areas
(``condition_area``/``vae_area``; the tiny variant's are smaller; :func:`call_with_areas`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from mrbench.baselines.multiref import MultiRefConfig, MultiRefGenerator, tiny_multiref
from mrbench.config import ConfigError

QWEN_IMAGE_EDIT_PLUS = "Qwen/Qwen-Image-Edit-2509"
PIPELINE_CONDITION_AREA = 384 * 384
PIPELINE_VAE_AREA = 1024 * 1024

TINY_QWEN_IMAGE: dict[str, Any] = {
    "transformer": dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                        num_attention_heads=3, joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4)),
    "vae": dict(base_dim=4 * 6, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True],
                latents_mean=[0.0] * 4, latents_std=[1.0] * 4),
    "text_config": dict(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=2,
                        rope_parameters={"mrope_section": [1, 1, 2], "rope_type": "default", "rope_theta": 1000000.0}),
    "vision_config": dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16),
    "condition_area": 56 * 56,
    "vae_area": 32 * 32,
    "max_sequence_length": 64,
}


@dataclass
class QwenImageEditConfig(MultiRefConfig):
    """Qwen-Image-Edit-Plus options (plus :class:`~mrbench.baselines.multiref.MultiRefConfig`).

    Attributes:
        negative_prompt: Negative prompt of true CFG (model card: a single space).
        max_sequence_length: Prompt tokens (pipeline default 512; tiny 64).
        condition_area: Pixel area of the references in the VLM prompt (None: the pipeline's 384 x 384; tiny 56 x 56).
        vae_area: Pixel area of the VAE-encoded references (None: the pipeline's 1024 x 1024; tiny 32 x 32).
    """

    negative_prompt: str = " "
    max_sequence_length: int | None = None
    condition_area: int | None = None
    vae_area: int | None = None

    def validate(self) -> None:
        super().validate()
        for area in (self.condition_area, self.vae_area):
            if area is not None and area < 32 * 32:
                raise ConfigError("condition_area and vae_area must be at least 32 * 32 pixels")


def call_with_areas(pipeline_cls: Any, condition_area: int, vae_area: int) -> Any:
    """``pipeline_cls.__call__`` sizing references to the given pixel areas, as a function of ``(pipe, **kwargs)``.

    ``QwenImageEditPlusPipeline`` reads its two areas from module constants (``CONDITION_IMAGE_SIZE`` for the VLM
    prompt, ``VAE_IMAGE_SIZE`` for the latents and their RoPE shapes). The function returned is the same code bound
    to a copy of that module's globals holding this generator's areas: the library's module is never modified, and
    other pipelines in the process keep the constants.
    """
    import functools
    import types

    import torch

    fn = pipeline_cls.__call__
    fn = getattr(fn, "__wrapped__", fn)  # under torch.no_grad()
    names = {"CONDITION_IMAGE_SIZE": condition_area, "VAE_IMAGE_SIZE": vae_area}
    missing = [n for n in names if n not in fn.__globals__]
    if missing:
        raise RuntimeError(f"{pipeline_cls.__name__} no longer reads {', '.join(missing)}: update {__name__}")
    bound = types.FunctionType(fn.__code__, {**fn.__globals__, **names}, fn.__name__, fn.__defaults__,
                               fn.__closure__)
    bound.__kwdefaults__ = fn.__kwdefaults__
    return torch.no_grad()(functools.update_wrapper(bound, fn))


class QwenImageEditGenerator(MultiRefGenerator):
    """Qwen-Image-Edit-Plus: references enter both the Qwen2.5-VL prompt and the latent sequence."""

    name = "qwen-image-edit"
    config_cls = QwenImageEditConfig
    default_repo = QWEN_IMAGE_EDIT_PLUS
    reference_limit = 3
    default_steps = 40
    default_guidance = 4.0
    display_name = "Qwen-Image-Edit-Plus"  # type: ignore[assignment]
    # Defaults of the options of the same names: the pipeline's own.
    default_condition_area: ClassVar[int] = PIPELINE_CONDITION_AREA
    default_vae_area: ClassVar[int] = PIPELINE_VAE_AREA
    default_max_sequence_length: ClassVar[int] = 512

    def __init__(self, profile: str = "default", **options: Any) -> None:
        super().__init__(profile, **options)
        self._call = call_with_areas(type(self.pipe), self.config.condition_area or self.default_condition_area,
                                     self.config.vae_area or self.default_vae_area)

    def pipeline_class(self) -> Any:
        from diffusers import QwenImageEditPlusPipeline

        return QwenImageEditPlusPipeline

    def tiny_components(self, seed: int) -> dict[str, Any]:
        from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        from mrbench.backends.torch_common import seeded
        from mrbench.baselines.tiny import QWEN_SPECIAL_TOKENS, tiny_qwen2vl_processor

        processor = tiny_qwen2vl_processor(28 * 28, 4 * 28 * 28)
        tok = processor.tokenizer
        ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS + ["<|endoftext|>"]}
        with seeded(seed):
            transformer = QwenImageTransformer2DModel(**TINY_QWEN_IMAGE["transformer"])
        with seeded(seed + 1):
            vae = AutoencoderKLQwenImage(**TINY_QWEN_IMAGE["vae"])
        cfg = Qwen2_5_VLConfig(
            text_config=dict(TINY_QWEN_IMAGE["text_config"], vocab_size=len(tok), bos_token_id=ids["<|endoftext|>"],
                             eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
            vision_config=dict(TINY_QWEN_IMAGE["vision_config"]), image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"])
        with seeded(seed + 2):
            text_encoder = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
                "text_encoder": text_encoder, "tokenizer": tok, "processor": processor}

    def call_pipeline(self, prompt: str, images: list[Image.Image], generator: Any) -> Image.Image:
        h, w = self.size
        msl = self.config.max_sequence_length or self.default_max_sequence_length
        return self._call(self.pipe, image=images, prompt=prompt, negative_prompt=self.config.negative_prompt,
                          true_cfg_scale=self.guidance, height=h, width=w, num_inference_steps=self.steps,
                          generator=generator, max_sequence_length=msl).images[0]

    def tiny_weights(self) -> str:
        return f"random(seed={self.config.tiny_seed}, {TINY_QWEN_IMAGE})"


TinyQwenImageEditGenerator = tiny_multiref(
    QwenImageEditGenerator, default_condition_area=TINY_QWEN_IMAGE["condition_area"],
    default_vae_area=TINY_QWEN_IMAGE["vae_area"], default_max_sequence_length=TINY_QWEN_IMAGE["max_sequence_length"])
