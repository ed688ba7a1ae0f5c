"""Where a training step's time goes on this host: per layer and primitive, from a JAX trace.

    python bench/profile_step.py --config=configs/stanford_background.py --variant=adversarial \\
        --set batch_size=16 [--steps=2] [--top=25]

Traces `--steps` steps (after a warm-up) with `jax.profiler.trace(create_perfetto_trace=True)`,
sums each XLA thunk's time, and attributes it through the optimized HLO's metadata to the
model code that produced it (e.g. `transpose(jvp(MultiScaleSegmentor))/scale2/conv3/
conv_general_dilated`: a kernel or input gradient of that convolution). Prints the step time,
the share of each group, and the host (`lscpu`'s model name) so figures name their CPU.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

import jax  # noqa: E402

import _step_worker  # noqa: E402
from advseg_jax import host_info  # noqa: E402
from advseg_jax import sharding  # noqa: E402
from advseg_jax import state as state_lib  # noqa: E402
from advseg_jax import train_step as steps  # noqa: E402


def _op_names(hlo_text: str) -> dict:
    """Instruction name -> op_name metadata (the JAX source path), from optimized HLO text."""
    names = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
        if match:
            names[match.group(1)] = match.group(2)
    return names


def _group(op_name: str) -> str:
    """A readable group: the pass (forward / backward) and the last module path and primitive."""
    backward = "transpose(" in op_name
    path, unwrapped = None, op_name
    while unwrapped != path:  # Innermost first: transpose(jvp(Net)) -> jvp(Net) -> Net.
        path = unwrapped
        unwrapped = re.sub(r"(transpose|jvp|vmap|jit|pjit)\(([^()]*)\)", r"\2", path)
    parts = [p for p in path.split("/") if p]
    return ("backward " if backward else "forward  ") + "/".join(parts[-3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--variant", choices=("baseline", "adversarial"), default="adversarial")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    config = _step_worker._config(args.config, args.variant, args.set)
    mesh = sharding.make_mesh()
    state = state_lib.create_train_state(config, mesh)
    segmentor, adversary = state_lib.build_models(config)
    batch = _step_worker._batch(config, mesh)
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    compiled = step.compile(state, batch)
    names = _op_names(compiled.as_text())
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    directory = tempfile.mkdtemp()
    start = time.perf_counter()
    with jax.profiler.trace(directory, create_perfetto_trace=True):
        for _ in range(args.steps):
            state, metrics = compiled(state, batch)
            jax.block_until_ready((state, metrics))
    wall = (time.perf_counter() - start) / args.steps
    (path,) = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as file:
        events = json.load(file)["traceEvents"]
    by_group, by_kind, total = collections.Counter(), collections.Counter(), 0.0
    for event in events:
        op = event.get("args", {}).get("hlo_op")
        if event.get("ph") != "X" or op is None:
            continue
        seconds = event["dur"] / 1e6 / args.steps
        total += seconds
        by_group[_group(names.get(op, op))] += seconds
        by_kind[re.sub(r"\.\d+$", "", op)] += seconds
    print(f"{host_info.cpu_model()}; {args.config} {args.variant} {' '.join(args.set)}; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"step {wall:.3f} s (traced), thunks {total:.3f} s per step")
    for title, counter in (("by layer and primitive", by_group), ("by fusion kind", by_kind)):
        print(f"--- {title}")
        for name, seconds in counter.most_common(args.top):
            print(f"{seconds:8.3f} s {100 * seconds / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
