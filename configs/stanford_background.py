"""Shim: the config lives in `advseg_jax/configs/stanford_background.py` (shipped with the package; `--config=stanford_background`)."""

from advseg_jax.configs.stanford_background import get_config  # noqa: F401
