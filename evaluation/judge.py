"""``judge@MODEL[:PROTOCOL]``: a local open vision-language model scores each generation against its references and
prompt.

Two protocols (the part after the last ``:``):

- ``three-rubric`` (the default, ``judge@MODEL``): the one-call, three-rubric judge described below.
- ``omnicontext`` (``judge@MODEL:omnicontext``): OmniContext's protocol, :mod:`mrbench.evaluation.omnicontext` --
  separate prompt-following and subject-consistency calls, overall = sqrt(PF x SC) per sample.

The three-rubric judge:

Recent multi-reference benchmarks (OmniContext, MultiRef, MICON-Bench) add a multimodal judge to CLIP/DINO
similarity, because embedding similarity rewards copy-paste. This metric asks a Qwen2-VL / Qwen2.5-VL instruct model
(transformers; a hub id found offline, or a local folder) three fixed questions at once and reads three scores:

- ``subject_consistency``: is the generated subject the subject of the references?
- ``prompt_following``: does the image show what the prompt asks for?
- ``visual_quality``: is the image well formed?

Each is an integer-or-decimal score in [0, 10]. One user turn holds the references (at most ``max_references``, in
benchmark order; a reference that *is* the returned real image -- the ceiling row -- is left out, as for the other
metrics), then the generated image, then :data:`INSTRUCTIONS` with the prompt; decoding is greedy
(``do_sample=False``, one beam), so the same image gives the same answer. The answer must hold a JSON object with the
three keys; anything else is a named failure kept in the row (``metric_details``): ``judge_unparsable`` (no JSON
object), ``judge_missing_rubric``, ``judge_not_a_number``, ``judge_out_of_range`` -- never a guessed score. The raw
answer is kept in the row whatever happened; the ``parsed`` field (1/0) makes the parse rate a column.

The rubric text, the instructions, the model id and the decoding settings are recorded in the run's
``config.json`` (``metrics[].settings``). Keys are ``judge@<model name>`` with the hub owner and dots dropped
(``judge@Qwen2_5-VL-7B-Instruct``) so that field keys stay ``<metric>@<encoder>.<field>``. ``--profile tiny`` uses
``judge@qwen2-vl-tiny``: the tiny random Qwen2-VL of :mod:`mrbench.baselines.tiny` [random weights] -- its answers
are noise and are reported as such.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

from PIL import Image

from mrbench.config import ConfigError
from mrbench.evaluation import omnicontext
from mrbench.evaluation.judge_answer import RUBRIC_KEYS, RUBRICS, parse_answer
from mrbench.evaluation.metrics import Metric, MetricField, MetricInput, _ref_pool

DEFAULT_JUDGE = "Qwen/Qwen2.5-VL-7B-Instruct"
TINY_JUDGE = "qwen2-vl-tiny"
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")

INSTRUCTIONS = (
    "You are an expert judge of subject-driven image generation. The first images are references showing one "
    "subject; the last image was generated from them and from this text prompt:\n\"{prompt}\"\n\n"
    "Score the generated image on each criterion, from 0 to 10:\n{rubrics}\n\n"
    "Answer with only a JSON object with exactly these keys and numbers as values, e.g. "
    "{{\"subject_consistency\": 7, \"prompt_following\": 5, \"visual_quality\": 8}}."
)
REFERENCES_HEADER = "Reference images of the subject:"
GENERATED_HEADER = "Generated image:"


def rubric_text() -> str:
    return "\n".join(f"- {key}: {text}" for key, text in RUBRICS)


def instructions(prompt: str) -> str:
    """The judge's instructions for one prompt (the rubric block filled in)."""
    return INSTRUCTIONS.format(prompt=prompt, rubrics=rubric_text())


def rubric_version() -> str:
    """Short hash of the rubric and instruction text: changes whenever the judge is asked something else."""
    return hashlib.sha256((INSTRUCTIONS + rubric_text()).encode()).hexdigest()[:10]


def build_messages(prompt: str, n_references: int) -> list[dict[str, Any]]:
    """One user turn: the references, the generated image, the instructions. Images are given to the processor in
    the same order (references first, generated last)."""
    content: list[dict[str, Any]] = []
    if n_references:
        content.append({"type": "text", "text": REFERENCES_HEADER})
        content += [{"type": "image"} for _ in range(n_references)]
    content += [{"type": "text", "text": GENERATED_HEADER}, {"type": "image"},
                {"type": "text", "text": instructions(prompt)}]
    return [{"role": "user", "content": content}]


