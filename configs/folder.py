"""Shim: the config is advseg_jax/configs/folder.py (shipped; also `--config=folder`)."""

from advseg_jax.configs.folder import get_config  # noqa: F401
