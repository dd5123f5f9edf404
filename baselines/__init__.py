"""Generators under evaluation: easyref, ip_adapter, lora, flux2, qwen-image-edit, omnigen, and the prompt-only,
reference and chance rows.

Entries are ``module:Class`` strings, imported only when a run asks for them (``--model lora`` never imports what
``easyref`` needs). ``mrbench ls models`` lists them; third parties register under the entry-point group
``mrbench.models``.
"""

from mrbench.evaluation.registry import MODELS

_B = "mrbench.baselines"

MODELS.register("easyref", f"{_B}.easyref:EasyRefGenerator",
                help="EasyRef: SDXL + Qwen2-VL reference tokens, decoupled cross-attention (ckpt=, use_lora=, scale=)")
MODELS.register("ip-adapter", f"{_B}.ip_adapter:IPAdapterGenerator",
                help="SDXL + IP-Adapter (diffusers); references averaged (aggregation=mean) or concatenated (concat)")
MODELS.register("lora", f"{_B}.lora:LoRAGenerator",
                help="per-group LoRA (peft, rank 32) fine-tuned on the group's references, DreamBooth prompt; cached")
MODELS.register("prompt-only", f"{_B}.prompt_only:PromptOnlyGenerator",
                help="base SDXL with the prompt and no references: what the references add is each model's gain over it")
MODELS.register("reference", f"{_B}.reference:ReferenceRow",
                help="ceiling row: another real image of the same group")
MODELS.register("chance", f"{_B}.reference:ChanceRow",
                help="chance row: a real image of a different group")
MODELS.register("flux2", f"{_B}.flux2:Flux2Generator",
                help="FLUX.2 [dev] (diffusers Flux2Pipeline), references as an image list, <=6 (variant=klein: <=4)")
MODELS.register("qwen-image-edit", f"{_B}.qwen_image_edit:QwenImageEditGenerator",
                help="Qwen-Image-Edit-Plus 2509 (diffusers QwenImageEditPlusPipeline), several input images, <=3")
MODELS.register("omnigen", f"{_B}.omnigen:OmniGenGenerator",
                help="OmniGen v1 (diffusers OmniGenPipeline), <img><|image_i|></img> placeholders in the prompt, <=3")
MODELS.register("mm-diff", f"{_B}.mm_diff:MMDiffGenerator",
                help="MM-Diff (SDXL): face tokens per reference in decoupled cross-attention + subject fused into the class noun")
