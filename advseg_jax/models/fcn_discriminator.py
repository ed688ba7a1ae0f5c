"""Hung et al. 2018's fully convolutional discriminator: a confidence map, not one verdict.

"Adversarial Learning for Semi-Supervised Semantic Segmentation" (BMVC 2018, arXiv 1802.07934):
five 4x4 convolutions of stride 2 (64, 128, 256, 512, 1 channels; padding 1, as their released
model) with leaky ReLU 0.2 between them. Its output, 1/32 of the label map, is resized
(bilinear) back to the label map's resolution, so every pixel gets its own "this is ground
truth" logit. That per-pixel confidence is what picks trustworthy pixels of unlabeled images
for self-training; an image-level verdict cannot say *where* a prediction is right.

For C classes and the Basic encoding the parameter count is 16·64·C + 2,761,665 (Hung et al.'s
2,783,169 for Pascal VOC's 21). A unit of its last convolution sees 94x94 label-map pixels and a
map needs sides of at least 32 to leave that convolution non-empty, so Hung et al. feed it maps
at the image's resolution (`adversary.label_resolution = "input"`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from advseg_jax.models import registry

WIDTHS = (64, 128, 256, 512, 1)
LEAKY_SLOPE = 0.2


class FCNDiscriminator(nn.Module):
    """Per-pixel logits [N, h, w] for label maps [N, h, w, K] (the image is not an input)."""

    dtype: jnp.dtype = jnp.float32
    width_divisor: int = 1  # Every width but the last divided by this (1 = Hung et al.'s).

    @nn.compact
    def __call__(self, images: jnp.ndarray, label_maps: jnp.ndarray,
                 train: bool = False) -> jnp.ndarray:
        del images, train  # Hung et al.'s discriminator sees the label map only.
        x = label_maps.astype(self.dtype)
        for index, width in enumerate(WIDTHS):
            x = nn.Conv(max(1, width // self.width_divisor), (4, 4), strides=(2, 2),
                        padding=((1, 1), (1, 1)),
                        dtype=self.dtype, name=f"conv{index + 1}")(x)
            if index < len(WIDTHS) - 1:
                x = nn.leaky_relu(x, LEAKY_SLOPE)
        n, h, w = label_maps.shape[:3]
        x = jax.image.resize(x.astype(jnp.float32), (n, h, w, 1), "bilinear", antialias=False)
        return x[..., 0]


@registry.register_adversary("fcn")
def _fcn(config: ml_collections.ConfigDict) -> nn.Module:
    return FCNDiscriminator(dtype=jnp.dtype(config.dtype),
                            width_divisor=config.adversary.fcn_width_divisor)
