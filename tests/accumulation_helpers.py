"""Shared by the accumulation tests: a Dilated-8-like tiny segmentor with dropout, plain SGD
at rate 1 (an update is minus the gradient) and a relative error."""

import flax.linen as nn
import numpy as np

from advseg_jax.models import registry


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


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
