"""IP-Adapter (SDXL) through diffusers, with several references combined the EasyRef paper's way.

Weights: ``h94/IP-Adapter`` ``sdxl_models/ip-adapter_sdxl.bin`` (+ its ViT-bigG image encoder in
``sdxl_models/image_encoder``), from a local folder or the HF cache, loaded by diffusers' own ``load_ip_adapter``.

Multi-reference protocol (``aggregation``):

- ``mean`` (default, EasyRef's copy of IP-Adapter [C]): each reference's pooled CLIP image embedding is computed, the
  embeddings are averaged, and the average goes through the IP-Adapter projection (4 tokens). The unconditional
  branch uses a zero embedding, as IP-Adapter does.
- ``concat`` (upstream diffusers behaviour): every reference is projected to its own 4 tokens and the tokens are
  concatenated (4 x N image tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image

from mrbench.baselines.sdxl import SDXLConfig, SDXLGenerator, quiet_diffusers, resolve_local_repo
from mrbench.baselines.tiny import TINY_CLIP_VISION, TinySDXLWeights, random_weights, tiny_clip_vision, tiny_model
from mrbench.config import ConfigError
from mrbench.evaluation.generator import GenerationRequest, GenerationResult

IP_ADAPTER_REPO = "h94/IP-Adapter"


@dataclass
class IPAdapterConfig(SDXLConfig):
    """IP-Adapter options (plus :class:`~mrbench.baselines.sdxl.SDXLConfig`).

    Attributes:
        ip_adapter: Repo id or local folder holding ``subfolder/weight_name``.
        subfolder: Folder of the SDXL adapter inside the repo.
        weight_name: Adapter weights file.
        image_encoder_folder: Image encoder folder, relative to ``subfolder`` (diffusers' convention).
        scale: IP-Adapter scale (image-token attention weight).
        aggregation: ``mean`` (average CLIP embeddings before the projection, EasyRef's protocol) or ``concat``.
        max_references: Use at most this many references (in benchmark order); 0 for all.
    """

    ip_adapter: str = IP_ADAPTER_REPO
    subfolder: str = "sdxl_models"
    weight_name: str = "ip-adapter_sdxl.bin"
    image_encoder_folder: str = "image_encoder"
    scale: float = 1.0
    aggregation: str = "mean"
    max_references: int = 0

    def validate(self) -> None:
        super().validate()
        if self.aggregation not in ("mean", "concat"):
            raise ConfigError(f"aggregation must be 'mean' or 'concat', got {self.aggregation!r}")


def tiny_ip_adapter_state_dict(unet: Any, image_embed_dim: int, seed: int = 0, num_tokens: int = 4) -> dict[str, Any]:
    """A random IP-Adapter checkpoint in the original layout (``image_proj.proj/norm``, ``ip_adapter.<k>.to_k_ip``),
    shaped for ``unet``; loaded through the same diffusers loader as the real file."""
    import torch

    from mrbench.backends.torch_common import seeded

    cross = unet.config.cross_attention_dim
    ip: dict[str, torch.Tensor] = {}
    with seeded(seed):
        proj = torch.nn.Linear(image_embed_dim, num_tokens * cross)
        norm = torch.nn.LayerNorm(cross)
        key_id = 1
        for name, proc in unet.attn_processors.items():
            if name.endswith("attn1.processor"):
                continue
            attn = unet.get_submodule(name[: -len(".processor")])
            hidden = attn.to_k.out_features
            ip[f"{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * cross**-0.5
            ip[f"{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * cross**-0.5
            key_id += 2  # the original checkpoint numbers every processor; cross-attention ones are odd
    image_proj = {"proj.weight": proj.weight.detach(), "proj.bias": proj.bias.detach(),
                  "norm.weight": norm.weight.detach(), "norm.bias": norm.bias.detach()}
    return {"image_proj": image_proj, "ip_adapter": ip}


class IPAdapterGenerator(SDXLGenerator):
    """SDXL + IP-Adapter; references averaged (default) or concatenated."""

    name = "ip-adapter"
    config_cls = IPAdapterConfig

    def __init__(self, profile: str = "default", **options: Any) -> None:
        super().__init__(profile, **options)
        cfg: IPAdapterConfig = self.config
        self.attach_ip_adapter()
        self.pipe.set_ip_adapter_scale(cfg.scale)
        self._last_refs: tuple[tuple[str, ...], Any] | None = None  # the last sample's combined reference embeds

    def attach_ip_adapter(self) -> None:
        """Load the adapter and its image encoder into ``self.pipe`` (diffusers' loader), on device."""
        cfg: IPAdapterConfig = self.config
        self.pipe.load_ip_adapter(str(self._repo), subfolder=cfg.subfolder, weight_name=cfg.weight_name,
                                  image_encoder_folder=cfg.image_encoder_folder, local_files_only=True)
        self.pipe.image_encoder.to(self.device, self.pipe.unet.dtype)

    def ip_adapter_weights(self) -> dict[str, str]:
        """Which adapter (and image encoder) weights."""
        cfg: IPAdapterConfig = self.config
        return {"ip_adapter": f"{cfg.ip_adapter}/{cfg.subfolder}/{cfg.weight_name}"}

    def check_weights(self) -> None:
        super().check_weights()
        cfg: IPAdapterConfig = self.config
        self._repo = resolve_local_repo(
            cfg.ip_adapter, f"{cfg.subfolder}/{cfg.weight_name}",
            what=f"IP-Adapter ({cfg.ip_adapter} {cfg.subfolder}/{cfg.weight_name})",
            how=(f"download {IP_ADAPTER_REPO} (sdxl_models/ip-adapter_sdxl.bin and sdxl_models/image_encoder) on a "
                 "connected machine into the HF cache, or pass --model-args ip_adapter=/local/IP-Adapter"),
        )
        encoder_dir = self._repo / cfg.subfolder / cfg.image_encoder_folder
        if not (encoder_dir / "config.json").is_file():
            from mrbench.backends.weights import missing_weights

            raise missing_weights(f"IP-Adapter image encoder ({cfg.subfolder}/{cfg.image_encoder_folder})", [encoder_dir],
                                  f"copy {IP_ADAPTER_REPO}/{cfg.subfolder}/{cfg.image_encoder_folder} next to the adapter")

    def reference_embeds(self, images: Sequence[Image.Image]) -> Any:
        """Pooled CLIP image embeddings of the references combined per ``aggregation``: shape (1, 1, D) for
        ``mean``, (1, N, D) for ``concat``."""
        import torch

        with torch.no_grad():
            embeds, _ = self.pipe.encode_image(list(images), self.device, 1)
        if self.config.aggregation == "mean":
            return embeds.mean(dim=0, keepdim=True)[None]
        return embeds[None]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Requests whose combined embeddings have the same shape share one pipeline call (one generator each)."""
        import torch

        out: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[tuple[int, ...], list[tuple[int, Any, int]]] = {}
        for i, req in enumerate(requests):
            refs = req.sample.references
            if self.config.max_references:
                refs = refs[: self.config.max_references]
            if not refs:
                out[i] = GenerationResult.failed("no_references", "IP-Adapter needs at least one reference")
                continue
            key = tuple(r.id for r in refs)  # the seeds of one sample arrive one after another and share it
            if self._last_refs is None or self._last_refs[0] != key:
                self._last_refs = (key, self.reference_embeds([r.load() for r in refs]))
            cond = self._last_refs[1]
            groups.setdefault(tuple(cond.shape), []).append((i, cond, len(refs)))
        for members in groups.values():
            idx = [i for i, _, _ in members]
            cond = torch.cat([c for _, c, _ in members])
            # Unconditional branch: a zero image embedding (IP-Adapter's convention), first half of the batch.
            embeds = torch.cat([torch.zeros_like(cond), cond]) if self.config.guidance_scale > 1 else cond
            with torch.no_grad():
                images = self.sample([requests[i].seed for i in idx], prompt=[requests[i].sample.prompt for i in idx],
                                     negative_prompt=[self.config.negative_prompt] * len(idx),
                                     ip_adapter_image_embeds=[embeds])
            for (i, _, n_refs), image in zip(members, images):
                out[i] = GenerationResult(image, info={"num_references": n_refs})
        return out  # type: ignore[return-value]

    def weights(self) -> dict[str, Any]:
        return {**super().weights(), **self.ip_adapter_weights()}


class TinyIPAdapterWeights(TinySDXLWeights):
    """Weights mixin of ``ip-adapter-tiny``: a tiny random CLIP vision encoder (seed ``tiny_seed + 10``) and a random
    adapter in the original checkpoint layout (``tiny_seed + 11``), through the same diffusers loader."""

    def attach_ip_adapter(self) -> None:
        encoder, processor = tiny_clip_vision(self.config.tiny_seed + 10)
        sd = tiny_ip_adapter_state_dict(self.pipe.unet, encoder.config.projection_dim, self.config.tiny_seed + 11)
        with quiet_diffusers():  # "image encoder not loaded": it is registered just below
            self.pipe.load_ip_adapter(sd, subfolder=None, weight_name=None, image_encoder_folder=None)
        self.pipe.register_modules(image_encoder=encoder.to(self.device, self.pipe.unet.dtype),
                                   feature_extractor=processor)

    def ip_adapter_weights(self) -> dict[str, str]:
        seed = self.config.tiny_seed
        return {"ip_adapter": f"random(seed={seed + 11})", "image_encoder": random_weights(seed + 10, TINY_CLIP_VISION)}


TinyIPAdapterGenerator = tiny_model(IPAdapterGenerator, TinyIPAdapterWeights)
