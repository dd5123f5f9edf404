"""FLUX.2 with a list of reference images, through diffusers' own ``Flux2Pipeline`` (or ``Flux2KleinPipeline``).

Pipeline API (diffusers 0.42, read from the source): ``pipe(image=[PIL, ...], prompt=str, height, width,
num_inference_steps, guidance_scale, generator, max_sequence_length, text_encoder_out_layers)``. Every image of the
``image`` list is VAE-encoded (posterior mode, no randomness), packed and concatenated after the noise tokens, each
reference with its own time offset in the 4-D RoPE ids; the list is shared by the whole call, so one call serves one
sample. Images over 1024x1024 pixels are scaled down to that area, every side is cropped to a multiple of 16, and
images under 64 px on a side are rejected by ``check_image_input``. The output size is fixed here (1024, or 32 for
``flux2-tiny``) rather than taken from the first reference, which the pipeline would otherwise do.

Variants (``variant=``):

- ``dev`` (default): ``black-forest-labs/FLUX.2-dev``, Mistral-Small-3.1 text encoder, embedded guidance 4.0, 50
  steps. References: Black Forest Labs recommend at most **6** for [dev] (docs.bfl.ai, "Reference Images per
  Model").
- ``klein``: ``black-forest-labs/FLUX.2-klein-4B`` (``Flux2KleinPipeline``, Qwen3 text encoder), step-distilled: 4
  steps, guidance 1.0 (true CFG only for the undistilled ``-base`` checkpoints). References: at most **4**.

A sample with more references than the cap gets a seeded subsample (recorded in the row); ``max_references=0``
passes them all.

``flux2-tiny`` (``--profile tiny``) builds the same pipeline classes from diffusers' test shapes (``tests/pipelines/flux2``): a
one-double/one-single-block transformer of width 32, a Mistral3 (or Qwen3) text encoder of width 16 and a
three-block VAE (latent 1 channel, scale 4), with tokenizers built offline; references are resized to 64 x 64 (the
pipeline's minimum side) so the run stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from mrbench.baselines.multiref import (
    MultiRefConfig, MultiRefGenerator, quiet_transformers, tiny_byte_llama_tokenizer, tiny_multiref,
)
from mrbench.config import ConfigError

FLUX2_DEV = "black-forest-labs/FLUX.2-dev"
FLUX2_KLEIN = "black-forest-labs/FLUX.2-klein-4B"
VARIANTS = {
    # variant: (default repo, reference cap, steps, guidance)
    "dev": (FLUX2_DEV, 6, 50, 4.0),
    "klein": (FLUX2_KLEIN, 4, 4, 1.0),
}

# diffusers' tests/pipelines/flux2 shapes; the VAE has three blocks (scale 4) instead of one so that a 64 px
# reference is 64 tokens rather than 1024.
TINY_FLUX2: dict[str, Any] = {
    "transformer": dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                        num_attention_heads=2, joint_attention_dim=16, timestep_guidance_channels=256,
                        axes_dims_rope=[4, 4, 4, 4]),
    "vae": dict(sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(4, 4, 4), layers_per_block=1,
                latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False),
    "mistral3_text": dict(model_type="mistral", hidden_size=16, intermediate_size=37, max_position_embeddings=512,
                          num_attention_heads=4, num_hidden_layers=1, num_key_value_heads=2, rms_norm_eps=1e-05,
                          rope_theta=1e9, sliding_window=None),
    "pixtral_vision": dict(model_type="pixtral", hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=37, image_size=30, patch_size=6, num_channels=3),
    "qwen3": dict(intermediate_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=512),
    "max_sequence_length": 64,
    "reference_size": 64,
}

# Mistral-Small's chat layout as the FLUX.2 text encoder sees it: system turn, then user turn(s).
MISTRAL_SPECIALS = ["[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[INST]",
                    "[/INST]"]
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]"
    "{% for c in m['content'] %}{{ c['text'] }}{% endfor %}[/SYSTEM_PROMPT]{% elif m['role'] == 'user' %}[INST]"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}[IMG]{% endif %}{% endfor %}"
    "[/INST]{% endif %}{% endfor %}"
)
# Qwen3's chat layout (the Klein text encoder): ``enable_thinking=False`` adds an empty think block.
QWEN3_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@dataclass
class Flux2Config(MultiRefConfig):
    """FLUX.2 options (plus :class:`~mrbench.baselines.multiref.MultiRefConfig`).

    Attributes:
        variant: ``dev`` (FLUX.2 [dev], ``Flux2Pipeline``) or ``klein`` (FLUX.2 [klein], ``Flux2KleinPipeline``).
        max_sequence_length: Prompt tokens (pipeline default 512; tiny 64).
        reference_size: Resize references to this square side first (None: the pipeline's own handling; tiny 64).
    """

    variant: str = "dev"
    max_sequence_length: int | None = None
    reference_size: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        if self.reference_size is not None and self.reference_size < 64:
            raise ConfigError("reference_size must be >= 64 (FLUX.2 rejects smaller references)")


class Flux2Generator(MultiRefGenerator):
    """FLUX.2 [dev] / [klein]: every reference is VAE-encoded and attended to with its own RoPE time offset."""

    name = "flux2"
    config_cls = Flux2Config
    how: ClassVar[str] = "FLUX.2 [dev] is gated: accept its licence on the hub before downloading"
    # Defaults of the options of the same names (None: the pipeline's own), and the text-encoder layers whose hidden
    # states form the prompt embedding (None: the pipeline's own).
    default_reference_size: ClassVar[int | None] = None
    default_max_sequence_length: ClassVar[int | None] = None
    text_encoder_out_layers: ClassVar[tuple[int, ...] | None] = None

    def __init__(self, profile: str = "default", **options: Any) -> None:
        variant = options.get("variant", "dev")
        repo, self.reference_limit, self.default_steps, self.default_guidance = VARIANTS.get(variant, VARIANTS["dev"])
        self.default_repo = repo
        super().__init__(profile, **options)

    def check_weights(self) -> None:
        self.default_repo = VARIANTS.get(self.config.variant, VARIANTS["dev"])[0]  # also on a runner's options-only probe
        super().check_weights()

    @property
    def display_name(self) -> str:
        return f"FLUX.2 [{self.config.variant}]"

    def pipeline_class(self) -> Any:
        from diffusers import Flux2KleinPipeline, Flux2Pipeline

        return Flux2KleinPipeline if self.config.variant == "klein" else Flux2Pipeline

    def tiny_components(self, seed: int) -> dict[str, Any]:
        from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

        from mrbench.backends.torch_common import seeded

        klein = self.config.variant == "klein"
        with seeded(seed):
            transformer = Flux2Transformer2DModel(**TINY_FLUX2["transformer"], guidance_embeds=not klein)
        with seeded(seed + 1):
            vae = AutoencoderKLFlux2(**TINY_FLUX2["vae"])
        text_encoder, tokenizer = self._tiny_text(seed + 2, klein)
        return {"scheduler": FlowMatchEulerDiscreteScheduler(), "vae": vae, "text_encoder": text_encoder,
                "tokenizer": tokenizer, "transformer": transformer}

    @staticmethod
    def _tiny_text(seed: int, klein: bool) -> tuple[Any, Any]:
        from mrbench.backends.torch_common import seeded

        if klein:
            from transformers import Qwen3Config, Qwen3ForCausalLM

            from mrbench.baselines.tiny import tiny_qwen_tokenizer

            tok = tiny_qwen_tokenizer()
            tok.chat_template = QWEN3_CHAT_TEMPLATE
            with seeded(seed):
                model = Qwen3ForCausalLM(Qwen3Config(**TINY_FLUX2["qwen3"], vocab_size=len(tok),
                                                     pad_token_id=tok.pad_token_id or 0))
            return model.eval(), tok
        from transformers import (
            Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor,
        )

        tok = tiny_byte_llama_tokenizer(MISTRAL_SPECIALS, pad_token="<pad>")
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        cfg = Mistral3Config(text_config=dict(TINY_FLUX2["mistral3_text"], vocab_size=len(tok), **ids),
                             vision_config=dict(TINY_FLUX2["pixtral_vision"]), image_seq_length=4,
                             vision_feature_layer=-1, image_token_index=tok.convert_tokens_to_ids("[IMG]"), **ids)
        with seeded(seed):
            model = Mistral3ForConditionalGeneration(cfg)
        vision = TINY_FLUX2["pixtral_vision"]
        processor = PixtralProcessor(
            image_processor=PixtralImageProcessor(size={"longest_edge": vision["image_size"]},
                                                  patch_size=vision["patch_size"]),
            tokenizer=tok, chat_template=MISTRAL_CHAT_TEMPLATE, patch_size=vision["patch_size"])
        return model.eval(), processor

    def prepare_references(self, images: list[Image.Image]) -> list[Image.Image]:
        side = self.config.reference_size or self.default_reference_size
        images = super().prepare_references(images)
        return [im.resize((side, side), Image.BICUBIC) for im in images] if side else images

    def call_pipeline(self, prompt: str, images: list[Image.Image], generator: Any) -> Image.Image:
        h, w = self.size
        kwargs: dict[str, Any] = {}
        msl = self.config.max_sequence_length or self.default_max_sequence_length
        if msl:
            kwargs["max_sequence_length"] = msl
        if self.text_encoder_out_layers:
            kwargs["text_encoder_out_layers"] = self.text_encoder_out_layers
        with quiet_transformers():
            return self.pipe(image=images, prompt=prompt, height=h, width=w, num_inference_steps=self.steps,
                             guidance_scale=self.guidance, generator=generator, **kwargs).images[0]

    def tiny_weights(self) -> str:
        return f"random(seed={self.config.tiny_seed}, variant={self.config.variant}, {TINY_FLUX2})"


# The tiny text encoders have one or two layers.
TinyFlux2Generator = tiny_multiref(Flux2Generator, default_reference_size=TINY_FLUX2["reference_size"],
                                   default_max_sequence_length=TINY_FLUX2["max_sequence_length"],
                                   text_encoder_out_layers=(1,))
