"""Gradient accumulation inside one jitted step: K microbatches, one microbatch's activations alive.

A device's rows are cut into K consecutive microbatches of equal size. Summing the per-microbatch
value-and-grad gives the whole batch's loss and gradient exactly (up to float summation order)
because every model here is per-example (no batch norm) and the caller normalises globally:
`loss_fn` must already divide by whole-batch quantities (e.g. the global batch's valid pixels,
or 1/K for a mean over equal microbatches), so that the sum over microbatches *is* the loss.

How the microbatches are run:
  * On CPU, Python-unrolled: XLA:CPU runs convolutions inside a `While` loop about 10x slower
    (Stanford's net, 4 microbatches of 2: 1.1 s unrolled, 12-17 s as a `lax.scan`). Unrolled,
    XLA:CPU would schedule every microbatch's forward pass before any backward pass (all
    activations alive at once: no memory saved), and `lax.optimization_barrier` does not stop
    it there; so microbatch i+1's slice *starts at an offset computed from microbatch i's
    results* (always 0, which XLA cannot prove), a data dependency that orders them.
  * Elsewhere (GPU/TPU), `lax.scan`: one compiled body, so compile time does not grow with K.
  `config.accumulation_loop` ("scan" / "unrolled") overrides the choice, e.g. to test the
  GPU/TPU path on CPU.

Dropout: `row_keys` gives every example its own key, folded from the step's key and the row's
*global* index, and `apply_per_example` applies a stochastic model one example per key (vmap).
An example's mask then depends only on (seed, step, global row): the same for any K and any
device count, so accumulation changes nothing but the summation order.
"""

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from advseg_jax import ordering
from advseg_jax import platforms

PyTree = Any


LOOPS = ("auto", "scan", "unrolled")


def unrolled_on(platform: Optional[str] = None, loop: str = "auto") -> bool:
    """Whether microbatches run Python-unrolled rather than as a `lax.scan`.

    `loop` is config.accumulation_loop: "auto" unrolls on CPU only (`platform`, default
    `platforms.current()`: the mesh's devices when traced in a step); "scan"/"unrolled" force
    one, so the CPU suite can run the path a GPU/TPU takes.
    """
    if loop not in LOOPS:
        raise ValueError(f"Unknown accumulation_loop={loop!r}; valid options: {list(LOOPS)}.")
    if loop != "auto":
        return loop == "unrolled"
    return platforms.current(platform) == "cpu"


def _zero_after(tree: PyTree) -> jnp.ndarray:
    """int32 0 computed from one element of every leaf: whatever uses it waits for `tree`."""
    return ordering.zero_after(*[jnp.ravel(leaf)[0] for leaf in jax.tree.leaves(tree)])


def _microbatch(rows: PyTree, index: int, count: int, after: Optional[PyTree]) -> PyTree:
    """Microbatch `index` of `count` of every leaf (each split along axis 0 into equal parts)."""
    offset = None if after is None else _zero_after(after)

    def part(leaf):
        size = leaf.shape[0] // count
        if offset is None:
            return leaf[index * size:(index + 1) * size]
        return lax.dynamic_slice_in_dim(leaf, index * size + offset, size)

    return jax.tree.map(part, rows)


def _stacked(rows: PyTree, count: int) -> PyTree:
    return jax.tree.map(lambda x: x.reshape(count, x.shape[0] // count, *x.shape[1:]), rows)


def check_divides(rows: PyTree, count: int) -> None:
    for leaf in jax.tree.leaves(rows):
        if leaf.shape[0] % count:
            raise ValueError(f"{leaf.shape[0]} rows cannot be cut into {count} equal microbatches.")


def map_microbatches(fn: Callable[[PyTree], PyTree], rows: PyTree, count: int, *,
                     unroll: bool, after: Optional[PyTree] = None) -> PyTree:
    """fn on each microbatch of `rows` in turn, outputs concatenated along axis 0 (no gradient
    flows through: for forward passes whose outputs are kept, e.g. predictions)."""
    check_divides(rows, count)
    if count == 1:
        return fn(rows if after is None else _microbatch(rows, 0, 1, after))
    if not unroll:
        out = lax.map(fn, _stacked(rows, count))
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)
    outputs = []
    for i in range(count):
        outputs.append(fn(_microbatch(rows, i, count, outputs[-1] if outputs else after)))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *outputs)


def sum_value_and_grad(loss_fn: Callable[[PyTree, PyTree], Tuple[jnp.ndarray, PyTree]],
                       params: PyTree, rows: PyTree, count: int, *, unroll: bool,
                       after: Optional[PyTree] = None) -> Tuple[Tuple[jnp.ndarray, PyTree], PyTree]:
    """((Σ loss, Σ aux), Σ grads) of `loss_fn(params, microbatch) -> (loss, aux)` over `count`
    consecutive equal microbatches of `rows` (a pytree of arrays sharing axis-0 splits).

    `loss_fn` is normalised globally by the caller (see the module docstring). `after`: results
    the first microbatch must wait for (e.g. an updated model it reads), so that XLA neither
    starts it early nor merges it with an identical earlier forward pass, which would keep
    that pass's activations alive.
    """
    check_divides(rows, count)
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    if count == 1:
        return value_and_grad(params, rows if after is None else _microbatch(rows, 0, 1, after))
    if not unroll:
        shapes = jax.eval_shape(value_and_grad, params, _microbatch(rows, 0, count, None))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(total, part):
            return jax.tree.map(jnp.add, total, value_and_grad(params, part)), None

        total, _ = lax.scan(body, zeros, _stacked(rows, count))
        return total
    total = None
    for i in range(count):
        wait_for = after if total is None else total[1]
        out = value_and_grad(params, _microbatch(rows, i, count, wait_for))
        total = out if total is None else jax.tree.map(jnp.add, total, out)
    return total


def row_keys(rng: jax.Array, num_rows: int, first_row: jnp.ndarray) -> jnp.ndarray:
    """Raw key data [num_rows, ...] of fold_in(rng, global row index), rows first_row + 0.. ."""
    rows = first_row + jnp.arange(num_rows)
    return jax.vmap(lambda row: jax.random.key_data(jax.random.fold_in(rng, row)))(rows)


def apply_per_example(apply: Callable[[jnp.ndarray, jax.Array], jnp.ndarray],
                      images: jnp.ndarray, keys: jnp.ndarray) -> jnp.ndarray:
    """apply(images[i:i+1], key_i) for every row, stacked: each example's own dropout draws."""
    one = lambda image, key: apply(image[None], jax.random.wrap_key_data(key))[0]
    return jax.vmap(one)(images, keys)


def needs_rng(apply: Callable[[jnp.ndarray], jnp.ndarray], images: jnp.ndarray) -> bool:
    """Whether `apply(images)` (a flax apply in train mode, given no rngs) draws random numbers.

    Traced abstractly: nothing is computed. A model without dropout keeps its batched program
    (no per-example keys, no vmap).
    """
    import flax  # pylint: disable=g-import-not-at-top

    try:
        jax.eval_shape(apply, jax.ShapeDtypeStruct(images.shape, images.dtype))
    except flax.errors.InvalidRngError:
        return True
    return False
