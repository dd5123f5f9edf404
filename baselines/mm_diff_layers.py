"""MM-Diff's layers (Wei et al., arXiv 2403.15059), written from the authors' public code (alibaba/mm-diff) [C].

Parameter names follow the authors' checkpoint files, which are the contract with the released weights:

- ``custom_weights.bin`` holds five state dicts: ``image_encoder`` (their fine-tuned CLIP ViT-L/14 vision tower,
  ``vision_model.*`` + ``visual_projection.weight``), ``obj_embeds_proj`` (:class:`ObjectEmbedsHead`),
  ``face_embeds_proj`` (:class:`FaceEmbedsHead`), ``mm_fuse_one`` and ``mm_fuse_two`` (:class:`FuseMLP`, one per SDXL
  text encoder);
- ``unet_adapter_weights.bin``: LoRA (rank 64, ``down``/``up``, no alpha) on every UNet attention, keyed by the
  processor's index in ``unet.attn_processors`` (``"{i}.to_q_lora.down.weight"``); cross-attentions also carry
  ``to_k_lora_image`` / ``to_v_lora_image``, the image branch's keys and values on top of the *original* ``to_k`` /
  ``to_v``;
- ``text_encoder_adapter_weights.bin``: LoRA on both text encoders in diffusers 0.21's format
  (``text_encoder[_2].text_model.encoder.layers.N.self_attn.q_proj.lora_linear_layer.up.weight``).

The authors' demos load with ``fuse_lora=True``: every LoRA is merged into its linear layer (``W + up @ down``), so
that is what :func:`fuse_unet_adapter` and :func:`fuse_text_encoder_lora` do.

Cross-attention (:class:`DecoupledImageAttnProcessor`): the encoder states are ``[77 text tokens; 4 tokens per
reference]``; text and image tokens get separate softmaxes over one shared query, and the image output is added
with a per-row weight (``fuse_scale`` on conditional rows, 0 on unconditional ones: the authors mask every image token
of those rows and zero their output).
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mrbench.baselines.attention import DecoupledAttnProcessor

TRIGGER = "<|subj|>"  # the authors' trigger word, written right after the class noun ("a man<|subj|> ...")


@dataclass(frozen=True)
class MMDiffSpec:
    """Sizes of MM-Diff's own layers that the SDXL, CLIP and face models do not fix.

    Attributes:
        face_dim: Identity embedding width (insightface ArcFace: 512).
        face_tokens: Image tokens per reference.
        refiner_depth: SE-refiner blocks.
        refiner_dim_head: SE-refiner head width (heads = cross-attention width / this).
        lora_rank: Rank of the UNet LoRA the random (tiny) checkpoint is built with; a real checkpoint brings its own.
    """

    face_dim: int = 512
    face_tokens: int = 4
    refiner_depth: int = 4
    refiner_dim_head: int = 256
    lora_rank: int = 64


def spec_from_checkpoint(face_head: dict[str, torch.Tensor], dim_head: int) -> MMDiffSpec:
    """The face head's sizes read from its weights in ``custom_weights.bin`` (``face_embeds_proj``); the head width is
    not stored (the authors fix it at 256), so it is given."""
    try:
        face_dim = face_head["proj.0.weight"].shape[1]
        cross = face_head["layer_norm.weight"].shape[0]
        tokens = face_head["proj.2.weight"].shape[0] // cross
    except KeyError as e:
        raise ValueError(f"face_embeds_proj: no {e.args[0]!r} (not MM-Diff's face head)") from e
    depth = len({k.split(".")[2] for k in face_head if k.startswith("refiner.layers.")})
    if cross % dim_head:
        raise ValueError(f"refiner_dim_head={dim_head} does not divide the cross-attention width {cross}")
    return MMDiffSpec(face_dim=face_dim, face_tokens=tokens, refiner_depth=depth, refiner_dim_head=dim_head)


class FuseMLP(nn.Module):
    """``LayerNorm -> Linear -> GELU -> Linear`` (keys ``layernorm``, ``fc1``, ``fc2``): [token; object] -> token."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.layernorm(x))))


