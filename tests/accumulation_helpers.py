"""Shared by the accumulation and chunking tests: a Dilated-8-like tiny segmentor with dropout,
the paper's Stanford pair in miniature, plain SGD at rate 1 (an update is minus the gradient),
one real step's gradients and a relative error."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from advseg_jax.models import registry
from advseg_jax.models.adversaries import TwoBranchAdversary
from advseg_jax.models.multiscale import MultiscaleNet


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def stanford_pair(rows: int = 4) -> dict:
    """The Stanford multiscale segmentor and two-branch adversary, narrow, with initialised
    parameters and random inputs (32×48 images, 8×12 downsampled images and label maps, 5
    classes): big enough that every layer's gradient is non-zero, small enough to compile fast."""
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(0, 255, (rows, 32, 48, 3)), jnp.float32)
    segmentor = MultiscaleNet(num_classes=5, widths=(4, 8, 16), kernel_size=5)
    adversary = TwoBranchAdversary(width_divisor=8)
    small = jnp.asarray(rng.uniform(0, 1, (rows, 8, 12, 3)), jnp.float32)
    maps = jax.nn.softmax(jnp.asarray(rng.normal(size=(rows, 8, 12, 5)), jnp.float32))
    return {"segmentor": segmentor, "adversary": adversary, "images": images, "small": small,
            "seg_params": jax.jit(segmentor.init)(jax.random.key(0), images)["params"],
            "adv_params": jax.jit(adversary.init)(jax.random.key(1), small, maps)["params"],
            "rng": rng}


class _TinyDilated(nn.Module):
    """Dilated-8's shape in miniature: strided stem, a dilated conv, fc-like 1x1s with dropout."""

    num_classes: int
    dropout_rate: float

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = images / 255.0 - 0.5
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(16, (3, 3), kernel_dilation=2)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.relu(nn.Conv(16, (1, 1))(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Conv(self.num_classes, (1, 1))(x)


if "tiny_dilated_test" not in registry.segmentor_names():
    registry.register_segmentor("tiny_dilated_test")(
        lambda config: _TinyDilated(config.num_classes, config.segmentor.dropout_rate))


def sgd_one(config):
    """Plain SGD at rate 1 for both players: the update *is* minus the gradient."""
    for part in (config.segmentor, config.adversary):
        part.optimizer, part.learning_rate, part.momentum = "sgd", 1.0, 0.0
        part.schedule, part.warmup_steps, part.weight_decay = "constant", 0, 0.0
    return config


def one_step_gradients(config, devices: int, microbatch_size: int, batch: dict):
    """(both models' gradients, None for a model not built; the step's metrics) of one real
    train step on `devices` devices: under `sgd_one` the update is minus the gradient."""
    config.microbatch_size = microbatch_size
    mesh = sharding.make_mesh(jax.devices()[:devices])
    segmentor, adversary = state_lib.build_models(config)
    state = state_lib.create_train_state(config, mesh)
    before = jax.device_get(state)
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    assert step.choice["num_microbatches"] == config.batch_size // devices // microbatch_size
    after = jax.device_get(state)
    grads = {name: None if getattr(before, name) is None else jax.tree.map(
        np.subtract, getattr(before, name).params, getattr(after, name).params)
        for name in ("segmentor", "adversary")}
    return grads, steps.host_scalars(metrics)
