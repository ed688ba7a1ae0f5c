"""Segmentors for the embedded data; paper segmentors register from their own modules below."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from advseg_jax.models import registry


class DigitNet(nn.Module):
    """A small encoder-decoder for digit_scenes: context at stride 4, output at stride 2.

    Deciding which digit a stroke belongs to needs the whole shape (up to 24 px), so the
    dilated stride-4 stage sees ~70 px; the stride-2 skip restores stroke borders. Cheap
    enough (~30 MFLOPs per 48x48 image at width 16) to train in minutes on a laptop CPU.
    """

    num_classes: int
    width: int = 16
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # No dropout or batch norm: identical train and eval graphs.
        conv = lambda channels, name, rate=1: nn.Conv(
            channels, (3, 3), kernel_dilation=rate, dtype=self.dtype, name=name)
        # Scene colours are random: standardise each image so strokes are deviations from
        # the ground, whatever its colour.
        mean = jnp.mean(images, axis=(1, 2), keepdims=True)
        std = jnp.std(images, axis=(1, 2), keepdims=True)
        x = ((images - mean) / (std + 1.0)).astype(self.dtype)
        x = nn.relu(conv(self.width, "stem")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        skip = nn.relu(conv(2 * self.width, "down1")(x))
        x = nn.max_pool(skip, (2, 2), strides=(2, 2))
        for i, rate in enumerate((1, 2, 4)):
            x = nn.relu(conv(4 * self.width, f"context{i}", rate)(x))
        x = jax.image.resize(x, (x.shape[0], *skip.shape[1:3], x.shape[-1]), "bilinear")
        x = jnp.concatenate([x, skip], axis=-1)
        x = nn.relu(conv(2 * self.width, "up1")(x))
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.float32)


@registry.register_segmentor("digit_net")
def _digit_net(config: ml_collections.ConfigDict) -> nn.Module:
    return DigitNet(num_classes=config.num_classes, width=config.segmentor.width,
                    dtype=jnp.dtype(config.dtype))