class ObjectEmbedsHead(nn.Module):
    """The projected CLIP embedding of the subject image -> one vector per text encoder (keys ``layernorm``, ``fc``,
    ``proj_1``, ``proj_2``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim_1: int, out_dim_2: int) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc = nn.Linear(in_dim, hidden_dim)
        self.proj_1 = nn.Linear(hidden_dim, out_dim_1)
        self.proj_2 = nn.Linear(hidden_dim, out_dim_2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.gelu(self.fc(self.layernorm(x)))
        return self.proj_1(h), self.proj_2(h)


class SEAttention(nn.Module):
    """Queries attend to ``[dense features; queries]`` (keys ``norm1``, ``norm2``, ``to_q``, ``to_kv``, ``to_out``)."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.dim_head, self.heads = dim_head, heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)  # dense features
        self.norm2 = nn.LayerNorm(dim)  # queries
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, query: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        dense, query = self.norm1(dense), self.norm2(query)
        b, n, _ = query.shape
        k, v = self.to_kv(torch.cat([dense, query], dim=1)).chunk(2, dim=-1)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, -1, self.heads, self.dim_head).transpose(1, 2)

        # The authors scale q and k by dim_head^-1/4 each and take the softmax in float32.
        s = 1 / math.sqrt(math.sqrt(self.dim_head))
        logits = (heads(self.to_q(query)) * s) @ (heads(k) * s).transpose(-2, -1)
        out = torch.softmax(logits.float(), dim=-1).to(logits.dtype) @ heads(v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class SERefiner(nn.Module):
    """``depth`` blocks of SE attention and a feed-forward (both residual) over the face tokens, CLIP patch features as
    context (keys ``proj_in``, ``layers.N.0`` attention, ``layers.N.1`` = LayerNorm, Linear, GELU, Linear,
    ``proj_out``, ``norm_out``)."""

    def __init__(self, dim: int, depth: int, dim_head: int, heads: int, embedding_dim: int, output_dim: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList([
            nn.ModuleList([SEAttention(dim, dim_head, heads),
                           nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * 2, bias=False), nn.GELU(),
                                         nn.Linear(dim * 2, dim, bias=False))])
            for _ in range(depth)
        ])

    def forward(self, query: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        dense = self.proj_in(dense)
        for attn, ff in self.layers:  # type: ignore[misc]
            query = attn(query, dense) + query
            query = ff(query) + query
        return self.norm_out(self.proj_out(query))


class FaceEmbedsHead(nn.Module):
    """An identity embedding (and the CLIP patch features of the aligned face) -> ``face_tokens`` image tokens (keys
    ``proj.0``, ``proj.2``, ``layer_norm``, ``refiner.*``)."""

    def __init__(self, face_dim: int, clip_dim: int, cross_dim: int, num_tokens: int, depth: int, dim_head: int) -> None:
        super().__init__()
        self.cross_dim, self.num_tokens = cross_dim, num_tokens
        self.proj = nn.Sequential(nn.Linear(face_dim, face_dim * 2), nn.GELU(),
                                  nn.Linear(face_dim * 2, cross_dim * num_tokens))
        self.layer_norm = nn.LayerNorm(cross_dim)
        self.refiner = SERefiner(cross_dim, depth, dim_head, cross_dim // dim_head, clip_dim, cross_dim)

    def forward(self, face_embeds: torch.Tensor, clip_patches: torch.Tensor) -> torch.Tensor:
        """(N, face_dim) and (N, P, clip_dim) -> (N, num_tokens, cross_dim)."""
        x = self.layer_norm(self.proj(face_embeds).reshape(-1, self.num_tokens, self.cross_dim))
        return x + self.refiner(x, clip_patches)


@dataclass
class MMDiffHeads:
    """MM-Diff's own modules (everything but the UNet adapter and the CLIP towers), as ``custom_weights.bin`` names
    them."""

    obj_embeds_proj: ObjectEmbedsHead
    face_embeds_proj: FaceEmbedsHead
    mm_fuse_one: FuseMLP
    mm_fuse_two: FuseMLP

    @classmethod
    def build(cls, spec: MMDiffSpec, clip_proj_dim: int, clip_hidden: int, te1_dim: int, te2_dim: int,
              cross_dim: int) -> "MMDiffHeads":
        return cls(
            obj_embeds_proj=ObjectEmbedsHead(clip_proj_dim, clip_proj_dim, te1_dim, te2_dim),
            face_embeds_proj=FaceEmbedsHead(spec.face_dim, clip_hidden, cross_dim, spec.face_tokens,
                                            spec.refiner_depth, spec.refiner_dim_head),
            mm_fuse_one=FuseMLP(te1_dim * 2, te1_dim, te1_dim),
            mm_fuse_two=FuseMLP(te2_dim * 2, te2_dim, te2_dim),
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"obj_embeds_proj": self.obj_embeds_proj, "face_embeds_proj": self.face_embeds_proj,
                "mm_fuse_one": self.mm_fuse_one, "mm_fuse_two": self.mm_fuse_two}

    def to(self, device: Any, dtype: torch.dtype) -> "MMDiffHeads":
        for m in self.modules().values():
            m.to(device, dtype).eval().requires_grad_(False)
        return self


# ------------------------------------------------------------------------------------------------ UNet attention


@dataclass
class ImageTokens:
    """What the cross-attention processors read during one pipeline call: how many image tokens end the encoder
    states, and each batch row's image weight (None: no image branch)."""

    count: int = 0
    row_scale: torch.Tensor | None = None


class DecoupledImageAttnProcessor(DecoupledAttnProcessor):
    """Cross-attention with MM-Diff's image branch: ``to_out(softmax(q k_t) v_t + w_row * softmax(q k_i) v_i)``.

    ``to_k_image`` / ``to_v_image`` are the block's original ``to_k`` / ``to_v`` with the image LoRA merged in.

    Args:
        attn: The diffusers ``Attention`` block (an ``attn2``).
        state: Shared with every processor of the UNet; set by :func:`image_condition`.
    """

    def __init__(self, attn: Any, state: ImageTokens) -> None:
        super().__init__()
        cross, inner = attn.to_k.in_features, attn.to_k.out_features
        self.to_k_image = nn.Linear(cross, inner, bias=False)
        self.to_v_image = nn.Linear(cross, inner, bias=False)
        with torch.no_grad():
            self.to_k_image.weight.copy_(attn.to_k.weight)
            self.to_v_image.weight.copy_(attn.to_v.weight)
        self.state = state

    def extra_tokens(self) -> int:
        return self.state.count if self.state.row_scale is not None else 0

    def extra_layers(self) -> tuple[nn.Module, nn.Module]:
        return self.to_k_image, self.to_v_image

    def extra_weight(self, out: torch.Tensor, batch: int) -> torch.Tensor:
        scale = self.state.row_scale
        if scale.shape[0] != batch:
            raise ValueError(f"image row weights for {scale.shape[0]} rows, batch has {batch}")
        return scale.to(out.dtype).view(batch, 1, 1, 1)


@contextmanager
def image_condition(state: ImageTokens, count: int, row_scale: torch.Tensor) -> Iterator[None]:
    """Inside the block, the last ``count`` encoder tokens of every cross-attention are image tokens, weighted per
    batch row by ``row_scale``."""
    state.count, state.row_scale = count, row_scale
    try:
        yield
    finally:
        state.count, state.row_scale = 0, None


_UNET_LORA = ("to_q", "to_k", "to_v", "to_out")
_IMAGE_LORA = {"to_k_lora_image": "to_k_image", "to_v_lora_image": "to_v_image"}


def _lora_delta(sd: dict[str, torch.Tensor], prefix: str, used: set[str]) -> torch.Tensor:
    down, up = f"{prefix}.down.weight", f"{prefix}.up.weight"
    if down not in sd or up not in sd:
        raise ValueError(f"UNet adapter: {prefix}.down/up.weight not in the checkpoint (wrong file or UNet?)")
    used.update((down, up))
    return sd[up].float() @ sd[down].float()


def _merge(linear: nn.Linear, delta: torch.Tensor, key: str) -> None:
    if tuple(delta.shape) != tuple(linear.weight.shape):
        raise ValueError(f"UNet adapter: {key} gives a {tuple(delta.shape)} update for a {tuple(linear.weight.shape)} "
                         "weight (checkpoint for another UNet?)")
    with torch.no_grad():
        linear.weight.copy_((linear.weight.float() + delta.to(linear.weight.device)).to(linear.weight.dtype))


def install_unet_adapter(unet: Any, sd: dict[str, torch.Tensor], state: ImageTokens) -> dict[str, int]:
    """Merge the authors' UNet adapter (``unet_adapter_weights.bin``) into ``unet`` and put a
    :class:`DecoupledImageAttnProcessor` on every cross-attention; self-attentions keep their processor.

    Every key of ``sd`` must be used and every expected key present (the authors load it strictly). Index ``i``
    counts ``unet.attn_processors`` in order: down blocks, up blocks, then the mid block (diffusers registers them so,
    in the authors' 0.21 as today); a checkpoint read in another order fails on the first shape that differs.
    """
    used: set[str] = set()
    procs: dict[str, Any] = {}
    for i, (name, current) in enumerate(unet.attn_processors.items()):
        attn = unet.get_submodule(name[: -len(".processor")])
        cross = name.endswith("attn2.processor")
        if cross:  # the image branch starts from the original to_k / to_v, before the text LoRA lands on them
            proc = DecoupledImageAttnProcessor(attn, state).to(device=attn.to_k.weight.device,
                                                               dtype=attn.to_k.weight.dtype)
            for lora, target in _IMAGE_LORA.items():
                _merge(getattr(proc, target), _lora_delta(sd, f"{i}.{lora}", used), f"{i}.{lora}")
            procs[name] = proc
        else:
            procs[name] = current
        for p in _UNET_LORA:
            linear = attn.to_out[0] if p == "to_out" else getattr(attn, p)
            _merge(linear, _lora_delta(sd, f"{i}.{p}_lora", used), f"{i}.{p}_lora")
    extra = sorted(set(sd) - used)
    if extra:
        raise ValueError(f"UNet adapter: {len(extra)} keys fit no attention of this UNet, e.g. {extra[:3]}")
    unet.set_attn_processor(procs)
    return {"unet_adapter_keys": len(used)}


# ------------------------------------------------------------------------------------------------ text encoders

_TE_KEY = re.compile(r"^(text_encoder(?:_2)?)\.(.+)\.lora_linear_layer\.(up|down)\.weight$")


def _text_linear(encoder: nn.Module, path: str) -> nn.Linear | None:
    """The linear at ``path`` (transformers 4.31 names); newer CLIPTextModel drops the ``text_model.`` level."""
    for candidate in (path, path.removeprefix("text_model.")):
        try:
            module = encoder.get_submodule(candidate)
        except AttributeError:
            continue
        if isinstance(module, nn.Linear):
            return module
    return None


def fuse_text_encoder_lora(encoders: dict[str, nn.Module], sd: dict[str, torch.Tensor]) -> dict[str, int]:
    """Merge diffusers-0.21-format text-encoder LoRA (``text_encoder_adapter_weights.bin``) into the encoders'
    linears: ``W += (alpha / rank) * up @ down`` (no alpha key: 1). Every LoRA key must find its linear."""
    pairs: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    alphas = {k for k in sd if k.endswith(".alpha")}
    for key, value in sd.items():
        if key in alphas:
            continue
        m = _TE_KEY.match(key)
        if m is None:
            raise ValueError(f"text-encoder adapter: unexpected key {key!r} (not diffusers' lora_linear_layer format)")
        pairs.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = value
    for (te, path), w in pairs.items():
        if te not in encoders:
            raise ValueError(f"text-encoder adapter: {te} is not a text encoder of this pipeline")
        linear = _text_linear(encoders[te], path)
        if linear is None or "up" not in w or "down" not in w:
            raise ValueError(f"text-encoder adapter: {te}.{path} has no linear layer (or no up/down pair) here")
        alpha = sd.get(f"{te}.{path}.alpha")
        alphas.discard(f"{te}.{path}.alpha")
        rank = w["down"].shape[0]
        scale = float(alpha) / rank if alpha is not None else 1.0
        delta = scale * (w["up"].float() @ w["down"].float())
        _merge(linear, delta, f"{te}.{path}")
    if alphas:  # an alpha that scales no pair would silently change the merge
        raise ValueError(f"text-encoder adapter: {len(alphas)} alpha keys match no LoRA pair, e.g. {sorted(alphas)[:3]}")
    return {"text_encoder_lora_layers": len(pairs)}


@contextmanager
def fused_subject_tokens(embedding: nn.Embedding, fuse: nn.Module, positions: list[int | None],
                         objects: torch.Tensor) -> Iterator[None]:
    """Inside the block, the token embedding of row ``b`` at ``positions[b]`` becomes ``fuse([token; objects[b]])``
    (before position embeddings are added, as the authors' replaced embedding forward does). A forward hook on this
    one module instance; removed on exit."""

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if output.shape[0] != len(positions):
            raise ValueError(f"subject positions for {len(positions)} prompts, encoder got {output.shape[0]}")
        out = output.clone()
        for b, p in enumerate(positions):
            if p is not None and p < out.shape[1]:
                both = torch.cat([out[b, p], objects[b].to(out.dtype)], dim=-1)
                out[b, p] = fuse(both[None])[0].to(out.dtype)
        return out

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ------------------------------------------------------------------------------------------------ random checkpoint


@dataclass
class MMDiffCheckpoint:
    """The three files of an MM-Diff checkpoint folder, read (file name -> state dict)."""

    unet_adapter: dict[str, torch.Tensor]
    text_encoder_adapter: dict[str, torch.Tensor]
    custom: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def random_checkpoint(pipe: Any, image_encoder: nn.Module, spec: MMDiffSpec, seed: int) -> MMDiffCheckpoint:
    """A seeded random checkpoint in the authors' layout, shaped for ``pipe`` and ``image_encoder`` (the tiny
    profile loads it through the same code as the released files). LoRA ``up`` weights are random, not zero, so every
    merged update is visible."""
    from mrbench.backends.torch_common import seeded

    r = spec.lora_rank

    def pair(prefix: str, linear: nn.Linear) -> dict[str, torch.Tensor]:
        return {f"{prefix}.down.weight": torch.randn(r, linear.in_features) / r,
                f"{prefix}.up.weight": torch.randn(linear.out_features, r) * 0.02}

    unet = pipe.unet
    with seeded(seed):
        unet_sd: dict[str, torch.Tensor] = {}
        for i, name in enumerate(unet.attn_processors):
            attn = unet.get_submodule(name[: -len(".processor")])
            for p in _UNET_LORA:
                lin = attn.to_out[0] if p == "to_out" else getattr(attn, p)
                unet_sd.update(pair(f"{i}.{p}_lora", lin))
            if name.endswith("attn2.processor"):
                for lora in _IMAGE_LORA:
                    unet_sd.update(pair(f"{i}.{lora}", attn.to_k))
        te_sd: dict[str, torch.Tensor] = {}
        for te in ("text_encoder", "text_encoder_2"):
            enc = getattr(pipe, te)
            text_model = enc.text_model if hasattr(enc, "text_model") else enc
            for k, layer in enumerate(text_model.encoder.layers):
                for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    path = f"{te}.text_model.encoder.layers.{k}.self_attn.{p}.lora_linear_layer"
                    te_sd.update(pair(path, getattr(layer.self_attn, p)))
        heads = MMDiffHeads.build(spec, image_encoder.config.projection_dim, image_encoder.config.hidden_size,
                                  pipe.text_encoder.config.hidden_size, pipe.text_encoder_2.config.hidden_size,
                                  unet.config.cross_attention_dim)
        # The fine-tuned CLIP: the authors' file carries the vision tower (loaded non-strictly); perturb one layer.
        first = "vision_model.encoder.layers.0."
        vis = {k: v.clone() for k, v in image_encoder.state_dict().items() if k.startswith(first)}
        vis = {k: v + 0.01 * torch.randn_like(v) for k, v in vis.items()}
    custom = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in heads.modules().items()}
    custom["image_encoder"] = vis
    return MMDiffCheckpoint(unet_sd, te_sd, custom)
