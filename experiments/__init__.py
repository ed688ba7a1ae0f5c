"""Ablation runner and result aggregation around `python -m advseg_jax.main`."""
