"""Name → model factory, so configs choose networks by string and errors list the choices.

A factory takes the whole `ConfigDict` and returns an unbound linen module; it reads only its
own sub-config (`config.segmentor` or `config.adversary`) plus `num_classes` and `dtype`.

Module contracts (all NHWC, class axis last):
    segmentor.apply({"params": p}, images, train=bool, rngs={"dropout": k})
            images: float32 [N, H, W, 3], RGB in [0, 255] (each segmentor does its own
            preprocessing, e.g. Keras's VGG16 "caffe" mode) → float32 logits [N, h, w, C] at the
            network's own output resolution (h = H / output stride).
    adversary.apply({"params": p}, images, label_maps, train=bool)
            images: float32 [N, h, w, 3] in [0, 1], resized to the label maps' resolution;
            label_maps: float32 [N, h, w, K] (an encoding of `advseg_jax.encodings`)
            → float32 logits [N], one per example: "this map is ground truth", or [N, h, w],
            one per pixel (a fully convolutional discriminator, Hung et al. 2018).
"""

from typing import Callable, Dict

import flax.linen as nn
import ml_collections

ModelFactory = Callable[[ml_collections.ConfigDict], nn.Module]
PretrainedLoader = Callable[[ml_collections.ConfigDict, dict], dict]

_SEGMENTORS: Dict[str, ModelFactory] = {}
_ADVERSARIES: Dict[str, ModelFactory] = {}
_PRETRAINED: Dict[str, PretrainedLoader] = {}


def _register(table: Dict[str, Callable], kind: str, name: str):
    def decorator(factory):
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice.")
        table[name] = factory
        return factory
    return decorator


def register_segmentor(name: str):
    return _register(_SEGMENTORS, "Segmentor", name)


def register_adversary(name: str):
    return _register(_ADVERSARIES, "Adversary", name)


def register_pretrained_loader(segmentor_name: str):
    """Registers `loader(config, params) -> params`, used when `segmentor.pretrained` is set."""
    return _register(_PRETRAINED, "Pretrained loader", segmentor_name)


def segmentor_names() -> list:
    return sorted(_SEGMENTORS)


def adversary_names() -> list:
    return sorted(_ADVERSARIES)


def _lookup(table: Dict[str, Callable], key: str, name: str):
    if name not in table:
        raise ValueError(f"Unknown {key}={name!r}; valid options: {sorted(table)}.")
    return table[name]


def build_segmentor(config: ml_collections.ConfigDict) -> nn.Module:
    return _lookup(_SEGMENTORS, "segmentor.name", config.segmentor.name)(config)


def build_adversary(config: ml_collections.ConfigDict) -> nn.Module:
    return _lookup(_ADVERSARIES, "adversary.name", config.adversary.name)(config)


def load_pretrained(config: ml_collections.ConfigDict, params: dict) -> dict:
    """`params` with pretrained weights filled in where `segmentor.pretrained` asks for them."""
    source = config.segmentor.pretrained
    if not source:
        return params
    name = config.segmentor.name
    if name not in _PRETRAINED:
        raise ValueError(
                f"segmentor.pretrained={source!r} is set but segmentor {name!r} has no pretrained "
                f"weights; segmentors that do: {sorted(_PRETRAINED)}. Set segmentor.pretrained=''.")
    return _PRETRAINED[name](config, params)
