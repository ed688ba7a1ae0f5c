"""Shims for `--config=configs/NAME.py` from a checkout; the configs are in `advseg_jax/configs/`."""
