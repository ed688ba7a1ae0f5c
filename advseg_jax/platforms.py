"""Which hardware a program is traced for: the platform of its mesh's devices.

Backend choices (microbatches as a `lax.scan` or unrolled, cache-sized chunks, convolutions by
taps) depend on the hardware a program runs on. `jax.default_backend()` names the *default*
backend, which need not be the one holding the mesh (a CPU mesh on a GPU host, or the reverse),
so the train and eval steps trace their body inside `tracing_for(mesh)`, and code deep in the
models (flax calls our convolution with no mesh at hand) reads `current()`.
"""

import contextlib
import contextvars
from typing import Iterator, Optional

import jax
from jax.sharding import Mesh

_TRACING_PLATFORM: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "advseg_tracing_platform", default=None)


def of_mesh(mesh: Mesh) -> str:
    """The platform ("cpu", "gpu", "tpu") of every device of `mesh`; mixed meshes are refused."""
    found = {device.platform for device in mesh.devices.flat}
    if len(found) != 1:
        raise ValueError(f"Mesh spans devices of several platforms {sorted(found)}; build it "
                         "from one platform's devices (sharding.make_mesh(jax.devices('gpu'))).")
    return found.pop()


@contextlib.contextmanager
def tracing_for(mesh: Mesh) -> Iterator[str]:
    """Within the block, `current()` is the platform of `mesh`'s devices."""
    token = _TRACING_PLATFORM.set(of_mesh(mesh))
    try:
        yield _TRACING_PLATFORM.get()
    finally:
        _TRACING_PLATFORM.reset(token)


def current(platform: Optional[str] = None) -> str:
    """`platform` if given; else the one `tracing_for` set; else that of JAX's first device
    (code traced outside any mesh, e.g. a model applied directly, runs there)."""
    return platform or _TRACING_PLATFORM.get() or jax.devices()[0].platform
