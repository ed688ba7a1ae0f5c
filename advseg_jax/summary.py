"""Layer shapes and parameter counts of a config's segmentor and adversary, without any data.

    python -m advseg_jax.summary --config=configs/voc.py [--format=json] [--config.KEY=VALUE]

Installed, the same flags work as the `advseg-summary` console script (a shipped config can
be named, e.g. `--config=voc`).

Shapes come from `jax.eval_shape`, so even the 134M-parameter Dilated-8 costs no memory: the
image shape is `input.crop_size`, the label-map shape is the segmentor's output shape, and its
channel count is the adversary encoding's.
"""

import json
import sys
from typing import Any, Dict, Tuple

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

from advseg_jax import cli
from advseg_jax import encodings
from advseg_jax import models
from advseg_jax import optim
from advseg_jax.data import dataset_facts

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/voc.py.")
_FORMAT = flags.DEFINE_enum("format", "text", ["text", "json"],
                            "text: flax tables per model; json: only a JSON object of totals.")


def _param_count(variables: Dict[str, Any]) -> int:
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables.get("params", {}))))


def _rngs() -> Dict[str, jax.Array]:
    return {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def segmentor_summary(config: ml_collections.ConfigDict) -> Tuple[nn.Module, jnp.ndarray, dict]:
    """(module, example images, summary dict) of the segmentor on one `crop_size` image."""
    model = models.build_segmentor(config)
    images = jnp.zeros((1, *config.input.crop_size, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(_rngs(), images, train=False))
    logits = jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
    return model, images, {"name": config.segmentor.name, "params": _param_count(variables),
                           "input_shape": list(images.shape), "output_shape": list(logits.shape)}


def adversary_summary(config: ml_collections.ConfigDict, label_shape: Tuple[int, ...]
                      ) -> Tuple[nn.Module, Tuple[jnp.ndarray, jnp.ndarray], dict]:
    """(module, example (images, label maps), summary dict) at the label maps' size."""
    model = models.build_adversary(config)
    n, h, w, _ = label_shape
    channels = encodings.encoded_channels(config.adversary.encoding, config.num_classes)
    images = jnp.zeros((n, h, w, 3), jnp.float32)
    label_maps = jnp.zeros((n, h, w, channels), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(_rngs(), images, label_maps, train=False))
    logits = jax.eval_shape(lambda v: model.apply(v, images, label_maps, train=False), variables)
    summary = {"name": config.adversary.name, "built": True,
               "encoding": config.adversary.encoding, "params": _param_count(variables),
               "input_shapes": {"images": list(images.shape),
                                "label_maps": list(label_maps.shape)},
               "output_shape": list(logits.shape)}
    return model, (images, label_maps), summary


def summarize(config: ml_collections.ConfigDict, tables: bool = False) -> Dict[str, Any]:
    """The JSON summary; with `tables`, also prints flax's per-layer tables to stdout."""
    # Colour codes only on a terminal, so piped tables stay plain text.
    console = {"width": 160, "force_terminal": sys.stdout.isatty()}
    segmentor, images, seg_info = segmentor_summary(config)
    if tables:
        print(f"Segmentor {seg_info['name']!r}")
        print(nn.tabulate(segmentor, _rngs(), console_kwargs=console)(images, train=False))
    result = {"segmentor": seg_info}
    if not optim.uses_adversary(config):
        result["adversary"] = {"name": config.adversary.name, "built": False,
                               "reason": "every adversarial λ is 0: no adversary is built."}
        if tables:
            print(f"Adversary {config.adversary.name!r}: not built (every adversarial λ is 0).")
        return result
    label_shape = tuple(seg_info["output_shape"])
    if config.adversary.label_resolution == "input":  # Maps at the labels' resolution.
        label_shape = (label_shape[0], *config.input.crop_size, label_shape[-1])
    adversary, inputs, adv_info = adversary_summary(config, label_shape)
    if tables:
        print(f"Adversary {adv_info['name']!r} (encoding {adv_info['encoding']!r})")
        print(nn.tabulate(adversary, _rngs(), console_kwargs=console)(*inputs, train=False))
    result["adversary"] = adv_info
    return result


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/voc.py.")
    try:  # num_classes = 0 (the folder config): the dataset's class count.
        config = dataset_facts.with_num_classes_from_builder(config)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if _FORMAT.value == "json":
        print(json.dumps(summarize(config)))
        return
    result = summarize(config, tables=True)
    print(f"Segmentor params: {result['segmentor']['params']:,}")
    if result["adversary"]["built"]:
        print(f"Adversary params: {result['adversary']['params']:,}")


def run() -> None:
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