# ------------------------------------------------------------------------------------------------ the judge model


def judge_slug(model: str) -> str:
    """``Qwen/Qwen2.5-VL-7B-Instruct`` -> ``Qwen2_5-VL-7B-Instruct`` (no ``/`` or ``.`` inside metric keys)."""
    base = model.rstrip("/").split("/")[-1] or model
    return re.sub(r"[^A-Za-z0-9_-]+", "_", base)


class JudgeBackend:
    """What answers a judge's questions: one user turn (text and image slots, in order) and its images -> the raw
    answer text. ``seed`` matters only to sampled decoding (greedy answers do not depend on it)."""

    model_id: str = ""
    info: Any = None

    def ask(self, content: list[dict[str, Any]], images: Sequence[Image.Image], seed: int | None = None) -> str:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"model": self.model_id}


class FixedAnswerJudge(JudgeBackend):
    """A judge backend that answers from a function of the question: tests and the bias / stability measurements
    know the answers it gives.

    Args:
        answer: ``answer(text, images, seed) -> str``; ``text`` is the turn's text blocks joined by newlines,
            ``images`` the images in the order the turn shows them.
        name: Its model name in keys (``judge@<name>``).
    """

    def __init__(self, answer: Any, name: str = "fixed-answers") -> None:
        from mrbench.backends.base import BackendInfo

        self.model_id = name
        self._answer = answer
        self.calls: list[tuple[str, int]] = []  # (text, number of images) per question, in order
        self.info = BackendInfo(name=f"judge:{name}", weights="fixed answers (test backend)", version="",
                                random_weights=False)

    def ask(self, content: list[dict[str, Any]], images: Sequence[Image.Image], seed: int | None = None) -> str:
        text = "\n".join(c["text"] for c in content if c["type"] == "text")
        self.calls.append((text, len(images)))
        return self._answer(text, list(images), seed)

    def settings(self) -> dict[str, Any]:
        return {"model": self.model_id, "decoding": "fixed answers"}


