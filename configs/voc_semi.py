"""Shim: the config is advseg_jax/configs/voc_semi.py (also `--config=voc_semi`)."""

from advseg_jax.configs.voc_semi import get_config  # noqa: F401
