"""Shim: the config is advseg_jax/configs/stanford_semi.py (also `--config=stanford_semi`)."""

from advseg_jax.configs.stanford_semi import get_config  # noqa: F401
