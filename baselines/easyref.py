"""EasyRef (Zong et al., arXiv 2412.09618): SDXL conditioned on a group of references through Qwen2-VL.

Built as the paper and the authors' code describe [C]:

1. The MLLM is Qwen2-VL-2B-Instruct without its last decoder layer. One user turn holds every reference image, then
   the text ``"Visualize a scene that closely resembles the provided images, capturing the essence and details
   described in this prompt:\\n" + caption``; references are resized to ``cond_image_size`` (336 -> 94,864 to
   113,680 pixels). The visual tokens replace the image placeholders; positions are plain ``0..L-1`` (the authors call
   the language model with ``inputs_embeds`` only). The output is the text model's normed last hidden state (the
   authors' ``multimodal_llm.norm = Identity()`` lands on the outer class, so the final RMSNorm stays in effect).
2. A final layer -- a copy of the MLLM's last decoder layer and its norm -- receives that sequence with 64 learnable
   reference tokens (init ``0.1 * N(0, 1)``, shape 64 x hidden) appended at the END, and the last 64 hidden states
   are kept. Its attention is CAUSAL by default (``final_layer_attention="causal"``), as the released checkpoints
   were trained and run: the authors set ``self_attn.is_causal = False``, but under their pinned transformers 4.45.2
   the SDPA attention never reads that flag -- ``Qwen2VLModel._update_causal_mask`` builds a causal mask (or returns
   None for an unpadded batch, and ``Qwen2VLSdpaAttention`` then calls SDPA with ``is_causal = causal_mask is None
   and q_len > 1``). Issue 12 ran their code on those versions with the same tiny weights: it matches the causal
   tokens to 2e-5 and differs from the bidirectional ones by up to 0.055. ``final_layer_attention="bidirectional"`` is
   what the authors' code says it does (every token sees every token; padding still masked).
3. A projector ``Linear(h, h) -> GELU -> Linear(h, cross_dim) -> LayerNorm(cross_dim)`` (1536 -> 1536 -> 2048) maps
   them to 64 image tokens, appended after SDXL's 77 text tokens.
4. Every ``attn2`` of the UNet gets decoupled cross-attention (``to_k_ip``/``to_v_ip``, weight ``scale``); stages 2-3
   add LoRA rank 128 on q/k/v/out of every UNet attention (``use_lora``).
5. Unconditional branch: a black 512 x 512 image with the template and an empty caption [I: the training-time
   image/text drop], and the negative prompt.

Checkpoints in the authors' layout load directly: keys ``image_proj_model.``, ``mllm_final_layer.``,
``multimodal_llm.`` (transformers < 4.50 names: ``model.layers``, ``visual.``; mapped to today's) and ``unet.``, in a
``.safetensors`` file or a DeepSpeed ``.pt`` whose ``module`` entry holds them.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from PIL import Image
from torch import nn

from mrbench.baselines.attention import install_processors, set_scale
from mrbench.baselines.sdxl import SDXLConfig, SDXLGenerator, resolve_dtype
from mrbench.baselines.tiny import TINY_QWEN2VL, TinySDXLWeights, random_weights, tiny_model
from mrbench.config import ConfigError
from mrbench.evaluation.generator import GenerationRequest, GenerationResult
from mrbench.log import get_logger

log = get_logger("baselines.easyref")

MLLM_TEMPLATE = ("Visualize a scene that closely resembles the provided images, capturing the essence and details "
                 "described in this prompt:\n")
QWEN2VL = "Qwen/Qwen2-VL-2B-Instruct"
EASYREF_REPO = "zongzhuofan/EasyRef"
PREFIXES = ("image_proj_model", "mllm_final_layer", "multimodal_llm", "unet")
FINAL_LAYER_ATTENTION = ("causal", "bidirectional")


@dataclass
class EasyRefConfig(SDXLConfig):
    """EasyRef options (plus :class:`~mrbench.baselines.sdxl.SDXLConfig`).

    Attributes:
        mllm: Qwen2-VL folder or hub id (HF cache).
        ckpt: EasyRef checkpoint: a ``.safetensors`` / ``.pt`` / ``.bin`` file, a folder, or a hub id whose cached
            snapshot holds one. Required with real weights; optional for ``easyref-tiny``.
        num_tokens: Reference tokens (paper: 64).
        use_lora: LoRA on the UNet attention (None: on when the checkpoint has LoRA weights).
        lora_rank: LoRA rank (paper: 128).
        cond_image_size: Reference resolution (None: 336; ``easyref-tiny``: 56).
        scale: Weight of the reference branch in cross-attention (authors' default 1.0).
        mllm_dtype: Dtype of the MLLM, final layer and projector (None: bfloat16 on CUDA, float32 on CPU and for
            ``easyref-tiny``).
        trust_pickle: Allow full unpickling of ``.pt`` checkpoints (DeepSpeed files may need it; only for files you
            trust). Default: tensors only.
        init_seed: Seed of the EasyRef layers' initialisation (reference tokens, projector, adapters, LoRA) before any
            checkpoint is loaded.
        final_layer_attention: ``causal`` (default: what the released checkpoints were trained with, see the module
            docstring) or ``bidirectional`` (the authors' stated intent, ``is_causal=False``).
        revision: Hub revision of ``ckpt`` when it is a hub id: a commit hash, or a branch / tag the HF cache has a
            ``refs/`` entry for (None: the cache's ``main``). The authors re-released weights in July 2025 and the
            causal-mask finding holds for the December 2024 code and weights, so pin the commit you mean; every run
            records the commit it loaded (``weights.easyref_revision``) and the file's sha256.
        guidance_scale: 7.5 by default, the value the paper states for inference [seed 001]; the authors'
            ``EasyRef.generate`` passes no guidance, so their demo samples at diffusers' SDXL default, 5.0
            (``guidance_scale=5.0`` reproduces that path).
    """

    mllm: str = QWEN2VL
    ckpt: str | None = EASYREF_REPO
    num_tokens: int = 64
    use_lora: bool | None = None
    lora_rank: int = 128
    cond_image_size: int | None = None
    scale: float = 1.0
    mllm_dtype: str | None = None
    trust_pickle: bool = False
    init_seed: int = 0
    final_layer_attention: str = "causal"
    revision: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.final_layer_attention not in FINAL_LAYER_ATTENTION:
            raise ConfigError(f"final_layer_attention must be one of {', '.join(FINAL_LAYER_ATTENTION)}; "
                              f"got {self.final_layer_attention!r}")
        if self.num_tokens < 1 or self.lora_rank < 1:
            raise ConfigError("num_tokens and lora_rank must be >= 1")
        if self.cond_image_size is not None and self.cond_image_size < 56:
            raise ConfigError("cond_image_size must be >= 56 (two 28-pixel Qwen2-VL patches)")


# ------------------------------------------------------------------------------------------------ modules


class MLPProjector(nn.Module):
    """``Linear(h, h) -> GELU -> Linear(h, cross) -> LayerNorm(cross)`` (keys ``proj.0``, ``proj.2``, ``proj.3``)."""

    def __init__(self, hidden: int, cross_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, cross_dim), nn.LayerNorm(cross_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ReferenceFinalLayer(nn.Module):
    """The MLLM's last decoder layer (a copy) with learnable reference tokens appended at the end.

    State keys match the authors' ``mllm_final_layer.``: ``layers.0.*``, ``norm.weight``, ``reference_tokens``.

    Args:
        layer: The decoder layer to own.
        norm: The final RMSNorm to own.
        rotary_emb: The text model's rotary embedding (no weights).
        num_tokens: Reference tokens.
        hidden: Hidden width.
        causal: Causal attention (position i sees positions <= i; what the released checkpoints ran with, see the
            module docstring) or bidirectional. Padding is masked either way.
    """

    def __init__(self, layer: nn.Module, norm: nn.Module, rotary_emb: nn.Module, num_tokens: int, hidden: int,
                 causal: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList([layer])
        self.norm = norm
        self.rotary_emb = rotary_emb
        self.reference_tokens = nn.Parameter(0.1 * torch.randn(num_tokens, hidden))
        self.causal = causal
        for lyr in self.layers:
            # The mask below is always explicit, so this flag only matters where no mask is passed; keep it truthful.
            lyr.self_attn.is_causal = causal

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` (B, L, H) from the truncated MLLM and its padding mask (B, L) -> (B, num_tokens, H)."""
        b, n = hidden.shape[0], self.reference_tokens.shape[0]
        x = torch.cat([hidden, self.reference_tokens.to(hidden.dtype)[None].expand(b, -1, -1)], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(b, n)], dim=1)
        length = x.shape[1]
        positions = torch.arange(length, device=x.device).view(1, 1, -1).expand(3, b, -1)
        pos_emb = self.rotary_emb(x, positions)
        allowed = mask.bool()[:, None, None, :].expand(b, 1, length, length)  # padding keys are never seen
        if self.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        additive = None
        if not bool(allowed.all()):
            additive = torch.zeros(b, 1, length, length, dtype=x.dtype, device=x.device)
            additive = additive.masked_fill(~allowed, torch.finfo(x.dtype).min)
        for lyr in self.layers:
            x = lyr(x, attention_mask=additive, position_embeddings=pos_emb)
        return self.norm(x)[:, -n:]


def qwen_resize(image: Image.Image, factor: int = 28, min_pixels: int = 4 * 28 * 28,
                max_pixels: int = 16384 * 28 * 28) -> Image.Image:
    """The resize ``qwen_vl_utils.fetch_image`` applies before the processor (sides to multiples of 28, pixel count
    within bounds); the processor then fits the image to the ``cond_image_size`` pixel range."""
    w, h = image.size
    h_bar = max(factor, round(h / factor) * factor)
    w_bar = max(factor, round(w / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        h_bar, w_bar = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        h_bar, w_bar = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return image.convert("RGB").resize((w_bar, h_bar), Image.BICUBIC)


def pixel_bounds(cond_image_size: int) -> tuple[int, int]:
    """EasyRef's (min_pixels, max_pixels) for a reference size: 336 -> (94864, 113680)."""
    k = cond_image_size // 28
    return (k - 1) ** 2 * 28 * 28, (k**2 + 1) * 28 * 28


# ------------------------------------------------------------------------------------------------ key layouts

_OLD_TO_NEW = [(re.compile(r"^visual\."), "model.visual."),
               (re.compile(r"^model\.(?!language_model\.|visual\.)"), "model.language_model.")]
_NEW_TO_OLD = [(re.compile(r"^model\.visual\."), "visual."), (re.compile(r"^model\.language_model\."), "model.")]


def mllm_key_to_current(key: str) -> str:
    """Authors' (transformers < 4.50) Qwen2-VL key -> today's layout (``model.language_model.``, ``model.visual.``)."""
    for pat, rep in _OLD_TO_NEW:
        if pat.match(key):
            return pat.sub(rep, key, count=1)
    return key


def mllm_key_to_authors(key: str) -> str:
    for pat, rep in _NEW_TO_OLD:
        if pat.match(key):
            return pat.sub(rep, key, count=1)
    return key


def read_checkpoint(path: Path, trust_pickle: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Split an authors'-layout checkpoint into its four parts (prefix removed)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path))
    else:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
        flat = obj["module"] if isinstance(obj, dict) and "module" in obj else obj
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in PREFIXES}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in parts:
            parts[head][rest] = value
    if not any(parts.values()):
        raise ValueError(f"{path}: no key starts with {', '.join(p + '.' for p in PREFIXES)} (not an EasyRef checkpoint)")
    return parts


def cached_revision(spec: str, revision: str | None) -> Path | None:
    """The HF-cache snapshot folder of hub repo ``spec`` at ``revision`` (a commit hash, or a branch / tag the cache
    has a ``refs/`` entry for; None: ``main``), or None when the cache does not hold it."""
    from mrbench.backends.weights import hf_hub_cache

    repo = hf_hub_cache() / f"models--{spec.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    folder = repo / "snapshots" / commit if commit else None
    return folder if folder is not None and folder.is_dir() else None


def snapshot_commit(path: Path) -> str | None:
    """The hub commit of a file inside an HF-cache snapshot (``.../snapshots/<commit>/...``), else None."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def find_checkpoint(spec: str, revision: str | None = None) -> Path:
    """A checkpoint file from a file path, a folder, or a hub id (mirror folder or the HF cache snapshot of
    ``revision``; None: the cache's ``main``, else its only snapshot)."""
    from mrbench.backends.weights import hf_hub_cache, missing_weights, mirror_dir

    p = Path(spec).expanduser()
    folders: list[Path] = []
    looked: list[str] = []
    if p.is_file():
        return p
    if p.is_dir():
        folders.append(p)
    elif not spec.startswith((".", "/", "~")):
        if mirror_dir() is not None and revision is None:  # a mirror folder has no revisions
            folders.append(mirror_dir() / spec)  # type: ignore[operator]
        pinned = cached_revision(spec, revision)
        snapshots = sorted((hf_hub_cache() / f"models--{spec.replace('/', '--')}" / "snapshots").glob("*"))
        if pinned is not None:
            folders.append(pinned)
        elif revision is None and len(snapshots) == 1:
            folders += snapshots
        else:
            looked.append(f"{spec} at revision {revision or 'main'} (cached: "
                          f"{', '.join(f.name[:12] for f in snapshots) or 'none'})")
    for folder in folders:
        for pattern in ("*.safetensors", "*.pt", "*.bin"):
            hits = sorted(folder.rglob(pattern)) if folder.is_dir() else []
            if hits:
                return hits[0]
        looked.append(f"{folder} (no .safetensors/.pt/.bin)")
    if not folders:
        looked.append(f"{spec} (no such file or cached repo)")
    raise missing_weights(f"EasyRef checkpoint ({spec})", looked,
                          f"on a connected machine run `hf download {EASYREF_REPO}"
                          f"{f' --revision {revision}' if revision else ''}` and copy the HF cache here, or pass "
                          "--model-args ckpt=/path/to/easyref.safetensors (or a DeepSpeed .pt with a 'module' key)")


# ------------------------------------------------------------------------------------------------ generator


class EasyRefGenerator(SDXLGenerator):
    """EasyRef-SDXL: references -> Qwen2-VL -> 64 reference tokens -> decoupled cross-attention."""

    name = "easyref"
    config_cls = EasyRefConfig
    default_cond_image_size: ClassVar[int] = 336  # the authors' reference resolution
    cuda_mllm_dtype: ClassVar[str] = "bfloat16"  # the MLLM's dtype on CUDA unless mllm_dtype says otherwise

    def check_weights(self) -> None:
        super().check_weights()
        cfg: EasyRefConfig = self.config
        self._ckpt: Path | None = None
        from mrbench.backends.weights import MissingWeightsError, resolve_hf_model_dir

        if not cfg.ckpt:
            raise ConfigError("easyref needs a checkpoint with real weights (--model-args ckpt=...)")
        try:  # a miss is collected (SDXLGenerator.check_weights): every missing weight is reported at once
            self._mllm_dir = resolve_hf_model_dir(
                cfg.mllm, what=f"Qwen2-VL ({cfg.mllm})",
                how=f"on a connected machine run `hf download {QWEN2VL}` and copy the HF cache here, or pass "
                    "--model-args mllm=/local/qwen2-vl")
        except MissingWeightsError as e:
            self.missing.append(e)
        self._ckpt = find_checkpoint(cfg.ckpt, cfg.revision)

    def __init__(self, profile: str = "default", **options: Any) -> None:
        super().__init__(profile, **options)
        cfg: EasyRefConfig = self.config
        default_dtype = self.cuda_mllm_dtype if self.device.startswith("cuda") else "float32"
        self.mllm_dtype = resolve_dtype(cfg.mllm_dtype or default_dtype, self.device)
        self.cond_image_size = cfg.cond_image_size or self.default_cond_image_size
        self.processor, mllm = self.load_mllm(*pixel_bounds(self.cond_image_size))
        parts = read_checkpoint(self._ckpt, cfg.trust_pickle) if self._ckpt else None
        use_lora = cfg.use_lora
        if use_lora is None:
            use_lora = bool(parts and any("_lora." in k for k in parts["unet"]))
        self.use_lora = use_lora
        self._build(mllm, parts)

    def load_mllm(self, min_px: int, max_px: int) -> tuple[Any, Any]:
        """The Qwen2-VL processor (references fitted to ``min_px`` .. ``max_px`` pixels) and model."""
        from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

        processor = AutoProcessor.from_pretrained(str(self._mllm_dir), min_pixels=min_px, max_pixels=max_px,
                                                  local_files_only=True)
        mllm = Qwen2VLForConditionalGeneration.from_pretrained(
            str(self._mllm_dir), torch_dtype=self.mllm_dtype, attn_implementation="sdpa", local_files_only=True)
        return processor, mllm

    def mllm_weights(self) -> str:
        """Which MLLM weights."""
        return self.config.mllm

    def _build(self, mllm: Any, parts: dict[str, dict[str, torch.Tensor]] | None) -> None:
        from mrbench.backends.torch_common import seeded

        cfg: EasyRefConfig = self.config
        text = mllm.model.language_model
        hidden = mllm.config.text_config.hidden_size
        with seeded(cfg.init_seed):
            self.mllm_final_layer = ReferenceFinalLayer(
                copy.deepcopy(text.layers[-1]), copy.deepcopy(text.norm), copy.deepcopy(text.rotary_emb),
                cfg.num_tokens, hidden, causal=cfg.final_layer_attention == "causal")
            self.image_proj_model = MLPProjector(hidden, self.pipe.unet.config.cross_attention_dim)
            install_processors(self.pipe.unet, cfg.num_tokens, cfg.scale, cfg.lora_rank if self.use_lora else 0)
        text.layers = text.layers[:-1]  # the MLLM without its last layer
        mllm.config.text_config.num_hidden_layers = len(text.layers)
        self.multimodal_llm = mllm.eval().requires_grad_(False)
        for m in (self.mllm_final_layer, self.image_proj_model, self.multimodal_llm):
            m.to(self.device, self.mllm_dtype).eval().requires_grad_(False)
        self.pipe.unet.to(self.device)
        if parts is not None:
            self.load_parts(parts)
        self._uncond: torch.Tensor | None = None
        # The last sample's reference tokens: the seeds of one sample arrive one after another and share them.
        self._last_refs: tuple[tuple[str, ...], torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------------------ checkpoints
    def authors_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight in the authors' key layout (``image_proj_model.``, ``mllm_final_layer.``, ``multimodal_llm.``
        with transformers < 4.50 names, ``unet.``); what :meth:`load_parts` reads back."""
        out: dict[str, torch.Tensor] = {}
        for k, v in self.image_proj_model.state_dict().items():
            out[f"image_proj_model.{k}"] = v
        for k, v in self.mllm_final_layer.state_dict().items():
            out[f"mllm_final_layer.{k}"] = v
        for k, v in self.multimodal_llm.state_dict().items():
            out[f"multimodal_llm.{mllm_key_to_authors(k)}"] = v
        for k, v in self.pipe.unet.state_dict().items():
            out[f"unet.{k}"] = v
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}

    def load_parts(self, parts: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Load a split checkpoint as the authors do: projector and final layer strictly, the MLLM and the UNet
        partially (a checkpoint may hold only the trained UNet parameters). Returns key counts."""
        report: dict[str, Any] = {}
        if parts["image_proj_model"]:
            self.image_proj_model.load_state_dict(parts["image_proj_model"])
        if parts["mllm_final_layer"]:
            self.mllm_final_layer.load_state_dict(parts["mllm_final_layer"])
        for name, module, sd in (
            ("multimodal_llm", self.multimodal_llm, {mllm_key_to_current(k): v for k, v in parts["multimodal_llm"].items()}),
            ("unet", self.pipe.unet, parts["unet"]),
        ):
            if not sd:
                continue
            missing, unexpected = module.load_state_dict(sd, strict=False)
            unexpected = [k for k in unexpected if not k.endswith("inv_freq")]
            if len(unexpected) == len(sd):
                raise ValueError(f"checkpoint part {name!r}: none of its {len(sd)} keys fits this model "
                                 f"(e.g. {unexpected[:3]}); wrong architecture or use_lora setting?")
            if unexpected:
                hint = " (LoRA weights: pass use_lora=true)" if any("_lora." in k for k in unexpected) else ""
                raise ValueError(f"checkpoint part {name!r}: {len(unexpected)} keys do not fit{hint}, e.g. {unexpected[:3]}")
            report[name] = {"loaded": len(sd), "not_in_checkpoint": len(missing)}
        for m in (self.mllm_final_layer, self.image_proj_model, self.multimodal_llm):
            m.to(self.device, self.mllm_dtype)
        self._uncond = self._last_refs = None
        return report

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        return self.load_parts(read_checkpoint(Path(path), self.config.trust_pickle))

    # ------------------------------------------------------------------------------------------------ encoding
    @torch.no_grad()
    def reference_tokens(self, images: Sequence[Image.Image], caption: str) -> torch.Tensor:
        """(1, num_tokens, cross_dim) image tokens for the references and the caption."""
        images = [qwen_resize(im) for im in images]
        messages = [{"role": "user", "content": [{"type": "image", "image": im} for im in images]
                     + [{"type": "text", "text": MLLM_TEMPLATE + caption}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[text], images=images, padding=True, return_tensors="pt")
        input_ids = inputs["input_ids"].to(self.device)
        attention_mask = inputs["attention_mask"].to(self.device)
        model = self.multimodal_llm.model
        embeds = model.language_model.embed_tokens(input_ids)
        visual = model.visual(inputs["pixel_values"].to(self.device, model.visual.dtype),
                              grid_thw=inputs["image_grid_thw"].to(self.device)).pooler_output
        slots = (input_ids == self.multimodal_llm.config.image_token_id)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(slots, visual.to(embeds.dtype))
        positions = torch.arange(embeds.shape[1], device=self.device).view(1, 1, -1).expand(3, embeds.shape[0], -1)
        hidden = model.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                      position_ids=positions).last_hidden_state
        tokens = self.mllm_final_layer(hidden, attention_mask)
        return self.image_proj_model(tokens).to(self.pipe.unet.dtype)

    def uncond_tokens(self) -> torch.Tensor:
        if self._uncond is None:
            self._uncond = self.reference_tokens([Image.new("RGB", (512, 512))], "")
        return self._uncond

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """The MLLM encodes each request's references; the diffusion runs once for the batch (one generator each)."""
        set_scale(self.pipe.unet, self.config.scale)
        out: list[GenerationResult | None] = [None] * len(requests)
        idx: list[int] = []
        conds: list[torch.Tensor] = []
        with torch.no_grad():
            for i, req in enumerate(requests):
                if not req.sample.references:
                    out[i] = GenerationResult.failed("no_references", "EasyRef needs at least one reference")
                    continue
                key = (req.sample.prompt, *(r.id for r in req.sample.references))
                if self._last_refs is None or self._last_refs[0] != key:
                    refs = [r.load() for r in req.sample.references]
                    self._last_refs = (key, self.reference_tokens(refs, req.sample.prompt))
                conds.append(self._last_refs[1])
                idx.append(i)
            if idx:
                n = len(idx)
                pe, ne, pooled, npooled = self.pipe.encode_prompt(
                    [requests[i].sample.prompt for i in idx], device=self.device, num_images_per_prompt=1,
                    do_classifier_free_guidance=True, negative_prompt=[self.config.negative_prompt] * n)
                images = self.sample(
                    [requests[i].seed for i in idx], prompt_embeds=torch.cat([pe, torch.cat(conds)], 1),
                    negative_prompt_embeds=torch.cat([ne, self.uncond_tokens().expand(n, -1, -1)], 1),
                    pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=npooled,
                )
                for i, image in zip(idx, images):
                    out[i] = GenerationResult(image, info={"num_references": len(requests[i].sample.references)})
        return out  # type: ignore[return-value]

    def _ckpt_sha256(self) -> str:
        """sha256 of the checkpoint file (computed once per generator)."""
        if getattr(self, "_ckpt_digest", None) is None:
            from mrbench.shards import sha256_file

            self._ckpt_digest = sha256_file(self._ckpt)  # type: ignore[arg-type]
        return self._ckpt_digest

    def weights(self) -> dict[str, Any]:
        w = super().weights()
        w["mllm"] = self.mllm_weights()
        w["easyref"] = str(self._ckpt) if self._ckpt else f"random(seed={self.config.init_seed})"
        if self._ckpt is not None:  # which weights exactly: the hub commit (HF-cache snapshot) and the file's bytes
            w["easyref_revision"] = snapshot_commit(self._ckpt)
            w["easyref_sha256"] = self._ckpt_sha256()
        w["use_lora"] = self.use_lora
        return w


class TinyEasyRefWeights(TinySDXLWeights):
    """Weights mixin of ``easyref-tiny``: a tiny random Qwen2-VL (seed ``tiny_seed + 20``) and processor built
    offline; the EasyRef layers are random (``init_seed``) unless a checkpoint is given."""

    def check_weights(self) -> None:
        super().check_weights()
        cfg: EasyRefConfig = self.config
        self._ckpt = find_checkpoint(cfg.ckpt, cfg.revision) if cfg.ckpt and cfg.ckpt != EASYREF_REPO else None

    def load_mllm(self, min_px: int, max_px: int) -> tuple[Any, Any]:
        from mrbench.baselines.tiny import tiny_qwen2vl, tiny_qwen2vl_processor

        processor = tiny_qwen2vl_processor(min_px, max_px)
        return processor, tiny_qwen2vl(self.config.tiny_seed + 20, processor.tokenizer)

    def mllm_weights(self) -> str:
        return random_weights(self.config.tiny_seed + 20, TINY_QWEN2VL)


TinyEasyRefGenerator = tiny_model(EasyRefGenerator, TinyEasyRefWeights, default_cond_image_size=56,
                                  cuda_mllm_dtype="float32")
