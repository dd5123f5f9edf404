"""Generators under evaluation: easyref, ip_adapter, lora, and the reference/chance rows.

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
MODELS.register("reference", f"{_B}.reference:ReferenceRow",
                help="ceiling row: another real image of the same group")
MODELS.register("chance", f"{_B}.reference:ChanceRow",
                help="chance row: a real image of a different group")
