"""MM-Diff (Wei et al., "High-Fidelity Image Personalization via Multi-Modal Condition Integration", arXiv 2403.15059):
tuning-free SDXL personalisation, run as the authors' multiple-reference notebook runs it [C: alibaba/mm-diff,
``mmdiff/{model,attention_processor,pipeline}.py``, ``datasets.py``, ``mmdiff_multiple_reference_demo.ipynb``].

Weights, as the authors' demos load them: SDXL base, the fp16-fix VAE (``madebyollin/sdxl-vae-fp16-fix``) in place of
SDXL's, CLIP ViT-L/14 (``openai/clip-vit-large-patch14``), insightface's ``buffalo_l`` pack, and their checkpoint
folder (``checkpoints/portrait_generation``: ``unet_adapter_weights.bin``, ``text_encoder_adapter_weights.bin``,
``custom_weights.bin``; layouts in :mod:`mrbench.baselines.mm_diff_layers`). Their public code loads only this
portrait checkpoint: every reference enters through a face embedding, so no other checkpoint runs with it.

Per sample (every seed of a sample shares its reference encoding):

1. References: every reference of the sample (``max_references`` caps it), each through insightface ``buffalo_l``
   (SCRFD at 640 x 640); the first face insightface returns (its best detection score) gives the 512-d
   ``normed_embedding`` and, aligned from its 5 landmarks to 224 x 224, CLIP's penultimate-layer patch features (the
   original CLIP weights, CLIP's own preprocessing). A reference without a face is left out (the authors' loader
   stops there); a sample with no face at all is the failed row ``no_face``.
2. Subject tokens: the face head turns each reference into 4 tokens; all references' tokens are concatenated and
   attended jointly by the image branch of every cross-attention (one softmax over 4 x N tokens), weighted
   ``fuse_scale`` (0.8); the unconditional half of classifier-free guidance has no image branch.
3. Vision-augmented text: the first used reference, padded to a square (black), resized to 224 and normalised,
   goes through the authors' fine-tuned CLIP; its projected embedding is fused into the token embedding of the class
   noun in both text encoders (``mm_fuse_one`` / ``mm_fuse_two`` on ``[token; object]``). The authors mark the noun
   with ``<|subj|>`` ("a man<|subj|> in a spacesuit"); here it is the sample's class noun where the prompt has it,
   else the benchmark's DreamBooth-style prompt with ``sks <class>`` replaced by ``<class><|subj|>``. The fusion
   also lands on the negative prompt's token at that position, as the authors' code does (``fuse_negative``).
4. Sampling: the notebook's settings: SDXL's Euler scheduler, 25 steps, guidance 5.0, 512 x 512, its negative
   prompt, ``start_merge_step=0`` (conditioning from the first step).

Everything MM-Diff adds is merged into the weights at load (the demos' ``fuse_lora=True``).
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from PIL import Image

from mrbench.baselines.mm_diff_layers import (
    TRIGGER, ImageTokens, MMDiffCheckpoint, MMDiffHeads, MMDiffSpec, fuse_text_encoder_lora, fused_subject_tokens,
    image_condition, install_unet_adapter, random_checkpoint, spec_from_checkpoint,
)
from mrbench.baselines.sdxl import SDXLConfig, SDXLGenerator, resolve_local_repo
from mrbench.baselines.tiny import TINY_SDXL, TinySDXLWeights, tiny_clip_vision, tiny_model
from mrbench.config import ConfigError
from mrbench.evaluation.generator import GenerationRequest, GenerationResult, Sample

MMDIFF_REPO = "alibaba/mm-diff"
MMDIFF_CHECKPOINTS_URL = ("https://cloudbook-public-daily.oss-cn-hangzhou.aliyuncs.com/Personalization/checkpoints/"
                          "checkpoints.tar.gz")
SDXL_VAE_FIX = "madebyollin/sdxl-vae-fp16-fix"
CLIP_L14 = "openai/clip-vit-large-patch14"
CKPT_FILES = ("unet_adapter_weights.bin", "text_encoder_adapter_weights.bin", "custom_weights.bin")
DEFAULT_CKPT = "mm-diff/portrait_generation"  # under $MRBENCH_WEIGHTS_DIR, or a folder path
NOTEBOOK_NEGATIVE = ("longbody, lowres, bad anatomy, bad teeth, bad hands, missing fingers, extra digit, fewer digits, "
                     "cropped, worst quality, low quality")
IDENTIFIER = "sks"  # the benchmarks' DreamBooth identifier (mrbench.evaluation.benchmarks.IDENTIFIER)
SUBJECT_SIZE = 224  # the authors' subject transform: pad to square, resize to 224
FACE_CROP = 224  # insightface norm_crop size for the CLIP face features
TINY_SPEC = MMDiffSpec(refiner_depth=2, refiner_dim_head=16, lora_rank=4)


@dataclass
class MMDiffConfig(SDXLConfig):
    """MM-Diff options (plus :class:`~mrbench.baselines.sdxl.SDXLConfig`; sampling defaults from the authors'
    multiple-reference notebook).

    Attributes:
        ckpt: The checkpoint folder (the three ``.bin`` files): a path, or a name under ``$MRBENCH_WEIGHTS_DIR``.
            ``mm-diff-tiny``: a random checkpoint unless a folder is given.
        vae: The fp16-fix SDXL VAE (diffusers folder or hub id).
        image_encoder: CLIP ViT-L/14 (transformers folder or hub id).
        face_pack: insightface pack (the authors': ``buffalo_l``).
        face_root: insightface root holding ``models/<pack>`` (None: ``$MRBENCH_WEIGHTS_DIR``, ``~/.insightface``).
        fuse_scale: Weight of the image branch in cross-attention (notebook: 0.8).
        max_references: Use at most this many references (benchmark order); 0 for all (the notebook uses all).
        fuse_negative: Fuse the subject embedding into the negative prompt's token at the subject position too, as
            the authors' code does (their hook sees every text-encoder call).
        trust_pickle: Allow full unpickling of the ``.bin`` files (only for files you trust). Default: tensors only.
        init_seed: Seed of the random checkpoint of ``mm-diff-tiny``.
        refiner_dim_head: Head width of the face head's SE refiner, which the checkpoint does not record (None: the
            authors' 256; ``mm-diff-tiny``'s 16).
    """

    num_inference_steps: int = 25
    guidance_scale: float = 5.0
    scheduler: str = "euler"
    negative_prompt: str = NOTEBOOK_NEGATIVE
    ckpt: str = DEFAULT_CKPT
    vae: str = SDXL_VAE_FIX
    image_encoder: str = CLIP_L14
    face_pack: str = "buffalo_l"
    face_root: str | None = None
    fuse_scale: float = 0.8
    max_references: int = 0
    fuse_negative: bool = True
    trust_pickle: bool = False
    init_seed: int = 0
    refiner_dim_head: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.refiner_dim_head is not None and self.refiner_dim_head < 1:
            raise ConfigError("refiner_dim_head must be >= 1")
        if self.max_references < 0:
            raise ConfigError("max_references must be >= 0 (0: all)")


# ------------------------------------------------------------------------------------------------ weights


def find_checkpoint_dir(spec: str) -> Path:
    """The checkpoint folder for ``spec`` (a path, or a name under ``$MRBENCH_WEIGHTS_DIR``) holding all three files.

    Raises:
        MissingWeightsError: naming the folders searched, the files each lacks, and how to get them.
    """
    from mrbench.backends.weights import WEIGHTS_DIR_ENV, mirror_dir, missing_weights

    candidates = [Path(spec).expanduser().absolute()]
    looked: list[str] = []
    if not spec.startswith((".", "/", "~")):
        mirror = mirror_dir()
        if mirror is not None:
            candidates.append(mirror / spec)
        else:
            looked.append(f"${WEIGHTS_DIR_ENV}/{spec} (${WEIGHTS_DIR_ENV} is not set)")
    for c in candidates:
        absent = [f for f in CKPT_FILES if not (c / f).is_file()]
        if not absent:
            return c
        looked.append(f"{c} (no {', '.join(absent)})")
    raise missing_weights(
        f"MM-Diff checkpoint ({spec}: {', '.join(CKPT_FILES)})", looked,
        f"on a connected machine download the authors' checkpoints ({MMDIFF_CHECKPOINTS_URL}, linked from "
        f"github.com/{MMDIFF_REPO}), unpack them and pass --model-args ckpt=/path/to/checkpoints/portrait_generation, "
        f"or put that folder at ${WEIGHTS_DIR_ENV}/{DEFAULT_CKPT}")


def read_checkpoint(folder: Path, trust_pickle: bool = False) -> MMDiffCheckpoint:
    """The three files of a checkpoint folder (``torch.load`` on CPU; tensors only unless ``trust_pickle``)."""
    def load(name: str) -> dict[str, Any]:
        try:
            obj = torch.load(str(folder / name), map_location="cpu", weights_only=not trust_pickle)
        except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for unreadable files
            raise ValueError(f"{folder / name}: not a readable torch file ({type(e).__name__}: {e}); a file holding "
                             "more than tensors needs --model-args trust_pickle=true (only for files you trust)") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{folder / name}: expected a dict of tensors, got {type(obj).__name__}")
        return obj

    return MMDiffCheckpoint(load(CKPT_FILES[0]), load(CKPT_FILES[1]), load(CKPT_FILES[2]))


def write_checkpoint(ckpt: MMDiffCheckpoint, folder: Path) -> Path:
    """Write ``ckpt`` as the authors' three files (what :func:`read_checkpoint` reads back)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in zip(CKPT_FILES, (ckpt.unet_adapter, ckpt.text_encoder_adapter, ckpt.custom)):
        torch.save(obj, folder / name)
    return folder


