"""The training state of both players, built fresh from the config (pretrained weights filled in).

Apart from the steps (`train_step.py`) so that tools that only need a state or the models
(restore, evaluate, predict, benchmarks) do not depend on the step's code, and the step's
module holds only what runs under `jit`.
"""

import functools
from typing import Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.training import train_state
from jax.sharding import Mesh

from advseg_jax import encodings
from advseg_jax import models
from advseg_jax import optim
from advseg_jax import sharding


@flax.struct.dataclass
class AdvSegState:
    """Both players, each with its own parameters, optimizer state and schedule position."""

    segmentor: train_state.TrainState
    adversary: Optional[train_state.TrainState]  # None when no loss term uses it.

    @property
    def step(self) -> jnp.ndarray:
        return self.segmentor.step


def build_models(config: ml_collections.ConfigDict) -> Tuple[nn.Module, Optional[nn.Module]]:
    """(segmentor, adversary); the adversary is None when every adversarial λ is 0 (the
    baseline): nothing built or run."""
    adversary = models.build_adversary(config) if optim.uses_adversary(config) else None
    return models.build_segmentor(config), adversary


def label_map_shape(config: ml_collections.ConfigDict, segmentor: nn.Module,
                    image_shape: Tuple[int, int]) -> Tuple[int, int]:
    """Spatial shape of the segmentor's output (= the adversary's input) for `image_shape`."""
    images = jax.ShapeDtypeStruct((1, *image_shape, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(segmentor.init, train=False),
                               jax.random.key(0), images)
    out = jax.eval_shape(functools.partial(segmentor.apply, train=False), variables, images)
    return tuple(out.shape[1:3])


def adversary_map_shape(config: ml_collections.ConfigDict, segmentor: nn.Module,
                        image_shape: Tuple[int, int]) -> Tuple[int, int]:
    """Spatial shape of the label maps the adversary judges for images of `image_shape`."""
    if config.adversary.label_resolution == "input":
        return tuple(image_shape)
    return label_map_shape(config, segmentor, image_shape)


def create_train_state(config: ml_collections.ConfigDict, mesh: Mesh) -> AdvSegState:
    """Fresh state from `config.seed`, replicated over `mesh` (pretrained weights filled in)."""
    segmentor, adversary = build_models(config)
    seg_key, adv_key = jax.random.split(jax.random.key(config.seed))
    crop = tuple(config.input.crop_size)
    images = jnp.zeros((1, *crop, 3), jnp.float32)
    seg_params = jax.jit(functools.partial(segmentor.init, train=False))(seg_key, images)["params"]
    seg_params = models.load_pretrained(config, jax.device_get(seg_params))
    seg_state = train_state.TrainState.create(
        apply_fn=segmentor.apply, params=seg_params,
        tx=optim.make_optimizer(config.segmentor, config.num_train_steps))
    adv_state = None
    if adversary is not None:
        h, w = adversary_map_shape(config, segmentor, crop)
        channels = encodings.encoded_channels(config.adversary.encoding, config.num_classes)
        adv_params = jax.jit(functools.partial(adversary.init, train=False))(
            adv_key, jnp.zeros((1, h, w, 3)), jnp.zeros((1, h, w, channels)))["params"]
        adv_steps = config.num_train_steps * config.adversary.steps_per_segmentor_step
        adv_state = train_state.TrainState.create(
            apply_fn=adversary.apply, params=adv_params,
            tx=optim.make_optimizer(config.adversary, adv_steps))
    return sharding.replicate(jax.device_get(AdvSegState(seg_state, adv_state)), mesh)
