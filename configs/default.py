"""Shim: the config lives in `advseg_jax/configs/default.py` (shipped with the package; `--config=default`)."""

from advseg_jax.configs.default import get_config  # noqa: F401
