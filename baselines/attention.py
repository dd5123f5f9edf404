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


class EasyRefAttnProcessor(nn.Module):
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

    def _lora(self, name: str, x: torch.Tensor) -> torch.Tensor | float:
        return getattr(self, name)(x) if self.lora_rank else 0.0

    def _heads(self, attn: Any, x: torch.Tensor, batch: int) -> torch.Tensor:
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

        ref_states = None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif self.cross:
            end = encoder_hidden_states.shape[1] - self.num_tokens
            encoder_hidden_states, ref_states = encoder_hidden_states[:, :end], encoder_hidden_states[:, end:]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross and ref_states is not None:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        query = attn.to_q(hidden_states) + self._lora("to_q_lora", hidden_states)
        key = attn.to_k(encoder_hidden_states) + self._lora("to_k_lora", encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states) + self._lora("to_v_lora", encoder_hidden_states)
        q = self._heads(attn, query, batch)
        out = F.scaled_dot_product_attention(q, self._heads(attn, key, batch), self._heads(attn, value, batch),
                                             attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        if ref_states is not None:
            ref_k = self._heads(attn, self.to_k_ip(ref_states), batch)
            ref_v = self._heads(attn, self.to_v_ip(ref_states), batch)
            out = out + self.scale * F.scaled_dot_product_attention(q, ref_k, ref_v, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(query.dtype)

        out = attn.to_out[0](out) + self._lora("to_out_lora", out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


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