# ------------------------------------------------------------------------------------------------ prompts


def subject_prompt(sample: Sample) -> str | None:
    """The prompt with the trigger after the class noun (``a dog<|subj|> in the jungle``), or None without a class
    noun. The noun is the sample's ``class_token``, where the prompt has it as a word; otherwise the benchmark's
    DreamBooth-style prompt with ``sks <class>`` replaced by ``<class><|subj|>``."""
    cls = sample.class_token.strip()
    if not cls:
        return None
    m = re.search(rf"(?<!\w){re.escape(cls)}(?!\w)", sample.prompt, flags=re.IGNORECASE)
    if m:
        return sample.prompt[: m.end()] + TRIGGER + sample.prompt[m.end():]
    marked = re.sub(rf"\b{IDENTIFIER}\s+({re.escape(cls)})(?!\w)", rf"\1{TRIGGER}", sample.identifier_prompt or "")
    return marked if TRIGGER in marked else None


def subject_position(tokenizer: Any, prompt: str) -> tuple[str, int | None]:
    """The prompt without the trigger and the index of the token the trigger follows (BOS counted, as the authors'
    mask); None when truncation drops it."""
    before, _, after = prompt.partition(TRIGGER)
    clean = before + after.replace(TRIGGER, "")
    index = len(tokenizer(before).input_ids) - 2  # BOS + the prefix's tokens + EOS: the last prefix token
    return clean, (index if 0 < index < tokenizer.model_max_length - 1 else None)


