"""Generators under evaluation: easyref, ip_adapter, lora, and the reference/chance rows."""
