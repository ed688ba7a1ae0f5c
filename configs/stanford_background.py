"""Shim: the config is advseg_jax/configs/stanford_background.py (shipped; also
`--config=stanford_background`)."""

from advseg_jax.configs.stanford_background import get_config  # noqa: F401
