"""Generators under evaluation: easyref, ip_adapter, lora, flux2, qwen-image-edit, omnigen, and the prompt-only,
reference and chance rows.

Entries are ``module:Class`` strings, imported only when a run asks for them (``--model lora`` never imports what
``easyref`` needs). Every model with weights also has a ``<name>-tiny`` entry: its tiny random variant, the class
``Tiny<Class>`` beside it (:func:`mrbench.baselines.tiny.tiny_model`); ``--profile tiny`` runs it. ``mrbench ls
models`` lists them; third parties register under the entry-point group ``mrbench.models``.
"""

from mrbench.evaluation.registry import register_model

_B = "mrbench.baselines"

register_model("easyref", f"{_B}.easyref:EasyRefGenerator", tiny=True,
               help="EasyRef: SDXL + Qwen2-VL reference tokens, decoupled cross-attention (ckpt=, use_lora=, scale=)")
register_model("ip-adapter", f"{_B}.ip_adapter:IPAdapterGenerator", tiny=True,
               help="SDXL + IP-Adapter (diffusers); references averaged (aggregation=mean) or concatenated (concat)")
register_model("lora", f"{_B}.lora:LoRAGenerator", tiny=True,
               help="per-group LoRA (peft, rank 32) fine-tuned on the group's references, DreamBooth prompt; cached")
register_model("prompt-only", f"{_B}.prompt_only:PromptOnlyGenerator", tiny=True,
               help="base SDXL with the prompt and no references: what the references add is each model's gain over it")
register_model("reference", f"{_B}.reference:ReferenceRow",
               help="ceiling row: another real image of the same group")
register_model("chance", f"{_B}.reference:ChanceRow",
               help="chance row: a real image of a different group")
register_model("flux2", f"{_B}.flux2:Flux2Generator", tiny=True,
               help="FLUX.2 [dev] (diffusers Flux2Pipeline), references as an image list, <=6 (variant=klein: <=4)")
register_model("qwen-image-edit", f"{_B}.qwen_image_edit:QwenImageEditGenerator", tiny=True,
               help="Qwen-Image-Edit-Plus 2509 (diffusers QwenImageEditPlusPipeline), several input images, <=3")
register_model("omnigen", f"{_B}.omnigen:OmniGenGenerator", tiny=True,
               help="OmniGen v1 (diffusers OmniGenPipeline), <img><|image_i|></img> placeholders in the prompt, <=3")
register_model("mm-diff", f"{_B}.mm_diff:MMDiffGenerator", tiny=True,
               help="MM-Diff (SDXL): face tokens per reference in decoupled cross-attention + subject fused into the class noun")
