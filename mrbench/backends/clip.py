"""CLIP image and text encoders: open_clip (``clip``), Hugging Face transformers (``clip-hf``), tiny random (``clip-tiny``).

Preprocessing (deterministic):

- ``clip`` / ``clip-tiny`` (open_clip): the pretrained tag's own eval transform: ``convert("RGB")``, resize the
  shorter side to the model's input size (bicubic, antialiased), centre crop, scale to [0, 1], normalise with the
  tag's mean/std (OpenAI mean/std for ``openai``). Texts: open_clip's tokenizer for the architecture; a text longer
  than the context (77 tokens) has its token ids sliced to the context, as torchmetrics' ``CLIPScore`` does (the
  end-of-text token is cut with the rest, not moved to the last slot as open_clip's own truncation would).
- ``clip-hf``: the checkpoint's ``CLIPProcessor`` (for OpenAI checkpoints the same recipe: shortest edge 224,
  bicubic, centre crop 224, OpenAI mean/std); texts padded to the longest in the batch, then ids and attention mask
  sliced to the model's maximum length. This is exactly what torchmetrics' ``CLIPScore`` does (long captions
  included), so ``100 * max(cos, 0)`` here equals it.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from mrbench.backends import weights as W  # first: sets offline mode before open_clip/transformers import
from mrbench.backends.base import BackendInfo, TextImageEncoder
from mrbench.backends.torch_common import (
    TorchImageEncoder, TorchOptions, batched, l2_normalize, pkg_version, place, random_info, seeded, to_rgb,
)

DEFAULT_CLIP_HF = "openai/clip-vit-large-patch14"

# A tiny open_clip CLIP (open_clip's own config schema) and the matching transformers CLIPConfig sizes.
TINY_OPEN_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_HF_CLIP_CFG: dict[str, Any] = {
    "projection_dim": 16,
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "vocab_size": 49408, "max_position_embeddings": 77},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8},
}


@dataclass
class ClipConfig(TorchOptions):
    """Options of the open_clip encoder.

    Attributes:
        model: open_clip architecture (``ViT-L-14``), an ``ARCH/PRETRAINED`` tag (``ViT-B-32/laion2b_s34b_b79k``),
            ``local-dir:/path`` (an open_clip export with ``open_clip_config.json``) or ``hf-hub:org/repo`` (taken
            from the local Hugging Face cache only).
        pretrained: Pretrained tag (``openai``) or a checkpoint file; ignored when ``model`` carries a tag.
        checkpoint: Explicit checkpoint file (``.safetensors`` preferred, ``.bin``/``.pt`` state dicts loaded with
            ``weights_only=True``); the tag then only chooses preprocessing and QuickGELU.
    """

    model: str = "ViT-L-14"
    pretrained: str = "openai"
    checkpoint: str | None = None

    def arch_and_tag(self) -> tuple[str, str]:
        if "/" in self.model and not self.model.startswith(("local-dir:", "hf-hub:")):
            arch, _, tag = self.model.partition("/")
            return arch, tag
        return self.model, self.pretrained


class _OpenClipBase(TorchImageEncoder, TextImageEncoder):
    """Embedding code shared by the pretrained and the tiny open_clip encoders."""

    def _setup(self, model: torch.nn.Module, preprocess_cfg: dict[str, Any], tokenizer: Any) -> None:
        import open_clip

        self.model = place(model, self.options)
        cfg = open_clip.transform.PreprocessCfg(**{k: v for k, v in preprocess_cfg.items()
                                                   if k in open_clip.transform._PREPROCESS_KEYS})
        self.preprocess_cfg = asdict(cfg)
        self._transform = open_clip.transform.image_transform_v2(cfg, is_train=False)
        self.tokenizer = tokenizer
        self.dim = int(self.model.visual.output_dim)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._transform(image)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the CLIP text tower; rows are L2-normalised float32 of shape (N, dim)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with torch.inference_mode():
            ctx = int(getattr(self.tokenizer, "context_length", None) or 77)
            for chunk in batched(list(texts), self.options.batch_size):
                # One slot more than the context, then sliced: a long text keeps its first ``ctx`` ids and loses its
                # end-of-text token, as torchmetrics' CLIPScore slices ids (open_clip alone would move it to the end).
                tokens = self.tokenizer(list(chunk), context_length=ctx + 1)[:, :ctx].to(self.options.torch_device)
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))


class OpenClipEncoder(_OpenClipBase):
    """CLIP via open_clip, any ``ARCH/PRETRAINED`` tag (default ``ViT-L-14/openai``) or local checkpoint.

    Weights: ``checkpoint`` > ``$MRBENCH_WEIGHTS_DIR/open_clip/ARCH/TAG/`` > the HF cache entry open_clip itself
    would download (``open_clip_model.safetensors`` preferred) > ``~/.cache/clip/<url file>``.
    """

    def __init__(self, **kwargs: Any) -> None:
        import open_clip

        self.options = self.config = cfg = ClipConfig(**kwargs)
        arch, tag = cfg.arch_and_tag()
        create: dict[str, Any] = {}
        if arch.startswith(("local-dir:", "hf-hub:")):
            if arch.startswith("hf-hub:"):
                repo = arch[len("hf-hub:"):]
                if W.hf_cached_file(repo, ["open_clip_config.json"]) is None:
                    raise W.missing_weights(f"open_clip {arch}", [f"Hugging Face cache {W.hf_hub_cache()} for {repo}"],
                                            f"on a connected machine run `hf download {repo}` and copy the cache here.")
            name, weights, pretrained = arch, arch, None
        else:
            if open_clip.get_model_config(arch) is None:
                raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
            tag_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
            path = _resolve_open_clip_weights(arch, tag, cfg.checkpoint, tag_cfg)
            name, weights, pretrained = arch, f"{arch}/{tag} ({path})" if tag_cfg else str(path), str(path)
            create["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
            create["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                                              if k in tag_cfg}
        model = open_clip.create_model(name, pretrained=pretrained, device="cpu", weights_only=True,
                                       pretrained_text=False, **create)
        self._setup(model, model.visual.preprocess_cfg, open_clip.get_tokenizer(name))
        self.info = BackendInfo(name="clip", weights=weights, version=pkg_version("open_clip_torch", "torch"))


def _resolve_open_clip_weights(arch: str, tag: str, checkpoint: str | None, tag_cfg: dict[str, Any]) -> Path:
    import open_clip

    # open_clip's convention: hf_hub is "org/repo/filename", or "org/repo/" for its default file names.
    hub = tag_cfg.get("hf_hub", "")
    repo_id, filename = os.path.split(hub)
    how = (f"pass checkpoint=/path/to/open_clip_model.safetensors (mrbench embed/dedup/group: --encoder-args "
           f"checkpoint=PATH), or on a "
           f"connected machine run `hf download {repo_id or 'REPO'}` and copy the Hugging Face cache "
           f"({W.hf_hub_cache()}) here, or put the file under $MRBENCH_WEIGHTS_DIR/open_clip/{arch}/{tag}/.")
    looked: list[str] = []
    if checkpoint:
        p = Path(checkpoint).expanduser()
        if p.is_file():
            return p
        raise W.missing_weights(f"{arch} checkpoint {checkpoint}", [str(p)], "check the path.")
    if not tag_cfg:
        p = Path(tag).expanduser()
        if p.is_file():
            return p
        raise ValueError(f"{tag!r} is neither a pretrained tag of {arch} nor a file; "
                         f"tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch))}")
    files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    mirror = W.mirror_dir()
    if mirror is not None:
        for f in files:
            cand = mirror / "open_clip" / arch / tag / f
            if cand.is_file():
                return cand
            looked.append(str(cand))
    if hub:
        names = [filename.rsplit(".", 1)[0] + ".safetensors", filename] if filename.endswith((".bin", ".pth")) else (
            [filename] if filename else list(files))
        found = W.hf_cached_file(repo_id, names)
        if found is not None:
            return found
        looked.append(f"Hugging Face cache {W.hf_hub_cache()} for {repo_id}: {', '.join(names)}")
    url = tag_cfg.get("url", "")
    if url:
        cand = Path("~/.cache/clip").expanduser() / Path(url).name
        if cand.is_file() and not _is_torchscript(cand):
            return cand
        looked.append(f"{cand} (state dict; OpenAI's TorchScript .pt files are not loaded)")
    raise W.missing_weights(f"open_clip {arch}/{tag}", looked, how)


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


@dataclass
class TinyClipConfig(TorchOptions):
    """Options of the tiny random CLIP.

    Attributes:
        seed: Seeds the weights (same seed, same embeddings bit for bit).
        impl: ``open_clip`` (an open_clip ``CLIP`` built from :data:`TINY_OPEN_CLIP_CFG`) or ``hf`` (a
            ``transformers.CLIPModel`` built from :data:`TINY_HF_CLIP_CFG`, run through the ``clip-hf`` code).
        model_cfg: Overrides of the architecture config (merged one level deep).
    """

    seed: int = 0
    impl: str = "open_clip"
    model_cfg: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.impl not in ("open_clip", "hf"):
            raise ValueError(f"impl must be 'open_clip' or 'hf', got {self.impl!r}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class TinyOpenClipEncoder(_OpenClipBase):
    """A tiny random open_clip CLIP (32 px, 16-d), seeded; exercises the ``clip`` code path without weights."""

    def __init__(self, **kwargs: Any) -> None:
        import open_clip

        self.options = self.config = cfg = TinyClipConfig(**kwargs)
        model_cfg = _merge(TINY_OPEN_CLIP_CFG, cfg.model_cfg)
        with seeded(cfg.seed):
            model = open_clip.model.CLIP(**model_cfg)
        size = model_cfg["vision_cfg"]["image_size"]
        self._setup(model, {"size": size}, open_clip.get_tokenizer("ViT-B-32"))
        self.info = random_info("clip-tiny", model_cfg, cfg.seed, "open_clip_torch", "torch")


@dataclass
class HFClipConfig(TorchOptions):
    """Options of the transformers CLIP encoder.

    Attributes:
        model: Hub id (looked up in the local caches only) or a local folder with ``config.json``, weights and the
            processor files.
    """

    model: str = DEFAULT_CLIP_HF


class HFClipEncoder(TorchImageEncoder, TextImageEncoder):
    """CLIP via ``transformers.CLIPModel`` + ``CLIPProcessor`` (the model torchmetrics' CLIPScore runs)."""

    def __init__(self, **kwargs: Any) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.options = self.config = cfg = HFClipConfig(**kwargs)
        path = W.resolve_hf_model_dir(cfg.model, what=f"transformers CLIP {cfg.model}",
                                      how=W.hf_model_how(cfg.model, "a saved CLIPModel + CLIPProcessor"))
        model = W.load_hf_pretrained(CLIPModel, path)
        processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        self._setup(model, processor)
        self.info = BackendInfo(name="clip-hf", weights=f"{cfg.model} ({path})", version=pkg_version("transformers", "torch"))

    @classmethod
    def from_objects(cls, model: Any, processor: Any, info: BackendInfo, **kwargs: Any) -> "HFClipEncoder":
        """Wrap an already built ``CLIPModel`` and ``CLIPProcessor`` (used by the tiny backend and tests)."""
        self = cls.__new__(cls)
        self.options = self.config = HFClipConfig(model=info.weights, **kwargs)
        self._setup(model, processor)
        self.info = info
        return self

    def _setup(self, model: Any, processor: Any) -> None:
        self.model = place(model, self.options)
        self.processor = processor
        self.dim = int(model.config.projection_dim)
        self.max_length = int(model.config.text_config.max_position_embeddings)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.preprocess_batch([image])[0]

    def preprocess_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.processor(images=[to_rgb(im) for im in images], return_tensors="pt")["pixel_values"]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts (padded to the longest, ids sliced to the model's length as torchmetrics' CLIPScore does);
        L2-normalised float32."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        device = self.options.torch_device
        with torch.inference_mode():
            for chunk in batched(list(texts), self.options.batch_size):
                enc = self.processor(text=list(chunk), return_tensors="pt", padding=True)
                # torchmetrics slices a long caption's ids (and mask); truncating in the tokenizer would keep the
                # end-of-text token and score a different text.
                ids, mask = enc["input_ids"][..., : self.max_length], enc["attention_mask"][..., : self.max_length]
                feats = self.model.get_text_features(input_ids=ids.to(device), attention_mask=mask.to(device))
                out.append(_features(feats).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))


