"""Stanford's 7x7 convolutions by `lax.conv` against by taps, forward and backward, on this CPU.

    python bench/stanford_convs_by_taps.py [--batch=2] [--repeats=5]

Why: on a 2-core Intel Xeon the Stanford step runs at a third of the matmul rate, held by the
kernel-gradient convolutions of the multi-scale stack (docs/performance.md). Convolution by
taps (`advseg_jax/models/exact_taps.py`, one matmul per tap) fixed fc6 there; this measures
whether it would help the stack's conv1-conv3 (scale 1, at the step's CPU chunk of 2 images).
Each convolution's value_and_grad of sum(tanh(conv)) in x and w, both implementations and a
2048^3 matmul alternating in one process, so that drift in the host's speed hits them alike.
Prints the min and median times and GFLOP/s (forward + both gradients: 3x the forward FLOPs).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from advseg_jax.models import exact_taps  # noqa: E402

# (name, input height, width, in channels, out channels): MultiscaleNet's stack at scale 1
# of a 240x320 crop (widths 16, 64, 256; a 2x2 max-pool between stages).
_LAYERS = (("conv1", 240, 320, 3, 16), ("conv2", 120, 160, 16, 64), ("conv3", 60, 80, 64, 256))
_KERNEL = 7


def _gradient(setting: str):
    conv = exact_taps.conv_general_dilated(setting)

    def loss(x, w):
        y = conv(x, w, (1, 1), "SAME", None, (1, 1), exact_taps.NHWC_HWIO)
        return jnp.sum(jnp.tanh(y))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _timed(function, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    matmul = jax.jit(lambda a, b: a @ b)
    side = 2048
    a = jnp.ones((side, side), jnp.float32)
    jax.block_until_ready(matmul(a, a))
    cases = {}
    for name, height, width, cin, cout in _LAYERS:
        key_x, key_w = jax.random.split(jax.random.key(0))
        x = jax.random.normal(key_x, (args.batch, height, width, cin))
        w = jax.random.normal(key_w, (_KERNEL, _KERNEL, cin, cout)) * 0.05
        flops = 3 * 2 * args.batch * height * width * _KERNEL ** 2 * cin * cout
        functions = {setting: _gradient(setting) for setting in ("lax", "taps")}
        results = {setting: jax.block_until_ready(f(x, w)) for setting, f in functions.items()}
        errors = [float(jnp.max(jnp.abs(g - r)) / jnp.max(jnp.abs(r)))
                  for g, r in zip(results["taps"][1], results["lax"][1])]
        print(f"{name}: taps vs lax, max |d| / max |lax|: dx {errors[0]:.1e}, dw {errors[1]:.1e}",
              flush=True)
        cases[name] = (functions, x, w, flops)
    times = {"matmul": []}
    for _ in range(args.repeats):
        times["matmul"].append(_timed(matmul, a, a))
        for name, (functions, x, w, _) in cases.items():
            for setting, function in functions.items():
                times.setdefault(f"{name} {setting}", []).append(_timed(function, x, w))
    matmul_rate = 2 * side ** 3 / min(times["matmul"]) / 1e9
    print(f"matmul {side}^3: min {min(times['matmul']):.3f} s = {matmul_rate:.0f} GFLOP/s "
          f"(load {os.getloadavg()[0]:.2f})")
    for label, values in times.items():
        if label == "matmul":
            continue
        rate = cases[label.split()[0]][3] / min(values) / 1e9
        print(f"{label}: min {min(values):.3f} s, median {np.median(values):.3f} s, "
              f"{rate:.0f} GFLOP/s = {rate / matmul_rate:.0%} of the matmul's")


if __name__ == "__main__":
    main()
