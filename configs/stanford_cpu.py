"""Shim: the config is advseg_jax/configs/stanford_cpu.py (also `--config=stanford_cpu`)."""

from advseg_jax.configs.stanford_cpu import get_config  # noqa: F401