def _features(out: Any) -> torch.Tensor:
    """transformers >= 5 returns a ModelOutput from ``get_*_features`` (projection in ``pooler_output``)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary and merges, rebuilt from the file open_clip ships (the same 49,408 tokens as OpenAI's).

    Lets a ``transformers.CLIPTokenizer`` be built offline, with no tokenizer files from the hub.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [(a, b) for a, b in (line.split() for line in lines)]
    tokens = list(bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tiny_hf_clip(seed: int = 0, model_cfg: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """A seeded random ``transformers.CLIPModel`` and a matching ``CLIPProcessor`` (real CLIP tokenizer vocab)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    cfg = _merge(TINY_HF_CLIP_CFG, model_cfg or {})
    with seeded(seed):
        model = CLIPModel(CLIPConfig(**cfg)).eval()
    vocab, merges = clip_bpe_vocab()
    size = cfg["vision_config"]["image_size"]
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=cfg["text_config"]["max_position_embeddings"]),
    )
    return model, processor


def tiny_clip_encoder(**kwargs: Any) -> TinyOpenClipEncoder | HFClipEncoder:
    """Tiny random CLIP (``impl='open_clip'`` default, or ``impl='hf'`` for a transformers CLIPModel)."""
    cfg = TinyClipConfig(**kwargs)
    if cfg.impl == "open_clip":
        return TinyOpenClipEncoder(**kwargs)
    model, processor = build_tiny_hf_clip(cfg.seed, cfg.model_cfg)
    info = random_info("clip-tiny", {"impl": "hf", **_merge(TINY_HF_CLIP_CFG, cfg.model_cfg)}, cfg.seed, "transformers", "torch")
    enc = HFClipEncoder.from_objects(model, processor, info, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)
    enc.config = cfg
    return enc
