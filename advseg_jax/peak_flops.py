"""The matmul peak of this host's devices, measured where nothing else competes for them.

Timed inside the benchmark's own process, between the steps, a 2048² float32 matmul read
74-89 GFLOP/s on a 2-core host where a fresh process read 187 (issue 11): TensorFlow's thread
pools and the steps' cache state depress it, and every MFU divided by it came out too high.
So on CPU the peak is measured in a child process that imports JAX only; accelerators cannot
be opened by two processes, so there it is measured in-process, before the steps compile.

MFU must be taken against the peak of the dtype the step computes in: a bfloat16 step divided
by a float32 peak reads several times too high on GPUs and TPUs. So the peak is measured per
compute dtype (`DTYPES`). On CPU, a single jitted 2048² matmul (per dtype) as before. On an
accelerator, one 2048² matmul takes tens of microseconds and dispatch dominates, so there a
compiled `lax.fori_loop` chains ACCELERATOR_CHAIN matmuls of ACCELERATOR_SIZE² per call, at the
default precision (the one the models' convolutions run at: TF32 for float32 on recent NVIDIA
GPUs). Where measuring fails (e.g. out of memory), `CHIP_PEAKS` gives the spec-sheet figure of a
known chip, and the source says so.

    python -m advseg_jax.peak_flops --dtype=bfloat16   # prints {"peak_flops_per_device": ...}
"""

import json
import os
import subprocess
import sys
import time
from typing import Optional

MATMUL_SIZE = 2048
REPEATS = 10
DTYPES = ("float32", "bfloat16")
# On GPU/TPU: matmuls of this size, this many chained in one compiled loop per timed call.
ACCELERATOR_SIZE = 8192
ACCELERATOR_CHAIN = 16
ACCELERATOR_REPEATS = 5
# Dense spec-sheet FLOP/s per chip (device_kind substring, lower case), used only where the
# measurement fails. float32 at the default precision: TF32 on NVIDIA (A100 and later), bfloat16
# passes on TPU (the MXU has no float32 mode).
CHIP_PEAKS = {
    "h200": {"float32": 494.7e12, "bfloat16": 989.4e12},
    "h100": {"float32": 494.7e12, "bfloat16": 989.4e12},
    "a100": {"float32": 156e12, "bfloat16": 312e12},
    "tpu v4": {"float32": 275e12, "bfloat16": 275e12},
    "tpu v5 lite": {"float32": 197e12, "bfloat16": 197e12},
    "tpu v5e": {"float32": 197e12, "bfloat16": 197e12},
    "tpu v5p": {"float32": 459e12, "bfloat16": 459e12},
    "tpu v6": {"float32": 918e12, "bfloat16": 918e12},
}
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


def measure(size: int = MATMUL_SIZE, repeats: int = REPEATS, dtype: str = "float32",
            chain: int = 1) -> dict:
    """Best FLOP/s per device of size² `dtype` matmuls run on every local device at once.

    All at once because devices may share hardware (XLA:CPU's fake devices share the host's
    cores): the per-device peak is the aggregate over the device count. `chain` > 1 runs that
    many dependent matmuls inside one compiled `lax.fori_loop`, so dispatch does not dominate.
    """
    import jax  # pylint: disable=g-import-not-at-top  (the child process imports JAX only)
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype={dtype!r} for the peak; valid options: {list(DTYPES)}.")
    devices = jax.local_devices()
    matrices = [jax.device_put(jax.random.normal(jax.random.key(i), (size, size), dtype), d)
                for i, d in enumerate(devices)]
    if chain == 1:
        matmul = jax.jit(lambda a: a @ a)
    else:  # a ← a·b / sqrt(size) keeps the entries O(1): no overflow to slow anything down.
        scale = jnp.asarray(size ** -0.5, dtype)
        matmul = jax.jit(lambda a: jax.lax.fori_loop(0, chain, lambda _, x: (x @ a) * scale, a))
    jax.block_until_ready([matmul(m) for m in matrices])  # Compile on every device.
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready([matmul(m) for m in matrices])
        best = min(best, time.perf_counter() - start)
    return {"peak_flops_per_device": 2.0 * size**3 * chain / best, "device_count": len(devices),
            "platform": devices[0].platform, "matmul_size": size, "repeats": repeats,
            "dtype": dtype, "chain": chain}


def chip_peak(device_kind: str, dtype: str) -> Optional[float]:
    """The spec-sheet peak of a known chip (`CHIP_PEAKS`), or None."""
    kind = device_kind.lower()
    for name, peaks in CHIP_PEAKS.items():
        if name in kind:
            return peaks[dtype]
    return None


def measure_clean(size: int = MATMUL_SIZE, repeats: int = REPEATS,
                  timeout_s: float = 600.0, dtype: str = "float32") -> dict:
    """`measure` in a fresh Python that imports JAX only (same environment, so same devices)."""
    command = [sys.executable, "-m", "advseg_jax.peak_flops", f"--size={size}",
               f"--repeats={repeats}", f"--dtype={dtype}"]
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
    unknown = set(args) - {"size", "repeats", "dtype", "chain"}
    if unknown:
        raise SystemExit(f"Unknown arguments {sorted(unknown)}; use --size=N --repeats=N "
                         f"--dtype={'|'.join(DTYPES)} --chain=N.")
    print(json.dumps(measure(int(args.get("size", MATMUL_SIZE)),
                             int(args.get("repeats", REPEATS)), args.get("dtype", "float32"),
                             int(args.get("chain", 1)))))


if __name__ == "__main__":
    _main(sys.argv)
