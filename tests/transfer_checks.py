"""Device→host reads made visible on the CPU too, for tests of where the loops synchronise.

`jax.transfer_guard_device_to_host` catches reads on GPU and TPU, but a CPU array shares host
memory and jax lets `np.asarray`, `float()` and `jax.device_get` through whatever the guard says.
`reads_refused_by_the_guard` makes every read of a `jax.Array`'s value through
`ArrayImpl._value` (`float()`, `.tolist()`, `jax.device_get`, and `np.asarray` of an array on
more than one device, such as the train step's replicated metrics) obey the guard's current
level, so code that opens an `"allow"` scope for its intended reads passes and any other read
raises, on the CPU as on an accelerator. Not caught on the CPU: `np.asarray` of a one-device
array (e.g. `x.addressable_data(0)`), which numpy reads through the buffer protocol.
"""

import contextlib

import jax
from jax._src import array as array_lib
from jax._src import config as config_lib

_REFUSING = ("disallow", "disallow_explicit")


class DeviceReadError(RuntimeError):
    """A jax.Array's value was read where the transfer guard disallows it."""


@contextlib.contextmanager
def reads_refused_by_the_guard(monkeypatch):
    """Within: `jax.transfer_guard_device_to_host("disallow_explicit")` also bites on CPU."""
    original = array_lib.ArrayImpl._value

    def guarded(self):
        level = config_lib.transfer_guard_device_to_host.value
        if level in _REFUSING:
            raise DeviceReadError(f"Device→host read of a {self.dtype}{list(self.shape)} array "
                                  f"under transfer guard {level!r}.")
        return original.fget(self)

    monkeypatch.setattr(array_lib.ArrayImpl, "_value", property(guarded))
    try:
        with jax.transfer_guard_device_to_host("disallow_explicit"):
            yield
    finally:
        monkeypatch.setattr(array_lib.ArrayImpl, "_value", original)
