"""UNet attention processors for EasyRef: decoupled cross-attention (IP-Adapter style) and optional LoRA.

Parameter names follow the authors' checkpoints (they build on IP-Adapter's processors): ``to_k_ip`` / ``to_v_ip``
(``Linear(cross_dim, inner_dim, bias=False)``) on every ``attn2``, and, with LoRA, ``to_q_lora`` / ``to_k_lora`` /
``to_v_lora`` / ``to_out_lora`` each made of ``down`` and ``up`` linears on every ``attn1`` and ``attn2``. The
processors are ``nn.Module`` s attached to diffusers' ``Attention`` blocks, so their weights appear in the UNet's state
dict as ``<block>.attn2.processor.to_k_ip.weight``, the keys the authors' ``unet.`` entries use.

Cross-attention: the encoder states are ``[text tokens; num_tokens reference tokens]``; the text part goes through
the UNet's own ``to_k``/``to_v``, the reference part through ``to_k_ip``/``to_v_ip``, the two attention outputs are
added with weight ``scale`` on the reference branch, before ``to_out``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """Low-rank update ``up(down(x))`` (no scaling: alpha = rank), ``up`` starts at zero."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x.to(self.down.weight.dtype))).to(x.dtype)


class DecoupledAttnProcessor(nn.Module):
    """Attention whose encoder states may end with extra tokens (references, faces) that get their own keys and
    values: ``to_out(softmax(q k_t) v_t + w * softmax(q k_x) v_x)``, one query for both (IP-Adapter's decoupled
    cross-attention), otherwise the steps of diffusers' ``AttnProcessor2_0``.

    Subclasses say how many tokens are extra (:meth:`extra_tokens`), which layers project them
    (:meth:`extra_layers`), the branch weight (:meth:`extra_weight`), and may add to the block's projections
    (:meth:`project`, e.g. LoRA).
    """

    def extra_tokens(self) -> int:
        """How many tokens at the end of the encoder states are extra (0: no extra branch in this call)."""
        return 0

    def extra_layers(self) -> tuple[nn.Module, nn.Module]:
        """The key and value projections of the extra tokens."""
        raise NotImplementedError

    def extra_weight(self, out: torch.Tensor, batch: int) -> torch.Tensor | float:
        """Weight of the extra branch's output (a number, or a tensor broadcast over ``out``)."""
        raise NotImplementedError

    def project(self, attn: Any, name: str, x: torch.Tensor) -> torch.Tensor:
        """The block's own projection ``name`` (``to_q``, ``to_k``, ``to_v``, ``to_out``) of ``x``."""
        return (attn.to_out[0] if name == "to_out" else getattr(attn, name))(x)

    @staticmethod
    def _heads(attn: Any, x: torch.Tensor, batch: int) -> torch.Tensor:
        return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]

        extra_states = None
        cross = encoder_hidden_states is not None
        if not cross:
            encoder_hidden_states = hidden_states
        elif n := self.extra_tokens():
            end = encoder_hidden_states.shape[1] - n
            encoder_hidden_states, extra_states = encoder_hidden_states[:, :end], encoder_hidden_states[:, end:]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross and cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        q = self._heads(attn, self.project(attn, "to_q", hidden_states), batch)
        k = self._heads(attn, self.project(attn, "to_k", encoder_hidden_states), batch)
        v = self._heads(attn, self.project(attn, "to_v", encoder_hidden_states), batch)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        if extra_states is not None:
            to_k, to_v = self.extra_layers()
            extra_k = self._heads(attn, to_k(extra_states), batch)
            extra_v = self._heads(attn, to_v(extra_states), batch)
            weight = self.extra_weight(out, batch)
            out = out + weight * F.scaled_dot_product_attention(q, extra_k, extra_v, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(q.dtype)

        out = attn.to_out[1](self.project(attn, "to_out", out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class EasyRefAttnProcessor(DecoupledAttnProcessor):
    """Attention with an optional reference branch (cross-attention only) and optional LoRA.

    Args:
        attn: The diffusers ``Attention`` block this processor is built for (sizes are read from it).
        num_tokens: Reference tokens at the end of the encoder states (cross-attention only).
        scale: Weight of the reference branch.
        lora_rank: LoRA rank on q/k/v/out (0: no LoRA).
        cross: Build the reference branch (``attn2``).
    """

    def __init__(self, attn: Any, num_tokens: int = 64, scale: float = 1.0, lora_rank: int = 0, cross: bool = False) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.scale = scale
        self.cross = cross
        if cross:
            cross_dim, inner = attn.to_k.in_features, attn.to_k.out_features
            self.to_k_ip = nn.Linear(cross_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(cross_dim, inner, bias=False)
            with torch.no_grad():  # initialised from the text branch, as in training [C]
                self.to_k_ip.weight.copy_(attn.to_k.weight)
                self.to_v_ip.weight.copy_(attn.to_v.weight)
        self.lora_rank = lora_rank
        if lora_rank:
            self.to_q_lora = LoRALinear(attn.to_q.in_features, attn.to_q.out_features, lora_rank)
            self.to_k_lora = LoRALinear(attn.to_k.in_features, attn.to_k.out_features, lora_rank)
            self.to_v_lora = LoRALinear(attn.to_v.in_features, attn.to_v.out_features, lora_rank)
            self.to_out_lora = LoRALinear(attn.to_out[0].in_features, attn.to_out[0].out_features, lora_rank)

    def extra_tokens(self) -> int:
        return self.num_tokens if self.cross else 0

    def extra_layers(self) -> tuple[nn.Module, nn.Module]:
        return self.to_k_ip, self.to_v_ip

    def extra_weight(self, out: torch.Tensor, batch: int) -> float:
        return self.scale

    def project(self, attn: Any, name: str, x: torch.Tensor) -> torch.Tensor:
        projected = super().project(attn, name, x)
        return projected + getattr(self, f"{name}_lora")(x) if self.lora_rank else projected


def install_processors(unet: Any, num_tokens: int, scale: float, lora_rank: int) -> None:
    """Put EasyRef processors on ``unet``: a reference branch on every ``attn2``; LoRA on every attention when
    ``lora_rank`` > 0 (self-attention keeps diffusers' default processor otherwise)."""
    procs: dict[str, Any] = {}
    for name, current in unet.attn_processors.items():
        attn = unet.get_submodule(name[: -len(".processor")])
        cross = name.endswith("attn2.processor")
        if cross or lora_rank:
            procs[name] = EasyRefAttnProcessor(attn, num_tokens, scale, lora_rank, cross=cross).to(
                device=attn.to_q.weight.device, dtype=attn.to_q.weight.dtype)
        else:
            procs[name] = current
    unet.set_attn_processor(procs)


def set_scale(unet: Any, scale: float) -> None:
    for proc in unet.attn_processors.values():
        if isinstance(proc, EasyRefAttnProcessor):
            proc.scale = scale
