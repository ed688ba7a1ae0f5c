"""Shim: the config lives in `advseg_jax/configs/voc.py` (shipped with the package; `--config=voc`)."""

from advseg_jax.configs.voc import get_config  # noqa: F401
