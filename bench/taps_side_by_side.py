"""fc6's convolution by taps, this tree against a git revision's, and lax: time and memory.

    python bench/taps_side_by_side.py --rev=d13e764 [--size=40] [--batch=1] [--repeats=5]

Dilated-8's fc6 (7x7, dilation 4, 512 -> 4096 channels) on a [batch, size, size, 512] map
(40x40 is a 320x320 crop), forward and backward (value_and_grad of sum(tanh(conv))). Prints,
per implementation: XLA's temporary memory of the compiled gradient, the largest difference
of both gradients from the revision's, and the step times, alternating the implementations
in one process so that drift in the host's speed hits them alike.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from advseg_jax.models import exact_taps  # noqa: E402

_PATH = "advseg_jax/models/exact_taps.py"


def _module_at(rev: str):
    """exact_taps.py as it was at `rev`, imported under another name."""
    source = subprocess.run(["git", "show", f"{rev}:{_PATH}"], capture_output=True, text=True,
                            check=True, cwd=os.path.dirname(os.path.dirname(__file__)) or ".")
    path = os.path.join(tempfile.mkdtemp(), "exact_taps_at_rev.py")
    with open(path, "w") as file:
        file.write(source.stdout)
    spec = importlib.util.spec_from_file_location("exact_taps_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gradient(conv):
    def loss(x, w):
        y = conv(x, w, (1, 1), "SAME", None, (4, 4), ("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.tanh(y))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", required=True)
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    key_x, key_w = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (args.batch, args.size, args.size, 512))
    w = jax.random.normal(key_w, (7, 7, 512, 4096)) * 0.01
    at_rev = _module_at(args.rev).conv_general_dilated("taps")
    functions = {f"taps at {args.rev}": _gradient(at_rev),
                 "taps (this tree)": _gradient(exact_taps.conv_general_dilated("taps")),
                 "lax": _gradient(exact_taps.conv_general_dilated("lax"))}
    reference = None
    for name, function in functions.items():
        start = time.perf_counter()
        compiled = function.lower(x, w).compile()
        compile_s = time.perf_counter() - start
        _, (dx, dw) = jax.block_until_ready(function(x, w))
        if reference is None:
            reference = (dx, dw)
        errors = [float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
                  for got, want in zip((dx, dw), reference)]
        print(f"{name}: temp {compiled.memory_analysis().temp_size_in_bytes / 1e9:.3f} GB, "
              f"compile {compile_s:.1f} s, max |d - rev| / max |rev|: dx {errors[0]:.1e}, "
              f"dw {errors[1]:.1e}", flush=True)
    times = {name: [] for name in functions}
    for _ in range(args.repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            jax.block_until_ready(function(x, w))
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name}: median {np.median(values):.3f} s, min {min(values):.3f} s, "
              f"all {[round(v, 3) for v in values]}  (load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
