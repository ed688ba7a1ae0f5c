"""Orders XLA:CPU's work by a data dependency where its scheduler would keep buffers alive.

XLA:CPU starts independent work as early as it can: every microbatch's forward pass before any
backward pass (accumulation.py), every tap's matmul before their sum (models/exact_taps.py).
Each then keeps its output alive until the end, and `lax.optimization_barrier` is dropped
before scheduling, so it does not help. Reading the next piece of work at an offset computed
from the previous one's result does: XLA cannot prove the offset is 0, so it must wait.
"""

import jax
import jax.numpy as jnp


def zero_after(*values: jax.Array) -> jax.Array:
    """int32 0 that XLA can compute only once every element of `values` named exists.

    Pass scalars (one element of each result to wait for). A number is never both inf and
    NaN, so the result is 0 for every input, finite or not.
    """
    flags = [jnp.isinf(v) & jnp.isnan(v) for v in values]
    return jnp.any(jnp.stack(flags)).astype(jnp.int32)
