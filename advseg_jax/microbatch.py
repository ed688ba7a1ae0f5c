"""Running a model on a device's rows in cache-sized chunks: the same function, less memory traffic.

XLA:CPU's convolutions slow down sharply once a layer's activations leave the cache: on the
2-core machine of issue 11, the Stanford adversarial step ran 1.8x slower per image at 16 rows
than at 4, largely in the kernel-gradient convolutions. Applying the model chunk by chunk
and concatenating the outputs computes the same function of the same parameters (every model
here is per-example: no batch norm), and autodiff of the concatenation sums the chunks'
parameter gradients, so the step's loss and gradients are unchanged up to float summation order.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from advseg_jax import platforms

# Automatic chunking keeps rows x height x width of a chunk at or under this many input pixels:
# two 240x320 Stanford images. Measured on the 2-core machine (docs/performance.md): chunks
# of 2 and of 4 both ran the Stanford step 1.6-6x faster than one chunk of 16; 2 was kept as
# conv3's kernel gradient ran at 68 % of the matmul rate at 2 rows and 24 % at 4. digit_scenes
# (32 x 48x48 = 73,728 pixels) and VOC at batch 1 stay in one chunk: their steps are untouched.
AUTO_PIXELS_PER_CHUNK = 2 * 240 * 320


def chunk_rows(setting: int, rows: int, height: int, width: int,
               platform: Optional[str] = None) -> int:
    """Rows per chunk for a device holding `rows` images of height x width.

    `setting` is the config's `microbatch_size`: 0 picks automatically (on CPU the largest
    chunk within AUTO_PIXELS_PER_CHUNK, at least 1 row; on GPU/TPU, whose matrix units want
    large batches, one chunk); a positive value is taken as given, capped at `rows` (so a value
    >= the per-device batch turns chunking off). `platform` defaults to
    `platforms.current()` (the mesh's devices inside a step).
    """
    if setting < 0:
        raise ValueError(f"microbatch_size={setting}: use 0 (automatic) or a positive number of "
                         "images per chunk (>= the per-device batch turns chunking off).")
    if setting == 0:
        if platforms.current(platform) != "cpu":
            return rows
        setting = max(1, AUTO_PIXELS_PER_CHUNK // max(1, height * width))
    return max(1, min(setting, rows))


def apply_in_chunks(fn: Callable[..., jnp.ndarray], *arrays: jnp.ndarray, chunk: int,
                    rng: Optional[jax.Array] = None) -> jnp.ndarray:
    """fn(*arrays) computed on consecutive `chunk`-row slices, outputs concatenated on axis 0.

    `fn` takes the arrays and, when `rng` is given, `rng=`: chunk i gets fold_in(rng, i), so
    dropout masks differ between chunks (an unchunked call gets `rng` itself, as before).
    Chunks are Python-unrolled: XLA:CPU runs convolutions inside loops far slower.
    """
    rows = arrays[0].shape[0]
    if chunk >= rows:
        return fn(*arrays) if rng is None else fn(*arrays, rng=rng)
    outputs = []
    for i, start in enumerate(range(0, rows, chunk)):
        part = [a[start:start + chunk] for a in arrays]
        if rng is None:
            outputs.append(fn(*part))
        else:
            outputs.append(fn(*part, rng=jax.random.fold_in(rng, i)))
    return jnp.concatenate(outputs, axis=0)
