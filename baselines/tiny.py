"""Tiny random models: the real architectures at toy sizes, built in-process from configs with a fixed seed (the
way diffusers' and transformers' own tests build them), so the whole evaluation path runs on a CPU in seconds.
Nothing here touches the network: tokenizers are built from the CLIP BPE file open_clip ships and from a byte-level
vocabulary.

Every generator's tiny variant is its own class and registry entry (``easyref-tiny``, ``flux2-tiny``, ...; what
``--profile tiny`` builds), made by :func:`tiny_model` from the real class and a *weights mixin*: the mixin replaces
the real class's weight hooks (locate, load, describe) with the builders here, so model code never branches on the
profile. Anything generated with these models is labelled random-weights wherever it is shown.
"""

from __future__ import annotations

from typing import Any, TypeVar

from mrbench.backends.torch_common import seeded

G = TypeVar("G", bound=type)

# Option defaults of every tiny variant (under the options given): the random-weights path, not the paper's sampling.
TINY_OPTION_DEFAULTS: dict[str, Any] = {"num_inference_steps": 4}


def tiny_model(base: G, weights: type, **attrs: Any) -> G:
    """The tiny random variant of generator class ``base`` (bind it at module level as ``Tiny<Base>``: the
    ``<name>-tiny`` registry entry and pickling find it there).

    Args:
        base: The real generator class.
        weights: Mixin whose methods replace ``base``'s weight hooks with seeded in-process builders; first in the MRO.
        **attrs: Class attributes of the variant: resolution defaults the real class reads from class attributes
            (output size, sequence lengths) and ``option_defaults`` (merged over :data:`TINY_OPTION_DEFAULTS`).
    """
    name = f"Tiny{base.__name__}"
    body = {
        "__module__": base.__module__, "__qualname__": name,
        "__doc__": f"{base.__name__} with tiny random weights, seeded (``tiny_seed``); its outputs are labelled "
                   "random-weights.",
        "random_weights": True, "profile": "tiny",
        **attrs, "option_defaults": {**TINY_OPTION_DEFAULTS, **attrs.get("option_defaults", {})},
    }
    return type(name, (weights, base), body)  # type: ignore[return-value]


def random_weights(seed: int, what: Any) -> str:
    """How a tiny component is recorded among a generator's weights."""
    return f"random(seed={seed}, {what})"

# SDXL at toy size (diffusers' SDXL pipeline tests use the same shapes): two text encoders of width 32 whose hidden
# states concatenate to the UNet's cross-attention width 64; "text_time" added conditioning.
TINY_SDXL: dict[str, Any] = {
    "unet": dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                 transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
                 cross_attention_dim=64, norm_num_groups=1),
    "vae": dict(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                latent_channels=4, sample_size=128),
    "text_encoder": dict(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32,
                         intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
                         vocab_size=49408, hidden_act="gelu", projection_dim=32, max_position_embeddings=77),
}

# Qwen2-VL at toy size: text width 64 (head dim 16, M-RoPE sections 2+3+3 = 16/2), two decoder layers (EasyRef keeps
# the first as the MLLM and copies the last into its final layer), a two-block vision tower whose merger outputs 64.
TINY_QWEN2VL: dict[str, Any] = {
    "text_config": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=4096,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
    "vision_config": dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                          spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
}

TINY_CLIP_VISION: dict[str, Any] = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                        image_size=32, patch_size=8, projection_dim=32)

QWEN_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                       "<|video_pad|>"]

# Qwen2-VL-Instruct's chat layout: a default system turn, then the user turn with one vision block per image.
QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_clip_tokenizer(max_length: int = 77) -> Any:
    """A ``CLIPTokenizer`` with CLIP's real vocabulary, built offline from open_clip's BPE file."""
    from transformers import CLIPTokenizer

    from mrbench.backends.clip import clip_bpe_vocab

    vocab, merges = clip_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def tiny_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for ``StableDiffusionXLPipeline``: tiny UNet, VAE, two text encoders, tokenizers, DDIM."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with seeded(seed):
        unet = UNet2DConditionModel(**TINY_SDXL["unet"])
    with seeded(seed + 1):
        vae = AutoencoderKL(**TINY_SDXL["vae"])
    with seeded(seed + 2):
        text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_SDXL["text_encoder"]))
    with seeded(seed + 3):
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_SDXL["text_encoder"]))
    tokenizer = tiny_clip_tokenizer()
    # SDXL's own noise schedule (scaled linear 0.00085 -> 0.012, leading spacing, offset 1).
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              timestep_spacing="leading", steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
            "tokenizer": tokenizer, "tokenizer_2": tokenizer, "scheduler": scheduler}


def tiny_qwen_tokenizer() -> Any:
    """A byte-level ``Qwen2Tokenizer`` (every byte one token) with Qwen2-VL's special tokens."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    return tok


def tiny_qwen2vl_processor(min_pixels: int, max_pixels: int) -> Any:
    """A real ``Qwen2VLProcessor`` (image processor, tokenizer, chat template) around the tiny tokenizer."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        tokenizer=tiny_qwen_tokenizer(), video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    )


def tiny_qwen2vl(seed: int = 0, tokenizer: Any = None) -> Any:
    """A seeded random ``Qwen2VLForConditionalGeneration`` whose vocabulary matches :func:`tiny_qwen_tokenizer`."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok = tokenizer or tiny_qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS + ["<|endoftext|>"]}
    text = dict(TINY_QWEN2VL["text_config"], vocab_size=len(tok), bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    cfg = Qwen2VLConfig(
        text_config=text, vision_config=dict(TINY_QWEN2VL["vision_config"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    cfg._attn_implementation = "sdpa"
    with seeded(seed):
        model = Qwen2VLForConditionalGeneration(cfg)
    return model.eval()


def tiny_clip_vision(seed: int = 0) -> tuple[Any, Any]:
    """A seeded random ``CLIPVisionModelWithProjection`` and its ``CLIPImageProcessor`` (IP-Adapter's image encoder)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    with seeded(seed):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION)).eval()
    size = TINY_CLIP_VISION["image_size"]
    return model, CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


class TinySDXLWeights:
    """Weights mixin of the SDXL generators: :func:`tiny_sdxl_components` (seeds ``tiny_seed`` .. ``tiny_seed + 3``)
    instead of a local SDXL folder; nothing to locate."""

    config: Any
    device: str

    def check_weights(self) -> None:
        self.missing: list[Any] = []

    def sdxl_pipeline(self) -> Any:
        import torch
        from diffusers import StableDiffusionXLPipeline

        from mrbench.baselines.sdxl import resolve_dtype

        pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(self.config.tiny_seed))
        dtype = torch.float32 if self.config.dtype is None else resolve_dtype(self.config.dtype, self.device)
        return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)

    def sdxl_weights(self) -> str:
        return random_weights(self.config.tiny_seed, TINY_SDXL)
