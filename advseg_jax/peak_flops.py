"""The matmul peak of this host's devices, measured where nothing else competes for them.

Timed inside the benchmark's own process, between the steps, a 2048² float32 matmul read
74-89 GFLOP/s on a 2-core host where a fresh process read 187 (issue 11): TensorFlow's thread
pools and the steps' cache state depress it, and every MFU divided by it came out too high.
So on CPU the peak is measured in a child process that imports JAX only; accelerators cannot
be opened by two processes, so there it is measured in-process, before the steps compile.

    python -m advseg_jax.peak_flops      # prints {"peak_flops_per_device": ..., ...} as JSON
"""

import json
import os
import subprocess
import sys
import time
from typing import Optional

MATMUL_SIZE = 2048
REPEATS = 10
# Above this 1-minute load average per CPU, other work competes with the measurement.
LOADED_PER_CPU = 0.25


def load_warning(load: Optional[float] = None) -> Optional[str]:
    """A sentence when a 1-minute load average (default: now) says others share the CPUs.

    Read it before one's own work starts: a busy benchmark loads the host by itself.
    """
    load = os.getloadavg()[0] if load is None else load
    cpus = os.cpu_count() or 1
    if load <= LOADED_PER_CPU * cpus:
        return None
    return (f"host loaded: 1-minute load average {load:.2f} on {cpus} CPUs; step times and the "
            "peak are depressed unevenly, so MFU is unreliable (ratios timed round-robin hold).")


def measure(size: int = MATMUL_SIZE, repeats: int = REPEATS) -> dict:
    """Best FLOP/s per device of a size² float32 matmul run on every local device at once.

    All at once because devices may share hardware (XLA:CPU's fake devices share the host's
    cores): the per-device peak is the aggregate over the device count.
    """
    import jax  # pylint: disable=g-import-not-at-top  (the child process imports JAX only)
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    devices = jax.local_devices()
    matrices = [jax.device_put(jax.random.normal(jax.random.key(i), (size, size), jnp.float32), d)
                for i, d in enumerate(devices)]
    matmul = jax.jit(lambda a: a @ a)
    jax.block_until_ready([matmul(m) for m in matrices])  # Compile on every device.
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready([matmul(m) for m in matrices])
        best = min(best, time.perf_counter() - start)
    return {"peak_flops_per_device": 2.0 * size**3 / best, "device_count": len(devices),
            "platform": devices[0].platform, "matmul_size": size, "repeats": repeats}


def measure_clean(size: int = MATMUL_SIZE, repeats: int = REPEATS,
                  timeout_s: float = 600.0) -> dict:
    """`measure` in a fresh Python that imports JAX only (same environment, so same devices)."""
    command = [sys.executable, "-m", "advseg_jax.peak_flops", f"--size={size}",
               f"--repeats={repeats}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"Peak measurement {' '.join(command)} failed (exit "
                           f"{done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _main(argv) -> None:
    args = dict(a.lstrip("-").split("=", 1) for a in argv[1:])
    unknown = set(args) - {"size", "repeats"}
    if unknown:
        raise SystemExit(f"Unknown arguments {sorted(unknown)}; use --size=N --repeats=N.")
    print(json.dumps(measure(int(args.get("size", MATMUL_SIZE)),
                             int(args.get("repeats", REPEATS)))))


if __name__ == "__main__":
    _main(sys.argv)
