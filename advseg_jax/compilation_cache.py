"""The persistent XLA compilation cache, switched on from `config.compilation_cache_dir`.

Compiling the paper's train step takes minutes on an accelerator, and every resume after a
preemption, every seed of a sweep and every evaluation CLI compiles the same programs again;
with the cache they are read from disk. Must run before the first compilation: JAX fixes the
cache's directory when it first uses it.
"""

import os
from typing import Optional

import jax
from absl import logging

ENVIRONMENT_VARIABLE = "JAX_COMPILATION_CACHE_DIR"
# Only programs that took this long to compile are written: the train and eval steps take
# seconds, while the loop's small helpers (metric rows, confusion sums) compile in
# milliseconds, about what reading them back would cost.
MIN_COMPILE_TIME_S = 1.0


def configure(directory: str) -> Optional[str]:
    """Turns the cache on in `directory` (`~` expanded), or off for ""; returns the directory
    in use (None when off).

    A set JAX_COMPILATION_CACHE_DIR (read by JAX at import) takes precedence over `directory`,
    so a test session or a cluster's shared cache keeps its own.
    """
    if not directory:
        jax.config.update("jax_enable_compilation_cache", False)
        logging.info("Persistent compilation cache off (config.compilation_cache_dir = \"\").")
        return None
    path = os.environ.get(ENVIRONMENT_VARIABLE) or os.path.expanduser(directory)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    # Each threshold is ours unless its environment variable (read by JAX at import) is set:
    # the tests cache even quick compilations.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    logging.info("Persistent compilation cache in %s%s.", path,
                 f" (from {ENVIRONMENT_VARIABLE})" if os.environ.get(ENVIRONMENT_VARIABLE)
                 else "")
    return path