class VLMJudge(JudgeBackend):
    """A Qwen2-VL / Qwen2.5-VL instruct model answering the judge prompt with greedy decoding.

    Args:
        model: Hub id (found offline in ``$MRBENCH_WEIGHTS_DIR`` or the HF cache) or local folder; ``qwen2-vl-tiny``
            for the tiny random model.
        device: ``cuda``, ``cpu``, ... (None: CUDA when present).
        dtype: Model dtype (None: bfloat16 on CUDA, float32 on CPU).
        max_new_tokens: Answer length limit (128; tiny 24).
        max_pixels: Pixel budget of each image in the processor (448 x 448; tiny 56 x 56).
        seed: Seed of the tiny random model.
        temperature: 0 (default): greedy decoding. Above 0: sampling at that temperature, seeded per question
            (``ask(..., seed)``; the judge's seed stability is measured this way).
    """

    def __init__(self, model: str = DEFAULT_JUDGE, device: str | None = None, dtype: str | None = None,
                 max_new_tokens: int | None = None, max_pixels: int | None = None, seed: int = 0,
                 temperature: float = 0.0) -> None:
        import transformers

        from mrbench.backends.base import BackendInfo
        from mrbench.baselines.sdxl import resolve_device, resolve_dtype

        if temperature < 0:
            raise ConfigError(f"judge temperature must be >= 0, got {temperature}")
        self.model_id = model
        self.temperature = float(temperature)
        self.device = resolve_device(device)
        tiny = model == TINY_JUDGE
        # A JSON answer with three scores is ~30 tokens; the tiny model's answers are noise, so it stops early.
        self.max_new_tokens = max_new_tokens or (24 if tiny else 128)
        self.max_pixels = max_pixels or (56 * 56 if tiny else 448 * 448)
        min_pixels = min(4 * 28 * 28, self.max_pixels)
        if tiny:
            from mrbench.baselines.tiny import TINY_QWEN2VL, tiny_qwen2vl, tiny_qwen2vl_processor

            self.processor = tiny_qwen2vl_processor(min_pixels, self.max_pixels)
            self.model = tiny_qwen2vl(seed, self.processor.tokenizer)
            weights = f"random(seed={seed}, {TINY_QWEN2VL})"
        else:
            from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

            from mrbench.backends.weights import hf_model_how, load_hf_pretrained, resolve_hf_model_dir

            folder = resolve_hf_model_dir(model, what=f"judge VLM ({model})",
                                          how=hf_model_how(model, "a saved Qwen2-VL / Qwen2.5-VL instruct model and "
                                                                  "its processor"))
            model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
            if model_type not in SUPPORTED_MODEL_TYPES:
                raise ConfigError(f"judge@{model}: a {model_type!r} model; the judge runs Qwen2-VL / Qwen2.5-VL "
                                  f"instruct models ({', '.join(SUPPORTED_MODEL_TYPES)})")
            torch_dtype = resolve_dtype(dtype or ("bfloat16" if self.device.startswith("cuda") else "float32"),
                                        self.device)
            self.processor = AutoProcessor.from_pretrained(folder, min_pixels=min_pixels, max_pixels=self.max_pixels,
                                                           local_files_only=True)
            self.model = load_hf_pretrained(AutoModelForImageTextToText, folder, dtype=torch_dtype,
                                            attn_implementation="sdpa").eval()
            weights = model
        self.model.to(self.device)
        self.info = BackendInfo(name=f"judge:{judge_slug(model)}", weights=weights,
                                version=f"transformers {transformers.__version__}; rubric {rubric_version()}",
                                random_weights=tiny)

    def answer(self, references: Sequence[Image.Image], generated: Image.Image, prompt: str) -> str:
        """The model's raw answer for one generation under the three-rubric protocol."""
        return self.ask(build_messages(prompt, len(references))[0]["content"], [*references, generated])

    def ask(self, content: list[dict[str, Any]], images: Sequence[Image.Image], seed: int | None = None) -> str:
        """The model's raw answer to one user turn; greedy, or sampled with its own seed (``temperature`` > 0)."""
        import torch

        messages = [{"role": "user", "content": content}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        rgb = [im.convert("RGB") for im in images]
        inputs = self.processor(text=[text], images=rgb or None, return_tensors="pt").to(self.device)
        with torch.no_grad():
            if self.temperature > 0:
                # generate() samples from torch's global generator: fork it, so no global seed is left changed
                devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(0 if seed is None else int(seed))
                    out = self.model.generate(**inputs, do_sample=True, temperature=self.temperature, top_p=None,
                                              top_k=None, num_beams=1, max_new_tokens=self.max_new_tokens)
            else:
                out = self.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                          temperature=None, top_p=None, top_k=None)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()

    def settings(self) -> dict[str, Any]:
        decoding = ({"do_sample": True, "temperature": self.temperature} if self.temperature > 0
                    else {"do_sample": False})
        return {"model": self.model_id, "decoding": {**decoding, "num_beams": 1, "max_new_tokens": self.max_new_tokens},
                "image_max_pixels": self.max_pixels}


# ------------------------------------------------------------------------------------------------ the metric


PROTOCOLS = ("three-rubric", "omnicontext")
DEFAULT_PROTOCOL = "three-rubric"


def split_protocol(name: str) -> tuple[str, str]:
    """``Qwen/Qwen2.5-VL-7B-Instruct:omnicontext`` -> (model, ``omnicontext``); no known suffix: the default
    protocol (a ``:`` that names no protocol stays part of the model path)."""
    model, sep, proto = name.rpartition(":")
    if sep and proto in PROTOCOLS:
        return model, proto
    return name, DEFAULT_PROTOCOL


THREE_RUBRIC_FIELDS = (
    MetricField("subject_consistency", description="judge: same subject as the references (0-10)"),
    MetricField("prompt_following", description="judge: follows the prompt (0-10)"),
    MetricField("visual_quality", description="judge: visual quality (0-10)"),
    MetricField("parsed", description="judge answers that parsed (rate)"),
)