# ------------------------------------------------------------------------------------------------ generator


@dataclass
class ReferenceCondition:
    """One sample's encoded references: image tokens (1, 4N, cross), object vectors per text encoder, ids used."""

    tokens: torch.Tensor
    objects: tuple[torch.Tensor, torch.Tensor]
    used: list[str]


class MMDiffGenerator(SDXLGenerator):
    """MM-Diff on SDXL: face tokens through decoupled cross-attention + the subject fused into the class noun."""

    name = "mm-diff"
    config_cls = MMDiffConfig

    checkpoint_spec: ClassVar[MMDiffSpec] = MMDiffSpec()  # the authors' layer sizes

    def check_weights(self) -> None:
        super().check_weights()
        cfg: MMDiffConfig = self.config
        self._ckpt_dir: Path | None = None
        from mrbench.backends.insightface_face import resolve_pack
        from mrbench.backends.weights import MissingWeightsError, hf_model_how, resolve_hf_model_dir

        checks = {
            "_vae_dir": lambda: resolve_local_repo(
                cfg.vae, "config.json", what=f"SDXL fp16-fix VAE ({cfg.vae})",
                how=f"on a connected machine run `hf download {SDXL_VAE_FIX}` and copy the HF cache here, or pass "
                    "--model-args vae=/local/sdxl-vae-fp16-fix"),
            "_clip_dir": lambda: resolve_hf_model_dir(
                cfg.image_encoder, what=f"CLIP ViT-L/14 ({cfg.image_encoder})",
                how=hf_model_how(cfg.image_encoder, "a saved CLIPModel")),
            "_face_dir": lambda: resolve_pack(cfg.face_pack, cfg.face_root),
            "_ckpt_dir": lambda: find_checkpoint_dir(cfg.ckpt),
        }
        # The shared helpers name the backends' own option spellings; here they are --model-args of mm-diff.
        spelling = {"pass model=": "pass --model-args image_encoder=", "pass root=": "pass --model-args face_root="}
        for attr, check in checks.items():
            try:  # a miss is collected: every missing weight is reported at once
                setattr(self, attr, check())
            except MissingWeightsError as e:
                text = str(e)
                for old, new in spelling.items():
                    text = text.replace(old, new)
                self.missing.append(MissingWeightsError(text))

    def __init__(self, profile: str = "default", **options: Any) -> None:
        super().__init__(profile, **options)
        cfg: MMDiffConfig = self.config
        dtype = self.pipe.unet.dtype
        vae, encoder = self.load_face_stack(dtype)
        spec = self.checkpoint_spec
        self.pipe.register_modules(vae=vae.to(self.device).eval().requires_grad_(False))  # dtype set when loaded
        encoder = encoder.to(self.device, dtype).eval().requires_grad_(False)
        self.face_clip = encoder  # the original CLIP weights: patch features of the aligned faces
        self.subject_clip = copy.deepcopy(encoder)  # receives the authors' fine-tuned vision tower
        if self._ckpt_dir is not None:
            ckpt = read_checkpoint(self._ckpt_dir, cfg.trust_pickle)
        else:
            ckpt = random_checkpoint(self.pipe, encoder, spec, cfg.init_seed)
        self.refiner_dim_head = cfg.refiner_dim_head or spec.refiner_dim_head
        self.load_report = self.load_checkpoint(ckpt)
        self._last_refs: tuple[tuple[str, ...], ReferenceCondition | None] | None = None

    def load_face_stack(self, dtype: Any) -> tuple[Any, Any]:
        """The fp16-fix VAE and the CLIP vision encoder (in ``dtype``, returned), and the face processor and detector
        (set on ``self``)."""
        from diffusers import AutoencoderKL
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        from mrbench.backends.insightface_face import InsightFaceEncoder
        from mrbench.backends.weights import load_hf_pretrained

        vae = AutoencoderKL.from_pretrained(self._vae_dir, torch_dtype=dtype, local_files_only=True)
        encoder = load_hf_pretrained(CLIPVisionModelWithProjection, self._clip_dir, torch_dtype=dtype)
        self.face_processor = CLIPImageProcessor()  # the authors' defaults (= ViT-L/14's own preprocessing)
        self.face_app = InsightFaceEncoder(pack=self.config.face_pack, root=self.config.face_root, det_size=(640, 640))
        return vae, encoder

    def face_stack_weights(self) -> dict[str, str]:
        """Which VAE, image encoder and face pack."""
        cfg: MMDiffConfig = self.config
        return {"vae": cfg.vae, "image_encoder": cfg.image_encoder, "face": cfg.face_pack}

    @property
    def size(self) -> tuple[int, int]:
        """(height, width): 512 x 512 as the notebook samples."""
        h = self.config.height or 512
        return h, self.config.width or h

    def load_checkpoint(self, ckpt: MMDiffCheckpoint) -> dict[str, Any]:
        """Load the authors' files: the heads strictly, the fine-tuned CLIP non-strictly (as they do, but at least one
        key must fit), the UNet and text-encoder LoRA merged into the weights. Returns key counts."""
        pipe = self.pipe
        if "face_embeds_proj" not in ckpt.custom:
            raise ValueError(f"{CKPT_FILES[2]}: no 'face_embeds_proj' entry (has {sorted(ckpt.custom)})")
        self.spec = spec_from_checkpoint(ckpt.custom["face_embeds_proj"], self.refiner_dim_head)
        heads = MMDiffHeads.build(self.spec, self.face_clip.config.projection_dim, self.face_clip.config.hidden_size,
                                  pipe.text_encoder.config.hidden_size, pipe.text_encoder_2.config.hidden_size,
                                  pipe.unet.config.cross_attention_dim)
        report: dict[str, Any] = {}
        for name, module in heads.modules().items():
            if name not in ckpt.custom:
                raise ValueError(f"{CKPT_FILES[2]}: no {name!r} entry (has {sorted(ckpt.custom)})")
            module.load_state_dict(ckpt.custom[name])
        vision = ckpt.custom.get("image_encoder") or {}
        missing, unexpected = self.subject_clip.load_state_dict(vision, strict=False)
        unexpected = [k for k in unexpected if not k.endswith("position_ids")]
        if unexpected or len(missing) == len(self.subject_clip.state_dict()):
            raise ValueError(f"{CKPT_FILES[2]}: its 'image_encoder' entry does not fit CLIP ViT-L/14 "
                             f"({len(unexpected)} unknown keys, e.g. {unexpected[:3]})")
        report["image_encoder_keys"] = len(vision)
        self.heads = heads.to(self.device, pipe.unet.dtype)
        self.image_tokens = ImageTokens()
        report.update(install_unet_adapter(pipe.unet, ckpt.unet_adapter, self.image_tokens))
        report.update(fuse_text_encoder_lora({"text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2},
                                             ckpt.text_encoder_adapter))
        return report

    # ------------------------------------------------------------------------------------------------ encoding
    def subject_pixels(self, image: Image.Image) -> torch.Tensor:
        """The authors' subject transform: pad to a square with black (half each side), resize to 224 (bilinear,
        antialiased, uint8), to [0, 1], resize to the encoder's size if it differs, CLIP mean/std. (1, 3, S, S)."""
        import torch.nn.functional as F
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF
        from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        x = TF.pil_to_tensor(image.convert("RGB"))
        _, h, w = x.shape
        pad = abs(h - w) // 2
        if h > w:
            x = F.pad(x, (pad, pad, 0, 0))
        elif w > h:
            x = F.pad(x, (0, 0, pad, pad))
        x = TF.resize(x, [SUBJECT_SIZE, SUBJECT_SIZE], interpolation=InterpolationMode.BILINEAR, antialias=True)
        x = x.float()[None] / 255.0
        size = self.subject_clip.config.image_size
        if size != SUBJECT_SIZE:
            x = F.interpolate(x, (size, size), mode="bilinear", antialias=True)
        return TF.normalize(x, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    @torch.no_grad()
    def encode_references(self, refs: Sequence[tuple[str, Image.Image]]) -> ReferenceCondition | None:
        """Face tokens of every reference with a face and the object vectors of the first one; None without faces."""
        from insightface.utils import face_align

        dtype, device = self.pipe.unet.dtype, self.device
        ids, embeds, crops, first = [], [], [], None
        for ref_id, image in refs:
            faces, bgr = self.face_app.analyse(image)
            if not faces:
                continue
            face = faces[0]
            ids.append(ref_id)
            embeds.append(torch.as_tensor(face.normed_embedding, dtype=torch.float32))
            with warnings.catch_warnings():  # insightface calls a scikit-image API deprecated in 0.26
                warnings.filterwarnings("ignore", category=FutureWarning, module="insightface")
                crop = face_align.norm_crop(bgr, landmark=face.kps, image_size=FACE_CROP)
            crops.append(Image.fromarray(crop[:, :, ::-1].copy()))
            if first is None:
                first = image
        if not ids:
            return None
        px = self.face_processor(crops, return_tensors="pt").pixel_values.to(device, dtype)
        patches = self.face_clip(px, output_hidden_states=True).hidden_states[-2]
        tokens = self.heads.face_embeds_proj(torch.stack(embeds).to(device, dtype), patches)
        tokens = tokens.reshape(1, -1, tokens.shape[-1])
        obj = self.subject_clip(self.subject_pixels(first).to(device, dtype)).image_embeds
        return ReferenceCondition(tokens, self.heads.obj_embeds_proj(obj), ids)

    @torch.no_grad()
    def encode_prompts(self, prompt: str, cond: ReferenceCondition) -> tuple[torch.Tensor, ...]:
        """SDXL's (prompt, negative, pooled, negative pooled) embeddings with the subject fused into the class noun."""
        pipe, cfg = self.pipe, self.config
        clean, pos = subject_position(pipe.tokenizer, prompt)
        cfg_on = cfg.guidance_scale > 1
        encoders = ((pipe.text_encoder, self.heads.mm_fuse_one, cond.objects[0]),
                    (pipe.text_encoder_2, self.heads.mm_fuse_two, cond.objects[1]))

        def encode(text: str, negative: str | None, fused: bool) -> tuple[torch.Tensor, ...]:
            with fused_subject_tokens(encoders[0][0].get_input_embeddings(), encoders[0][1], [pos if fused else None],
                                      encoders[0][2]), \
                 fused_subject_tokens(encoders[1][0].get_input_embeddings(), encoders[1][1], [pos if fused else None],
                                      encoders[1][2]):
                return pipe.encode_prompt(text, device=self.device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=negative is not None, negative_prompt=negative)

        if not cfg_on:
            pe, _, pooled, _ = encode(clean, None, True)
            return pe, None, pooled, None
        if cfg.fuse_negative:
            return tuple(encode(clean, cfg.negative_prompt, True))
        pe, _, pooled, _ = encode(clean, None, True)
        ne, _, npooled, _ = encode(cfg.negative_prompt, None, False)
        return pe, ne, pooled, npooled

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One pipeline call per request (its own generator); the seeds of a sample reuse its reference encoding."""
        cfg: MMDiffConfig = self.config
        out: list[GenerationResult] = []
        for req in requests:
            refs = req.sample.references[: cfg.max_references or None]
            prompt = subject_prompt(req.sample)
            if not refs:
                out.append(GenerationResult.failed("no_references", "MM-Diff needs at least one reference"))
                continue
            if prompt is None:
                out.append(GenerationResult.failed(
                    "no_subject_word", "MM-Diff fuses the subject into its class noun; the sample has none "
                    f"(class_token {req.sample.class_token!r} not in the prompt nor in a 'sks <class>' prompt)"))
                continue
            key = tuple(r.id for r in refs)
            if self._last_refs is None or self._last_refs[0] != key:
                self._last_refs = (key, self.encode_references([(r.id, r.load()) for r in refs]))
            cond = self._last_refs[1]
            if cond is None:
                out.append(GenerationResult.failed(
                    "no_face", f"insightface ({cfg.face_pack}) found no face in any of the {len(refs)} references; "
                    "MM-Diff's released (portrait) checkpoint conditions on faces"))
                continue
            pe, ne, pooled, npooled = self.encode_prompts(prompt, cond)
            n = cond.tokens.shape[1]
            tokens = cond.tokens.to(pe.dtype)
            kwargs: dict[str, Any] = {"prompt_embeds": torch.cat([pe, tokens], 1), "pooled_prompt_embeds": pooled}
            scale = [cfg.fuse_scale]
            if ne is not None:  # the pipeline puts the unconditional rows first
                kwargs.update(negative_prompt_embeds=torch.cat([ne, torch.zeros_like(tokens)], 1),
                              negative_pooled_prompt_embeds=npooled)
                scale = [0.0, cfg.fuse_scale]
            with torch.no_grad(), image_condition(self.image_tokens, n, torch.tensor(scale, device=self.device)):
                (image,) = self.sample([req.seed], **kwargs)
            out.append(GenerationResult(image, info={"num_references": len(refs), "face_references": cond.used,
                                                     "prompt": prompt}))
        return out

    def weights(self) -> dict[str, Any]:
        w = {**super().weights(), **self.face_stack_weights()}
        cfg: MMDiffConfig = self.config
        w["mm_diff"] = str(self._ckpt_dir) if self._ckpt_dir else f"random(seed={cfg.init_seed}, {TINY_SPEC})"
        return w


class TinyMMDiffWeights(TinySDXLWeights):
    """Weights mixin of ``mm-diff-tiny``: its own tiny VAE (seed ``tiny_seed + 30``), a tiny CLIP vision encoder
    (``+ 31``) and the tiny insightface pack (``+ 32``); a random checkpoint of :data:`TINY_SPEC` unless a folder is
    given; the tiny SDXL's own sample size."""

    size = SDXLGenerator.size

    def check_weights(self) -> None:
        super().check_weights()
        self._ckpt_dir = find_checkpoint_dir(self.config.ckpt) if self.config.ckpt != DEFAULT_CKPT else None

    def load_face_stack(self, dtype: Any) -> tuple[Any, Any]:
        from diffusers import AutoencoderKL

        from mrbench.backends.insightface_face import TinyInsightFaceEncoder
        from mrbench.backends.torch_common import seeded

        seed = self.config.tiny_seed
        with seeded(seed + 30):  # its own VAE, as the fp16-fix one replaces SDXL's
            vae = AutoencoderKL(**TINY_SDXL["vae"], force_upcast=False)
        if dtype != torch.float32:
            vae = vae.to(dtype=dtype)
        encoder, self.face_processor = tiny_clip_vision(seed + 31)
        self.face_app = TinyInsightFaceEncoder(seed=seed + 32)
        return vae, encoder

    def face_stack_weights(self) -> dict[str, str]:
        seed = self.config.tiny_seed
        return {"vae": f"random(seed={seed + 30})", "image_encoder": f"random(seed={seed + 31})",
                "face": f"insightface-tiny(seed={seed + 32})"}


TinyMMDiffGenerator = tiny_model(MMDiffGenerator, TinyMMDiffWeights, checkpoint_spec=TINY_SPEC)
