"""Estimated step memory per device for each shipped config, and the microbatch a device of a
given size would use (docs/performance.md, "Memory"). Compiles only: nothing is run.

    python bench/memory_table.py --configs=default,stanford_background,voc --limit_gb=16

Semi-supervised configs (an `unlabeled_split`) compile with their unlabeled rows.

For each config and dtype (float32, bfloat16): the adversarial step at the config's batch on
one device, XLA's estimated peak with the whole batch as one microbatch, and the automatic
choice under `memory_limit_gb` (advseg_jax/memory_fit.py), with every estimate it compiled.
The estimates are XLA:CPU's when run on CPU; GPU/TPU compilers plan memory differently.
"""

import argparse
import importlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from advseg_jax import memory_fit  # noqa: E402
from advseg_jax import sharding  # noqa: E402
from advseg_jax import state as state_lib  # noqa: E402
from advseg_jax import train_step as steps  # noqa: E402


def _abstract_batch(config, mesh) -> dict:
    """The training batch's shapes (uint8 images, int32 labels), split on `data`; with an
    unlabeled stream, its rows too (they go through both models, so they cost memory)."""
    size, split = tuple(config.input.crop_size), sharding.batch_split(mesh)

    def rows_of(rows, prefix=""):
        return {f"{prefix}image": jax.ShapeDtypeStruct((rows, *size, 3), np.uint8, sharding=split),
                f"{prefix}label": jax.ShapeDtypeStruct((rows, *size), np.int32, sharding=split)}

    batch = rows_of(config.batch_size)
    if config.get("unlabeled_split"):
        rows = config.unlabeled_batch_size or config.batch_size
        batch.update(rows_of(rows, "unlabeled_"),
                     unlabeled_valid=jax.ShapeDtypeStruct((rows, *size), np.bool_, sharding=split))
    return batch


def figures(name: str, dtype: str, limit_gb: float) -> dict:
    config = importlib.import_module(f"advseg_jax.configs.{name}").get_config()
    config.segmentor.pretrained = ""
    config.dtype = dtype
    if config.lambda_adv <= 0:
        config.lambda_adv = 0.5
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = state_lib.create_train_state(config, mesh)
    segmentor, adversary = state_lib.build_models(config)
    config.memory_limit_gb = limit_gb
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    try:
        step.compile(state, _abstract_batch(config, mesh))
        choice = step.choice
    except memory_fit.MemoryFitError as error:
        choice = {"microbatch_size": None, "error": str(error)}
    tried = choice.get("estimated_peak_memory_gb_tried", {})
    return {"config": name, "dtype": dtype, "batch_size": config.batch_size,
            "crop_size": list(config.input.crop_size),
            "whole_batch_gb": tried.get(str(config.batch_size)),
            f"microbatch_at_{limit_gb:g}_gb": choice["microbatch_size"],
            "its_estimate_gb": choice.get("estimated_peak_memory_gb"), "tried_gb": tried,
            "error": choice.get("error")}


def main(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=("default,stanford_background,stanford_cpu,"
                                              "stanford_semi,voc,voc_semi"))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--limit_gb", type=float, default=16.0)
    args = parser.parse_args(argv)
    for name in args.configs.split(","):
        for dtype in args.dtypes.split(","):
            print(json.dumps(figures(name, dtype, args.limit_gb)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
