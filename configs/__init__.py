"""Shims for `--config=configs/NAME.py` in a checkout; the configs are in advseg_jax/configs/."""
