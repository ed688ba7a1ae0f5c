"""Shim: the config is advseg_jax/configs/voc.py (shipped; also `--config=voc`)."""

from advseg_jax.configs.voc import get_config  # noqa: F401
