"""Farabet et al. (2013)'s multi-scale ConvNet: the paper's Stanford Background segmentor.

One conv stack, weights shared over a 3-level image pyramid; every level's features are
upsampled to the finest level's feature map and concatenated, so each pixel's classifier
sees 46x46 windows at three scales (46, 92, 184 image pixels) with the parameters of one.

Deviations from Farabet et al., all to keep a plain, dense, end-to-end model:
  * Input: per-image, per-channel standardisation of RGB instead of YUV with local contrast
    normalisation on each pyramid level; the pyramid is antialiased bilinear downsampling
    instead of a Laplacian pyramid.
  * Filter banks are fully connected across channels (Farabet: sparse connection tables,
    e.g. 8 first-layer filters on Y and 8 on U/V).
  * SAME padding (Farabet: VALID convolutions on a padded pyramid), so the output is aligned
    with the image at stride 4; bilinear rather than replicating upsampling of the coarse levels.
  * The classifier is one linear 1x1 layer on the concatenated features, as in Farabet's
    "multiscale convnet" model (no superpixels, CRF or hidden layer).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from advseg_jax.models import registry

# Farabet et al.: widths 16/64/256, 7x7 filters, tanh, 2x2 max-pools after the first two stages
# (the third is a plain filter bank); pyramid scales 1, 1/2, 1/4.
FARABET_WIDTHS = (16, 64, 256)
FARABET_KERNEL = 7
FARABET_SCALES = 3
_ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu}
# Guards the per-image standardisation of flat (constant) images.
_STD_EPS = 1e-5


class _Stack(nn.Module):
    """Filter bank + nonlinearity + 2x2 max-pool per stage; the last stage is a filter bank."""

    widths: Sequence[int]
    kernel_size: int
    activation: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        act = _ACTIVATIONS[self.activation]
        for i, width in enumerate(self.widths, start=1):
            x = nn.Conv(width, (self.kernel_size, self.kernel_size), padding="SAME",
                        dtype=self.dtype, name=f"conv{i}")(x)
            if i < len(self.widths):
                x = nn.max_pool(act(x), (2, 2), strides=(2, 2))
        return x


class MultiscaleNet(nn.Module):
    """Shared stack on scales 1, 1/2, 1/4, features concatenated at stride 4, linear classifier."""

    num_classes: int
    widths: Sequence[int] = FARABET_WIDTHS
    kernel_size: int = FARABET_KERNEL
    activation: str = "tanh"
    num_scales: int = FARABET_SCALES
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # No dropout or batch norm.
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"segmentor.activation={self.activation!r}; valid options: "
                             f"{sorted(_ACTIVATIONS)}.")
        x = images.astype(jnp.float32)
        mean = jnp.mean(x, axis=(1, 2), keepdims=True)
        std = jnp.std(x, axis=(1, 2), keepdims=True)
        x = (x - mean) / (std + _STD_EPS)
        stack = _Stack(tuple(self.widths), self.kernel_size, self.activation, dtype=self.dtype,
                       name="stack")
        n, h, w, c = x.shape
        features = []
        for level in range(self.num_scales):
            factor = 2 ** level
            level_input = x if level == 0 else jax.image.resize(
                    x, (n, max(h // factor, 1), max(w // factor, 1), c), method="linear")
            features.append(stack(level_input.astype(self.dtype)))
        out_shape = features[0].shape
        features = [features[0]] + [
                jax.image.resize(f, out_shape[:3] + f.shape[-1:], method="linear")
                for f in features[1:]]
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(
                jnp.concatenate(features, axis=-1))
        return logits.astype(jnp.float32)


@registry.register_segmentor("multiscale")
def _multiscale(config: ml_collections.ConfigDict) -> nn.Module:
    seg = config.segmentor
    return MultiscaleNet(num_classes=config.num_classes, widths=tuple(seg.widths),
                         kernel_size=seg.kernel_size, activation=seg.activation,
                         num_scales=seg.num_scales,
                         dtype=jnp.dtype(config.dtype))
