"""VGG16 (Simonyan & Zisserman 2015) as Keras builds it, and its Dilated-8 front-end.

Parameter names follow Keras's layer names (`block1_conv1` … `block5_conv3`; the fully
connected layers become `fc6`/`fc7` convolutions as in Caffe and Yu & Koltun), so that
`params_from_keras` is a rename plus two reshapes and ImageNet weights load without a table.
"""

import os
from typing import Any, Dict, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from advseg_jax.models import exact_taps

# Keras's "caffe" preprocessing mean, in BGR order: the statistics the ImageNet weights were
# trained with, so they are part of the pretrained model rather than a tunable setting.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)

# (output channels of each 3x3 conv) per block; a 2x2 max-pool ends every block.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_WIDTH = 4096  # VGG16's fc1/fc2 (Caffe's fc6/fc7).
FC6_KERNEL = 7  # fc1 sees the 7x7x512 block5_pool map of a 224x224 image.
# Dilated-8 front-end (Yu & Koltun 2016): pool4/pool5 removed, dilation compensates.
CONV5_DILATION = 2
FC6_DILATION = 4

ParamsTree = Dict[str, Dict[str, Any]]


def preprocess_caffe(images: jnp.ndarray) -> jnp.ndarray:
    """RGB in [0, 255] → BGR minus the ImageNet mean, unscaled (Keras `mode="caffe"`).

    The Keras/Caffe VGG16 weights expect exactly this input; any other normalisation silently
    wastes the pretraining.
    """
    bgr = images[..., ::-1].astype(jnp.float32)
    return bgr - jnp.asarray(IMAGENET_BGR_MEAN, dtype=jnp.float32)


class VGG16(nn.Module):
    """VGG16's conv part, or with `dilated=True` Yu & Koltun's Dilated-8 front-end.

    `dilated=False`: input is already `preprocess_caffe`d, output is Keras's `block5_pool`
    (stride 32), float32.

    `dilated=True`: pool4/pool5 removed, conv5 dilated by 2, fc6 as a 7x7 conv dilated by 4,
    fc7 as 1x1, dropout after both, a final 1x1 to `num_classes`: logits at stride 8
    (h = floor(H / 8)). Yu & Koltun use VALID convolutions on a heavily padded input in Caffe;
    we use SAME padding, which keeps the output aligned with the input at exactly stride 8 and
    needs no input padding, at the cost of zero-padded context at the image borders.
    """

    dilated: bool = False
    num_classes: int = 0  # Only used (and required) when dilated.
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    conv_algorithm: str = "auto"  # How the convolutions compute: `exact_taps.SETTINGS`.
    # Every width divided by this: the same network, narrow (tests, CPU trials). 1 = VGG16's,
    # the only one the ImageNet weights fit.
    width_divisor: int = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x.astype(self.dtype)
        narrow = lambda width: max(1, width // self.width_divisor)
        conv = exact_taps.conv_general_dilated(self.conv_algorithm)
        for block, widths in enumerate(VGG16_BLOCKS, start=1):
            dilation = CONV5_DILATION if (self.dilated and block == 5) else 1
            for i, width in enumerate(widths, start=1):
                x = nn.Conv(narrow(width), (3, 3), kernel_dilation=dilation, padding="SAME",
                            dtype=self.dtype, conv_general_dilated=conv,
                            name=f"block{block}_conv{i}")(x)
                x = nn.relu(x)
            if not self.dilated or block <= 3:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        if not self.dilated:
            return x.astype(jnp.float32)
        if self.num_classes <= 0:
            raise ValueError(f"VGG16(dilated=True) needs num_classes > 0, got {self.num_classes}.")
        x = nn.Conv(narrow(FC_WIDTH), (FC6_KERNEL, FC6_KERNEL), kernel_dilation=FC6_DILATION,
                    padding="SAME", dtype=self.dtype, conv_general_dilated=conv,
                    name="fc6")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        x = nn.Conv(narrow(FC_WIDTH), (1, 1), dtype=self.dtype, conv_general_dilated=conv,
                    name="fc7")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, conv_general_dilated=conv,
                    name="final")(x)
        return x.astype(jnp.float32)


def _conv_layer_names():
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, len(widths) + 1):
            yield f"block{block}_conv{i}"


def _has_layer(keras_model, name: str) -> bool:
    return any(layer.name == name for layer in keras_model.layers)


