"""Semantic segmentation with adversarial networks (Luc et al. 2016) in JAX/Flax.

Kept import-free: `import advseg_jax` must not pull in JAX or TensorFlow, so that tools reading
only the version or the configs start instantly.
"""

__version__ = "0.1.0"