class JudgeMetric(Metric):
    """VLM judge under a protocol (``three-rubric``: subject consistency, prompt following, visual quality in one
    call; ``omnicontext``: separate PF and SC calls, overall = sqrt(PF x SC)); parse failures are named."""

    name = "judge"
    encoder_kind = "judge"
    default_encoder = DEFAULT_JUDGE
    tiny_encoder = TINY_JUDGE
    max_references = 4  # references shown to the judge, in benchmark order (context stays bounded)
    fields = THREE_RUBRIC_FIELDS

    def __init__(self, encoder_name: str, encoder: Any) -> None:  # no backend-kind check: the encoder is a VLM
        if not isinstance(encoder, JudgeBackend):
            raise ConfigError(f"metric 'judge' needs a VLM judge; {encoder_name!r} is a {type(encoder).__name__}")
        self.encoder_name = encoder_name
        self.model_name, self.protocol = split_protocol(encoder_name)
        self.model_name = self.model_name or DEFAULT_JUDGE
        self.encoder = encoder
        self.encoder_key = f"{encoder_name}#{id(encoder)}"
        self._cache: dict[str, Any] = {}
        if self.protocol == "omnicontext":
            self.fields = omnicontext.FIELDS
            self.max_references = omnicontext.MAX_INPUTS

    @classmethod
    def build_encoder(cls, name: str, **kwargs: Any) -> VLMJudge:
        model, protocol = split_protocol(name)
        if protocol == "omnicontext" and model != TINY_JUDGE:
            side = omnicontext.MAX_SIDE  # the protocol's 1024 px inputs reach the model
            kwargs.setdefault("max_pixels", side * side)
        return VLMJudge(model or DEFAULT_JUDGE, **kwargs)

    @property
    def key(self) -> str:
        suffix = "" if self.protocol == DEFAULT_PROTOCOL else f":{self.protocol}"
        return f"{self.name}@{judge_slug(self.model_name)}{suffix}"

    def settings(self) -> dict[str, Any]:
        """Recorded in the run's config.json: model, protocol, rubric and instruction text, decoding, references."""
        if self.protocol == "omnicontext":
            return {**self.encoder.settings(), **omnicontext.settings(), "max_references": self.max_references}
        return {**self.encoder.settings(), "protocol": self.protocol, "rubrics": dict(RUBRICS),
                "instructions": INSTRUCTIONS, "rubric_version": rubric_version(),
                "max_references": self.max_references,
                "message_layout": [REFERENCES_HEADER, "<references>", GENERATED_HEADER, "<generated>",
                                   "<instructions>"]}

    def shown_references(self, item: MetricInput) -> list[Any]:
        """The references the judge sees for ``item``: the scored ones, at most ``max_references``, in order."""
        return _ref_pool(item)[: self.max_references]

    def judge(self, item: MetricInput, references: Sequence[Any] | None = None,
              seed: int | None = None) -> tuple[dict[str, float | None], dict[str, Any]]:
        """One item's field values and row details; ``references`` overrides the shown references (their order:
        the position-bias measurement swaps it), ``seed`` the decoding seed (sampled decoding only)."""
        refs = list(self.shown_references(item) if references is None else references)
        k = self.key
        if self.protocol == "omnicontext":
            values, detail = omnicontext.judge(self.encoder, [r.load() for r in refs], item.image,
                                               item.sample.prompt, seed)
            return {f"{k}.{f}": v for f, v in values.items()}, {**detail, "references": [r.id for r in refs]}
        content = build_messages(item.sample.prompt, len(refs))[0]["content"]
        answer = self.encoder.ask(content, [*(r.load() for r in refs), item.image], seed)
        verdict = parse_answer(answer)
        row: dict[str, float | None] = {f"{k}.{f}": verdict.scores.get(f) for f in RUBRIC_KEYS}
        row[f"{k}.parsed"] = 1.0 if verdict.status == "ok" else 0.0
        detail = {"status": verdict.status, "answer": answer, "references": [r.id for r in refs]}
        if verdict.error:
            detail["error"] = verdict.error
        return row, detail

    def compute_detailed(self, items: Sequence[MetricInput]) -> list[tuple[dict[str, float | None], dict[str, Any]]]:
        """Per item: the field values and the row details (status, raw answers, errors, references shown)."""
        return [self.judge(it) for it in items]

    def compute(self, items: Sequence[MetricInput]) -> list[dict[str, float | None]]:
        return [row for row, _ in self.compute_detailed(items)]