def infer_include_top(path: str) -> bool:
    """Whether a Keras VGG16 weights file holds fc1/fc2 (the `..._notop.h5` files do not).

    The published files (Keras 2 layout) list layer names in the `layer_names` attribute;
    Keras 3's `.weights.h5` names groups by layer class (`layers/dense`, `layers/dense_1`),
    and VGG16's only Dense layers are fc1/fc2/predictions.
    """
    import h5py  # pylint: disable=g-import-not-at-top  (only needed for offline weights)

    components = set()
    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in f.attrs.get("layer_names", [])]
        f.visit(lambda name: components.update(name.split("/")))
    components.update(names)
    return "fc1" in components or any(c == "dense" or c.startswith("dense_") for c in components)


def keras_vgg16(source: str):
    """A Keras VGG16 with weights from `"imagenet"` (downloads) or a local `.h5` file.

    Offline clusters pass the path of `vgg16_weights_tf_dim_ordering_tf_kernels.h5` (with fc
    layers, what the Dilated-8 front-end wants) or `..._notop.h5` (conv layers only).
    """
    import keras  # pylint: disable=g-import-not-at-top  (TensorFlow import is slow)

    if source == "imagenet":
        try:
            return keras.applications.VGG16(weights="imagenet", include_top=True)
        except Exception as e:  # Network errors surface as many types; all mean the same here.
            raise RuntimeError(
                    "Could not download the Keras VGG16 ImageNet weights "
                    f"(segmentor.pretrained='imagenet'): {e}. Without internet, download "
                    "vgg16_weights_tf_dim_ordering_tf_kernels.h5 elsewhere and set "
                    "segmentor.pretrained=/path/to/vgg16_weights_tf_dim_ordering_tf_kernels.h5."
            ) from e
    path = os.path.expanduser(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(
                f"segmentor.pretrained={source!r} is neither 'imagenet' nor an existing file. "
                "Set it to 'imagenet' (needs internet) or to the path of Keras's "
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5 (or ..._notop.h5).")
    include_top = infer_include_top(path)
    try:
        return keras.applications.VGG16(weights=path, include_top=include_top)
    except Exception as e:  # Keras raises ValueError/OSError/KeyError for foreign files.
        raise ValueError(
                f"segmentor.pretrained={source!r}: Keras could not load it as VGG16 weights "
                f"(include_top={include_top}): {e}. Use Keras's "
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5 or ..._notop.h5.") from e


def params_from_keras(keras_model_or_path: Union[str, Any]) -> ParamsTree:
    """Our `VGG16(dilated=True)` parameters from a Keras VGG16 (model, path or "imagenet").

    Conv kernels are HWIO in both frameworks, so they copy as they are. Keras's Flatten runs
    over the HWC `block5_pool` map, so fc1's [25088, 4096] kernel reshapes to [7, 7, 512, 4096]
    directly; fc2 becomes a 1x1 conv. Without fc layers (`include_top=False`) only the convs are
    returned and `fc6`/`fc7`/`final` keep their initialisation.
    """
    if isinstance(keras_model_or_path, (str, os.PathLike)):
        keras_model = keras_vgg16(os.fspath(keras_model_or_path))
    else:
        keras_model = keras_model_or_path
    params: ParamsTree = {}
    for name in _conv_layer_names():
        kernel, bias = keras_model.get_layer(name).get_weights()
        params[name] = {"kernel": np.asarray(kernel, np.float32),
                        "bias": np.asarray(bias, np.float32)}
    if _has_layer(keras_model, "fc1"):
        last_conv = VGG16_BLOCKS[-1][-1]
        for keras_name, ours, shape in (
                ("fc1", "fc6", (FC6_KERNEL, FC6_KERNEL, last_conv, FC_WIDTH)),
                ("fc2", "fc7", (1, 1, FC_WIDTH, FC_WIDTH))):
            kernel, bias = keras_model.get_layer(keras_name).get_weights()
            if int(np.prod(kernel.shape)) != int(np.prod(shape)):
                raise ValueError(
                        f"Keras layer {keras_name} has kernel {kernel.shape}, expected "
                        f"{int(np.prod(shape[:-1]))}x{shape[-1]}: the model was not built for "
                        "224x224 inputs. Build it with include_top=True and the default shape.")
            params[ours] = {"kernel": np.asarray(kernel, np.float32).reshape(shape),
                            "bias": np.asarray(bias, np.float32)}
    return params
