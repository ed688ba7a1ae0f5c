"""Segmentors for the embedded data; paper segmentors register from their own modules below."""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from advseg_jax.models import registry


class DigitNet(nn.Module):
    """A small dilated conv net for digit_scenes, output stride 2.

    Its receptive field (64 px) spans a whole digit, so it *can* use shape; whether training
    makes it do so, rather than label strokes from local texture, is what the adversary is for.
    """

    num_classes: int
    width: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # No dropout or batch norm: identical train and eval graphs.
        x = (images / 255.0 - 0.5).astype(self.dtype)
        x = nn.relu(nn.Conv(self.width, (3, 3), dtype=self.dtype, name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        for i, rate in enumerate((1, 2, 4, 8)):
            x = nn.Conv(2 * self.width, (3, 3), kernel_dilation=rate, dtype=self.dtype,
                        name=f"context{i}")(x)
            x = nn.relu(x)
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.float32)


@registry.register_segmentor("digit_net")
def _digit_net(config: ml_collections.ConfigDict) -> nn.Module:
    return DigitNet(num_classes=config.num_classes, width=config.segmentor.width,
                    dtype=jnp.dtype(config.dtype))
