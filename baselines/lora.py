"""Per-group LoRA (DreamBooth-style) on SDXL: fine-tune a LoRA on the group's references, then sample.

For each distinct reference set (a group's references; DreamBench's rotating target gives a few per subject) a fresh
LoRA (peft, rank 32 [seed 001]) on the UNet's attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) is
trained on the references, then the group's prompts are sampled with the identifier prompt. Adapters are cached on
disk keyed by the reference ids and every training option, so reruns and resumed runs do not train again.

The training recipe is diffusers' DreamBooth-LoRA-SDXL example (``examples/dreambooth/train_dreambooth_lora_sdxl.py``
with the command of its README_sdxl.md), UNet only, no prior preservation:

- caption ``a photo of sks <class>``, the class a noun for the group's kind -- ``person`` (celebrity), ``character``,
  ``style``, ``object`` (subject), or DreamBench's class (``dog``) -- never the identity's name, which would hand the
  model the subject as text;
- LoRA ``lora_alpha = rank``, ``init_lora_weights="gaussian"``;
- each reference: shorter side resized to the resolution (Lanczos), then a random crop (drawn once per image, as the
  example's dataset does; ``center_crop`` is its option), no flip; SDXL's micro-conditioning gets the real
  ``time_ids`` = (original height, width, crop top, crop left, resolution, resolution);
- batch 1, gradient accumulation 4 (``train_steps`` counts optimiser steps), images in a fresh random order each
  epoch; an epoch's last step takes what is left of the epoch (accelerate syncs gradients at the end of the
  dataloader, and divides every micro-batch loss by 4 all the same), so with 3 references an epoch is one step of 3
  images and 500 steps see 1,500 images; a fresh VAE latent sample per image per step;
- AdamW lr 1e-4 constant (no warm-up), betas (0.9, 0.999), weight decay 1e-4, eps 1e-8, gradient norm clipped to 1.0;
- noise ``N(0, 1)``, timesteps uniform over the 1000 training steps, MSE on the predicted noise.

Training draws its crops, order, latents, noise and timesteps from a generator seeded with ``train_seed``; LoRA
weights are initialised inside a seeded block. The same references and options give the same adapter.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from mrbench.baselines.sdxl import SDXLConfig, SDXLGenerator
from mrbench.baselines.tiny import TinySDXLWeights, tiny_model
from mrbench.config import ConfigError
from mrbench.evaluation.benchmarks import CATEGORY_CLASS, IDENTIFIER
from mrbench.evaluation.generator import GenerationRequest, GenerationResult, Sample

ADAPTER = "mrbench_group"


@dataclass
class LoRAConfig(SDXLConfig):
    """LoRA options (plus :class:`~mrbench.baselines.sdxl.SDXLConfig`).

    The defaults are diffusers' DreamBooth-LoRA-SDXL recipe (module docstring) with the paper's rank 32.

    Attributes:
        rank: LoRA rank (paper: 32).
        alpha: LoRA alpha (scale alpha/rank; the recipe's ``lora_alpha = rank``).
        init_lora_weights: peft LoRA initialisation (recipe: ``gaussian``).
        target_modules: UNet modules that get a LoRA.
        lr: AdamW learning rate, constant.
        weight_decay: AdamW weight decay (recipe: 1e-4).
        adam_betas: AdamW betas.
        adam_epsilon: AdamW epsilon.
        max_grad_norm: Gradient norm clip (0: none).
        train_steps: Optimiser steps per adapter (each over ``gradient_accumulation_steps`` batches, or what is
            left of an epoch at its end).
        train_batch_size: References per micro-batch.
        gradient_accumulation_steps: Micro-batches per optimiser step (recipe: 4).
        resolution: Training resolution (None: the generation size).
        center_crop: Centre crop instead of the recipe's random crop.
        random_flip: Random horizontal flips (recipe: off).
        train_seed: Seed of initialisation, crops, order, latents, noise and timesteps.
        instance_prompt: Training caption; ``{identifier}`` and ``{class_token}`` are filled in.
        identifier: The rare token naming the subject.
        eval_timesteps: Fixed (noise, timestep) pairs of the held-fixed loss recorded before and after training.
        adapter_dir: Where adapters are cached (None: the run's cache folder, or a temporary folder).
    """

    rank: int = 32
    alpha: float = 32.0
    init_lora_weights: str = "gaussian"
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    lr: float = 1e-4
    weight_decay: float = 1e-4
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    train_steps: int = 500
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 4
    resolution: int | None = None
    center_crop: bool = False
    random_flip: bool = False
    train_seed: int = 0
    instance_prompt: str = "a photo of {identifier} {class_token}"
    identifier: str = IDENTIFIER
    eval_timesteps: int = 8
    adapter_dir: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.rank < 1 or self.train_steps < 0 or self.train_batch_size < 1 or self.lr <= 0:
            raise ConfigError("rank, train_batch_size >= 1; train_steps >= 0; lr > 0")
        if self.gradient_accumulation_steps < 1:
            raise ConfigError("gradient_accumulation_steps must be >= 1")
        if self.init_lora_weights not in ("gaussian", "default"):
            raise ConfigError("init_lora_weights must be 'gaussian' (the recipe) or 'default' (peft's Kaiming)")
        if len(self.adam_betas) != 2:
            raise ConfigError("adam_betas must be two numbers")


def resize_and_crop(image: Image.Image, size: int, center: bool, gen: Any) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The recipe's image path: shorter side -> ``size`` (Lanczos), then a ``size`` x ``size`` crop (random from
    ``gen``, or centred). Returns the crop and its SDXL micro-conditioning (original h, w, crop top, crop left)."""
    import torch

    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    resized = image.resize((rw, rh), Image.LANCZOS)
    if center:
        top, left = max(0, round((rh - size) / 2)), max(0, round((rw - size) / 2))
    else:
        top = int(torch.randint(0, rh - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, rw - size + 1, (1,), generator=gen))
    return resized.crop((left, top, left + size, top + size)), (h, w, top, left)


class LoRAGenerator(SDXLGenerator):
    """SDXL + a LoRA trained per reference set (DreamBooth prompt), cached on disk."""

    name = "lora"
    config_cls = LoRAConfig

    def __init__(self, profile: str = "default", **options: Any) -> None:
        super().__init__(profile, **options)
        from peft import LoraConfig

        cfg: LoRAConfig = self.config
        init: Any = "gaussian" if cfg.init_lora_weights == "gaussian" else True
        self.lora_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=init,
                                      target_modules=list(cfg.target_modules))
        self.pipe.unet.add_adapter(self.lora_config, adapter_name=ADAPTER)
        lora_params = {n: p for n, p in self.pipe.unet.named_parameters() if "lora_" in n}
        if not lora_params:
            raise ConfigError(f"no UNet module matched target_modules={cfg.target_modules}")
        # LoRA weights live in float32 even on a float16 UNet, whether trained here or loaded from the cache, so an
        # adapter samples the same before and after a restart.
        for param in lora_params.values():
            param.data = param.data.float()
        self._lora_names = sorted(lora_params)
        self._loaded: str | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.last_training: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ adapters
    @property
    def adapter_dir(self) -> Path:
        if self.config.adapter_dir:
            return Path(self.config.adapter_dir)
        if self.work_dir is not None:
            return Path(self.work_dir) / "adapters"
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mrbench-lora-")
        return Path(self._tmp.name)

    def adapter_key(self, sample: Sample) -> str:
        """Group + hash of (reference ids, every option that changes training)."""
        train_opts = {k: v for k, v in asdict(self.config).items()
                      if k not in ("num_inference_steps", "guidance_scale", "scheduler", "eta", "negative_prompt",
                                   "batch_size", "adapter_dir", "device")}
        blob = json.dumps({"refs": sorted(r.id for r in sample.references), "class": sample.class_token,
                           "opts": train_opts, "profile": self.profile}, sort_keys=True)
        from mrbench.evaluation.results import safe_name

        return f"{safe_name(sample.group)}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def lora_state(self) -> dict[str, Any]:
        return {n: p.detach().to("cpu").clone() for n, p in self.pipe.unet.named_parameters() if "lora_" in n}

    def _load_adapter(self, path: Path) -> None:
        from safetensors.torch import load_file

        sd = load_file(str(path))
        if sorted(sd) != self._lora_names:
            raise ValueError(f"{path}: adapter does not match this UNet's LoRA layout")
        self.pipe.unet.load_state_dict(sd, strict=False)

    def _reset_lora(self) -> None:
        from peft.tuners.lora import LoraLayer

        from mrbench.backends.torch_common import seeded

        init: Any = "gaussian" if self.config.init_lora_weights == "gaussian" else True
        with seeded(self.config.train_seed):
            for module in self.pipe.unet.modules():
                if isinstance(module, LoraLayer):
                    module.reset_lora_parameters(ADAPTER, init)

    def ensure_adapter(self, sample: Sample) -> dict[str, Any]:
        """Load the adapter for ``sample``'s reference set, training (and caching) it first if needed."""
        key = self.adapter_key(sample)
        if key == self._loaded:
            return self.last_training
        path = self.adapter_dir / f"{key}.safetensors"
        meta_path = path.with_suffix(".json")
        if path.is_file() and meta_path.is_file():
            self._load_adapter(path)
            self.last_training = json.loads(meta_path.read_text())
        else:
            from safetensors.torch import save

            from mrbench.shards import atomic_write_bytes, atomic_write_text

            self._reset_lora()
            images = [r.load() for r in sample.references]
            prompt = self.config.instance_prompt.format(identifier=self.config.identifier,
                                                        class_token=sample.class_token or CATEGORY_CLASS["subject"])
            self.last_training = {"adapter": key, **self.train(images, prompt)}
            atomic_write_bytes(path, save(self.lora_state()))
            atomic_write_text(meta_path, json.dumps(self.last_training, sort_keys=True))  # marker: written last
        self._loaded = key
        return self.last_training

    # ------------------------------------------------------------------------------------------------ training
    def training_batch(self, images: Sequence[Image.Image], prompt: str, gen: Any = None) -> dict[str, Any]:
        """Per reference: its crop's VAE latent distribution (mean, std) and ``time_ids``; the prompt conditioning.
        Computed once per adapter (the crops are drawn once, as the recipe's dataset does)."""
        import numpy as np
        import torch

        pipe, cfg = self.pipe, self.config
        res = cfg.resolution or self.size[0]
        gen = gen if gen is not None else torch.Generator(device="cpu").manual_seed(cfg.train_seed)
        crops, time_ids = [], []
        for im in images:
            crop, (h, w, top, left) = resize_and_crop(im, res, cfg.center_crop, gen)
            if cfg.random_flip and float(torch.rand((1,), generator=gen)) < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crops.append(torch.from_numpy(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1))
            time_ids.append([h, w, top, left, res, res])
        pixels = torch.stack(crops) / 127.5 - 1.0
        vae = pipe.vae
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        with torch.no_grad():
            if upcast:  # SDXL's VAE overflows in float16
                vae.to(torch.float32)
            dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
            mean, std = dist.mean.float(), dist.std.float()
            if upcast:
                vae.to(torch.float16)
            pe, _, pooled, _ = pipe.encode_prompt(prompt, device=self.device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        unet_dtype = pipe.unet.dtype
        return {"mean": mean, "std": std, "scaling": float(vae.config.scaling_factor),
                "prompt_embeds": pe.to(unet_dtype), "pooled": pooled.to(unet_dtype),
                "time_ids": torch.tensor(time_ids, device=self.device, dtype=unet_dtype)}

    def _latents(self, batch: dict[str, Any], idx: Any, gen: Any | None) -> Any:
        """Latents of references ``idx``: a fresh sample of their VAE distribution (``gen``), or its mean (None)."""
        import torch

        mean, std = batch["mean"][idx], batch["std"][idx]
        x = mean if gen is None else mean + std * torch.randn(mean.shape, generator=gen).to(mean.device)
        return (x * batch["scaling"]).to(self.pipe.unet.dtype)

    def _loss(self, batch: dict[str, Any], idx: Any, noise: Any, t: Any, gen: Any | None = None) -> Any:
        import torch.nn.functional as F

        from diffusers import DDPMScheduler

        if not hasattr(self, "_noise_sched"):
            self._noise_sched = DDPMScheduler.from_config(self.pipe.scheduler.config)
        x0 = self._latents(batch, idx, gen)
        n = x0.shape[0]
        xt = self._noise_sched.add_noise(x0, noise.to(x0.device, x0.dtype), t)
        pred = self.pipe.unet(
            xt, t, encoder_hidden_states=batch["prompt_embeds"].expand(n, -1, -1),
            added_cond_kwargs={"text_embeds": batch["pooled"].expand(n, -1), "time_ids": batch["time_ids"][idx]},
        ).sample
        return F.mse_loss(pred.float(), noise.to(pred.device).float())

    def held_fixed_loss(self, batch: dict[str, Any]) -> float:
        """Denoising loss on every reference (latent means) at fixed noise and evenly spaced timesteps (seeded):
        comparable before and after training."""
        import torch

        n_ref = batch["mean"].shape[0]
        k = self.config.eval_timesteps
        T = self.pipe.scheduler.config.num_train_timesteps
        gen = torch.Generator(device="cpu").manual_seed(self.config.train_seed + 1)
        total = 0.0
        with torch.no_grad():
            for j in range(k):
                t = torch.full((n_ref,), int((j + 0.5) * T / k), device=self.device, dtype=torch.long)
                noise = torch.randn(batch["mean"].shape, generator=gen)
                total += float(self._loss(batch, torch.arange(n_ref, device=self.device), noise, t))
        return total / k

    def train(self, images: Sequence[Image.Image], prompt: str) -> dict[str, Any]:
        """Fine-tune the (freshly initialised) LoRA on ``images`` with the recipe (module docstring); returns the
        held-fixed loss before/after and the loss of each optimiser step (mean over its micro-batches)."""
        import torch

        cfg = self.config
        gen = torch.Generator(device="cpu").manual_seed(cfg.train_seed)
        batch = self.training_batch(images, prompt, gen)
        unet = self.pipe.unet
        params = [p for n, p in unet.named_parameters() if "lora_" in n]  # float32 (see __init__)
        for p in params:
            p.requires_grad_(True)
        before = self.held_fixed_loss(batch)
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_epsilon,
                                weight_decay=cfg.weight_decay)
        T = self.pipe.scheduler.config.num_train_timesteps
        n_ref = batch["mean"].shape[0]
        accum, bs = cfg.gradient_accumulation_steps, cfg.train_batch_size
        losses: list[float] = []
        seen = 0
        unet.train()
        try:
            while len(losses) < cfg.train_steps:
                # One epoch: the recipe's shuffled dataloader (a new order, batches of bs, the last one smaller), its
                # micro-batches grouped by `accum`; the epoch's last group may be shorter and still makes a step.
                order = torch.randperm(n_ref, generator=gen).tolist()
                micro = [order[i:i + bs] for i in range(0, n_ref, bs)]
                if not micro:  # nothing to train on
                    break
                for start in range(0, len(micro), accum):
                    group = micro[start:start + accum]
                    step_loss = 0.0
                    for idx in group:
                        t = torch.randint(0, T, (len(idx),), generator=gen).to(self.device)
                        noise = torch.randn((len(idx), *batch["mean"].shape[1:]), generator=gen)
                        loss = self._loss(batch, torch.tensor(idx, device=self.device), noise, t, gen)
                        (loss / accum).backward()  # accelerate divides by the accumulation steps, even at epoch end
                        step_loss += float(loss.detach()) / len(group)
                        seen += len(idx)
                    if cfg.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    losses.append(step_loss)
                    if len(losses) == cfg.train_steps:
                        break
        finally:
            unet.eval()
            for p in params:
                p.requires_grad_(False)
        after = self.held_fixed_loss(batch)
        return {"prompt": prompt, "num_references": len(images), "steps": cfg.train_steps,
                "images_seen": seen,
                "time_ids": batch["time_ids"].float().cpu().tolist(),
                "loss_before": before, "loss_after": after, "train_losses": losses}

    # ------------------------------------------------------------------------------------------------ sampling
    def prompt_for(self, sample: Sample) -> str:
        """The identifier prompt (``a sks dog in the snow``), or ``sks <class>, <prompt>`` when the benchmark has none."""
        if sample.identifier_prompt:
            return re.sub(rf"\b{IDENTIFIER}\b", self.config.identifier, sample.identifier_prompt)
        return f"{self.config.identifier} {sample.class_token}, {sample.prompt}"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Requests sharing an adapter share a pipeline call (one generator each); adapters train on first use."""
        import torch

        out: list[GenerationResult | None] = [None] * len(requests)
        by_adapter: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            if not req.sample.references:
                out[i] = GenerationResult.failed("no_references", "LoRA needs at least one reference to train on")
                continue
            by_adapter.setdefault(self.adapter_key(req.sample), []).append(i)
        for idx in by_adapter.values():
            info = self.ensure_adapter(requests[idx[0]].sample)
            with torch.no_grad():
                images = self.sample([requests[i].seed for i in idx],
                                     prompt=[self.prompt_for(requests[i].sample) for i in idx],
                                     negative_prompt=[self.config.negative_prompt] * len(idx))
            for i, image in zip(idx, images):
                out[i] = GenerationResult(image, info={"adapter": info.get("adapter"), "loss_before": info.get("loss_before"),
                                                       "loss_after": info.get("loss_after")})
        return out  # type: ignore[return-value]


# A few optimiser steps of one batch each (the random-weights path, not the recipe's 500 x 4).
TinyLoRAGenerator = tiny_model(LoRAGenerator, TinySDXLWeights,
                               option_defaults={"train_steps": 8, "gradient_accumulation_steps": 1})
