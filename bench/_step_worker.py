"""One tree's training step, timed on request: the worker process of bench/side_by_side.py.

Run with the tree to measure first on PYTHONPATH, so `advseg_jax` and `configs` are that tree's.
Uses only APIs present since revision d09a87b (create_train_state, build_models,
make_train_step, sharding; state creation moved from train_step to state later), so old
revisions can be measured with today's harness.
Protocol on stdin/stdout: after "ready <flops> <compile_s> <digest>", each line "step" runs one
step and answers its seconds; "quit" ends.
"""

import ast
import hashlib
import importlib.util
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from advseg_jax import sharding  # noqa: E402
from advseg_jax import train_step as steps  # noqa: E402

try:
    from advseg_jax import state as state_lib  # noqa: E402
except ImportError:  # A tree from before the state module: state creation is in train_step.
    state_lib = steps

IGNORE_LABEL = 255


def load_config(path: str, overrides: list):
    """The config file's config with `KEY=VALUE` overrides (Python literals, else strings);
    also the input worker's of bench/pipeline_side_by_side.py."""
    spec = importlib.util.spec_from_file_location("side_by_side_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.segmentor.pretrained = ""  # Values do not change timings.
    for item in overrides:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if leaf not in node:
            continue  # A key this tree does not know (e.g. a newer option): its default applies.
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):  # A path or a name: the string itself.
            node[leaf] = value
    return config


def _config(path: str, variant: str, overrides: list):
    config = load_config(path, overrides)
    if variant == "baseline":
        config.lambda_adv = 0.0
    elif config.lambda_adv <= 0:
        config.lambda_adv = 0.5
    return config


def _batch(config, mesh) -> dict:
    rng = np.random.default_rng(0)
    shape = (config.batch_size, *config.input.crop_size)
    labels = rng.integers(0, config.num_classes, shape, dtype=np.int32)
    labels[rng.random(shape) < 0.1] = IGNORE_LABEL
    images = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    return sharding.global_batch({"image": images, "label": labels}, mesh)


def program_digest(lowered) -> str:
    """SHA-256 of the step's StableHLO without source locations and the jitted function's name.

    Two trees whose steps have the same digest run the same program, so any difference in their
    step times is the host's noise, not the code's: the question a side by side cannot settle
    by timing alone when the difference is smaller than the rounds' spread. The module's name is
    the Python function's (renamed between trees without changing a single op), so it is left out.
    """
    text = re.sub(r"^module @\S+", "module @step", lowered.as_text(debug_info=False), count=1)
    return hashlib.sha256(text.encode()).hexdigest()


def main(config_path: str, variant: str, overrides: list) -> None:
    config = _config(config_path, variant, overrides)
    mesh = sharding.make_mesh()
    state = state_lib.create_train_state(config, mesh)
    segmentor, adversary = state_lib.build_models(config)
    batch = _batch(config, mesh)
    start = time.perf_counter()
    lowered = steps.make_train_step(config, mesh, segmentor, adversary).lower(state, batch)
    if os.environ.get("STEP_WORKER_DIGEST_ONLY") == "1":  # side_by_side.py --digest_only
        print(f"ready nan nan {program_digest(lowered)}", flush=True)
        return
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    flops = float(analysis["flops"]) * mesh.devices.size
    state, _ = compiled(state, batch)  # Warm-up.
    jax.block_until_ready(state)
    print(f"ready {flops} {compile_s} {program_digest(lowered)}", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
