"""The prompt-only row: base SDXL with the sample's prompt and no references.

It is what every reference-conditioned model must beat: the leaderboard's "gain over prompt-only" is each model's
score minus this row's, i.e. what the references add to what the text (and the base model's prior) already gives.
Same base model, sampler, steps, guidance and negative prompt as the SDXL generators (:mod:`mrbench.baselines.sdxl`),
so the difference is the references alone. Weights: SDXL only (``base_model=``); ``prompt-only-tiny``
(``--profile tiny``) builds the same pipeline from tiny random components.
"""

from __future__ import annotations

from typing import Sequence

from mrbench.baselines.sdxl import SDXLConfig, SDXLGenerator
from mrbench.baselines.tiny import TinySDXLWeights, tiny_model
from mrbench.evaluation.generator import GenerationRequest, GenerationResult


class PromptOnlyGenerator(SDXLGenerator):
    """SDXL text-to-image from the sample's prompt; the references are never looked at."""

    name = "prompt-only"
    config_cls = SDXLConfig

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One pipeline call for the batch, one generator per request (same seed, same image)."""
        import torch

        with torch.no_grad():
            images = self.sample([r.seed for r in requests], prompt=[r.sample.prompt for r in requests],
                                 negative_prompt=[self.config.negative_prompt] * len(requests))
        return [GenerationResult(im, info={"num_references": 0}) for im in images]


TinyPromptOnlyGenerator = tiny_model(PromptOnlyGenerator, TinySDXLWeights)
