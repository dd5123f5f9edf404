"""OmniGen (v1) with image placeholders in the prompt, through diffusers' ``OmniGenPipeline``.

Pipeline API (diffusers 0.42, read from the source): ``pipe(prompt=str, input_images=[PIL, ...], height, width,
num_inference_steps, guidance_scale, img_guidance_scale, max_input_image_size, generator)``. The prompt must hold
one placeholder ``<img><|image_i|></img>`` per input image, numbered from 1 (``check_inputs`` raises otherwise);
the processor splits the prompt at the placeholders and splices each image's VAE latents (``H*W/256`` tokens after
cropping to a multiple of 16 and at most ``max_input_image_size`` on a side) into the Phi-3 token sequence. With
input images the pipeline runs three branches -- conditional, unconditional and image-only -- combined as
``uncond + img_guidance * (img - uncond) + guidance * (cond - img)``. It encodes the input images with
``latent_dist.sample()`` *without* a generator, i.e. from torch's global RNG: here that draw happens inside an RNG
fork seeded from the request's seed (:func:`~mrbench.baselines.multiref.request_rng`), so images stay a function of
the request.

Prompt: ``"{prompt}. The {class_token} is the one in {images}."`` by default -- OmniGen's own subject-driven examples
refer to the subject through its placeholder ("The woman in <img><|image_1|></img> waves her hand"); ``{images}`` is
the space-separated placeholder list. Sampling defaults are the model card's: 50 steps, guidance 2.5, image guidance
1.6, output 1024 x 1024, input images at most 1024 on a side.

References: OmniGen does not state a hard limit; its multi-image examples and training data use up to **3** input
images, so at most 3 are passed; a sample with more gets a seeded subsample (recorded in the row).
``max_references=0`` passes them all (each costs ``H*W/256`` tokens of context).

``omnigen-tiny`` (``--profile tiny``) builds the same pipeline from diffusers' test shapes (``tests/pipelines/omnigen``): a one-layer
OmniGen transformer of width 16, a four-block VAE (scale 8, as the processor's 16-pixels-per-token rule assumes)
and a byte-level Llama tokenizer built offline (BOS id 1, as the processor expects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from mrbench.baselines.multiref import MultiRefConfig, MultiRefGenerator, tiny_byte_llama_tokenizer, tiny_multiref
from mrbench.config import ConfigError

OMNIGEN = "Shitao/OmniGen-v1-diffusers"

TINY_OMNIGEN: dict[str, Any] = {
    "transformer": dict(hidden_size=16, num_attention_heads=4, num_key_value_heads=4, intermediate_size=32,
                        num_layers=1, in_channels=4, time_step_dim=4,
                        rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]}),
    "vae": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 4, 4, 4), layers_per_block=1,
                latent_channels=4, norm_num_groups=1, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4),
    "scheduler": dict(invert_sigmas=True, num_train_timesteps=1),
    "max_input_image_size": 32,
}
# Phi-3's chat markers that OmniGen's processor writes around every prompt.
PHI3_SPECIALS = ["<|user|>", "<|assistant|>", "<|end|>", "<|diffusion|>"]


@dataclass
class OmniGenConfig(MultiRefConfig):
    """OmniGen options (plus :class:`~mrbench.baselines.multiref.MultiRefConfig`).

    Attributes:
        img_guidance_scale: Image guidance (model card 1.6).
        max_input_image_size: Longest side of input images (pipeline default 1024; tiny 32).
    """

    img_guidance_scale: float = 1.6
    max_input_image_size: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.max_input_image_size is not None and self.max_input_image_size < 16:
            raise ConfigError("max_input_image_size must be >= 16")


class OmniGenGenerator(MultiRefGenerator):
    """OmniGen v1: references spliced into the prompt at ``<img><|image_i|></img>`` placeholders."""

    name = "omnigen"
    config_cls = OmniGenConfig
    default_repo = OMNIGEN
    reference_limit = 3
    default_steps = 50
    default_guidance = 2.5
    default_prompt_template = "{prompt}. The {class_token} is the one in {images}."
    default_max_input_image_size: ClassVar[int] = 1024  # the pipeline's own
    display_name = "OmniGen"  # type: ignore[assignment]

    def pipeline_class(self) -> Any:
        from diffusers import OmniGenPipeline

        return OmniGenPipeline

    def tiny_components(self, seed: int) -> dict[str, Any]:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OmniGenTransformer2DModel

        from mrbench.backends.torch_common import seeded

        tok = tiny_byte_llama_tokenizer(PHI3_SPECIALS)
        with seeded(seed):
            transformer = OmniGenTransformer2DModel(**TINY_OMNIGEN["transformer"], vocab_size=len(tok), pad_token_id=2)
        with seeded(seed + 1):
            vae = AutoencoderKL(**TINY_OMNIGEN["vae"])
        return {"transformer": transformer, "vae": vae, "tokenizer": tok,
                "scheduler": FlowMatchEulerDiscreteScheduler(**TINY_OMNIGEN["scheduler"])}

    def image_placeholders(self, n: int) -> str:
        return " ".join(f"<img><|image_{i + 1}|></img>" for i in range(n))

    def call_pipeline(self, prompt: str, images: list[Image.Image], generator: Any) -> Image.Image:
        h, w = self.size
        side = self.config.max_input_image_size or self.default_max_input_image_size
        return self.pipe(prompt=prompt, input_images=images, height=h, width=w, num_inference_steps=self.steps,
                         guidance_scale=self.guidance, img_guidance_scale=self.config.img_guidance_scale,
                         max_input_image_size=side, generator=generator).images[0]

    def tiny_weights(self) -> str:
        return f"random(seed={self.config.tiny_seed}, {TINY_OMNIGEN})"


TinyOmniGenGenerator = tiny_multiref(OmniGenGenerator,
                                     default_max_input_image_size=TINY_OMNIGEN["max_input_image_size"])
