"""The paper's two-branch adversary (Stanford Background, Luc et al. 2016, Fig. 2)."""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from advseg_jax.models import registry


class TwoBranchAdversary(nn.Module):
    """Image branch (16 → 64 ch) and label-map branch (64 ch), concatenated, then 128/256/512.

    Both inputs share one resolution (the segmentor's output), so the branches align pixel to
    pixel before the trunk looks at them jointly; two 2x2 pools and a global average give one
    logit whatever the input size.
    """

    width_divisor: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, label_maps: jnp.ndarray,
                 train: bool = False) -> jnp.ndarray:
        del train
        w = lambda channels: max(1, channels // self.width_divisor)
        conv = lambda channels, size, name: nn.Conv(
            w(channels), (size, size), dtype=self.dtype, name=name)
        x = images.astype(self.dtype)
        x = nn.relu(conv(16, 5, "image_conv1")(x))
        x = nn.relu(conv(64, 5, "image_conv2")(x))
        y = nn.relu(conv(64, 5, "label_conv1")(label_maps.astype(self.dtype)))
        h = jnp.concatenate([x, y], axis=-1)
        h = nn.relu(conv(128, 3, "trunk_conv1")(h))
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(conv(256, 3, "trunk_conv2")(h))
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(conv(512, 3, "trunk_conv3")(h))
        h = nn.Conv(1, (3, 3), dtype=self.dtype, name="output")(h)
        return jnp.mean(h.astype(jnp.float32), axis=(1, 2, 3))


@registry.register_adversary("stanford")
def _stanford(config: ml_collections.ConfigDict) -> nn.Module:
    return TwoBranchAdversary(width_divisor=config.adversary.width_divisor,
                              dtype=jnp.dtype(config.dtype))
