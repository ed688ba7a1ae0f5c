"""Shim: the config is advseg_jax/configs/default.py (shipped; also `--config=default`)."""

from advseg_jax.configs.default import get_config  # noqa: F401
