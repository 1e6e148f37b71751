"""Calibration settings the method, sweep and PEFT-integration tests share through `tiny_chain`
(equal settings: one cached calibration): SC-LoRA's default sites, and `--for all`."""

DEFAULT_CALIBRATION = {"samples": 60, "max_length": 48, "batch_size": 8}
FOR_ALL = {**DEFAULT_CALIBRATION, "for_methods": "all"}
