"""Dilated-8 (Yu & Koltun 2016): the paper's Pascal VOC segmentor (Luc et al. 2016, Sec. 4.2)."""

from typing import Any, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from advseg_jax.models import exact_taps
from advseg_jax.models import registry
from advseg_jax.models import vgg

# Yu & Koltun's basic context module: seven 3x3 layers with exponentially growing dilation
# (receptive field 67x67 on the stride-8 map), then a 1x1 layer.
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)


def identity_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """Kernel whose centre tap copies channel i to channel i (Yu & Koltun's identity init).

    Random init of a module fed with class scores destroys the front-end's prediction before
    training starts; identity init starts the context module as a no-op (up to ReLU truncation)
    so it only learns corrections.
    """
    del key
    kh, kw, cin, cout = shape
    kernel = np.zeros(shape, dtype=np.float32)
    idx = np.arange(min(cin, cout))
    kernel[kh // 2, kw // 2, idx, idx] = 1.0
    return jnp.asarray(kernel, dtype=dtype)


class ContextModule(nn.Module):
    """Basic context module: C-channel dilated 3x3 convs + ReLU, then a 1x1 C→C (no ReLU)."""

    num_classes: int
    dilations: Sequence[int] = CONTEXT_DILATIONS
    dtype: Any = jnp.float32
    conv_algorithm: str = "auto"  # `exact_taps.SETTINGS`.

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = exact_taps.conv_general_dilated(self.conv_algorithm)
        for i, rate in enumerate(self.dilations, start=1):
            x = nn.Conv(self.num_classes, (3, 3), kernel_dilation=rate, padding="SAME",
                        kernel_init=identity_init, bias_init=nn.initializers.zeros,
                        dtype=self.dtype, conv_general_dilated=conv,
                        name=f"conv{i}")(x)
            x = nn.relu(x)
        return nn.Conv(self.num_classes, (1, 1), kernel_init=identity_init,
                       bias_init=nn.initializers.zeros, dtype=self.dtype,
                       conv_general_dilated=conv, name="final")(x)


class Dilated8(nn.Module):
    """VGG16 front-end at stride 8 (`frontend`), optionally followed by the context module."""

    num_classes: int
    dropout_rate: float = 0.5
    context_module: bool = True
    dtype: Any = jnp.float32
    conv_algorithm: str = "auto"  # `exact_taps.SETTINGS`.
    width_divisor: int = 1  # The front-end's widths divided by this (`vgg.VGG16`).

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = vgg.preprocess_caffe(images)
        x = vgg.VGG16(dilated=True, num_classes=self.num_classes, dropout_rate=self.dropout_rate,
                      dtype=self.dtype, conv_algorithm=self.conv_algorithm,
                      width_divisor=self.width_divisor, name="frontend")(
                              x, train=train)
        if self.context_module:
            x = ContextModule(self.num_classes, dtype=self.dtype,
                              conv_algorithm=self.conv_algorithm, name="context")(
                    x.astype(self.dtype))
        return x.astype(jnp.float32)


@registry.register_segmentor("dilated8")
def _dilated8(config: ml_collections.ConfigDict) -> nn.Module:
    return Dilated8(num_classes=config.num_classes,
                    dropout_rate=config.segmentor.dropout_rate,
                    context_module=config.segmentor.context_module,
                    dtype=jnp.dtype(config.dtype),
                    conv_algorithm=config.segmentor.conv_algorithm,
                    width_divisor=config.segmentor.width_divisor)


@registry.register_pretrained_loader("dilated8")
def _load_vgg16(config: ml_collections.ConfigDict, params: dict) -> dict:
    """Fills `frontend`'s VGG16 layers (and fc6/fc7 when the weights have them).

    `config.segmentor.pretrained` is "imagenet" (Keras downloads) or a Keras VGG16 `.h5` path;
    `final` and the context module keep their initialisation, as in Yu & Koltun.
    """
    source = config.segmentor.pretrained
    if "frontend" not in params:
        raise ValueError(f"segmentor.pretrained={source!r}: params have no 'frontend' subtree "
                         f"(top-level keys: {sorted(params)}); are these dilated8 params?")
    loaded = vgg.params_from_keras(source)
    frontend = dict(params["frontend"])
    for name, leaves in loaded.items():
        for leaf, value in leaves.items():
            expected = frontend[name][leaf].shape
            if tuple(value.shape) != tuple(expected):
                raise ValueError(f"segmentor.pretrained={source!r}: {name}/{leaf} has shape "
                                 f"{value.shape}, the model expects {expected}.")
        frontend[name] = {leaf: jnp.asarray(value, dtype=frontend[name][leaf].dtype)
                          for leaf, value in leaves.items()}
    if "fc6" not in loaded:
        logging.warning("segmentor.pretrained=%r has no fc layers (a _notop file): fc6/fc7 "
                        "stay randomly initialised.", source)
    return {**params, "frontend": frontend}
