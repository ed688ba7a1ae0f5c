"""VGG16 against Keras: preprocessing, block5_pool features, fc conversion, .h5 loading."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.linen as nn  # noqa: E402
import h5py  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from advseg_jax import models  # noqa: E402
from advseg_jax.models import vgg  # noqa: E402

keras = pytest.importorskip("keras")

VGG16_TRUNK_PARAMS = 14_714_688  # Keras's VGG16(include_top=False) count.


def _conv(k, cin, cout):
    return k * k * cin * cout + cout


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def keras_notop():
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    # Keras zero-initialises biases; random ones make the bias copy observable.
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.random.RandomState(1).normal(0, 0.1, bias.shape)])
    return model


def test_preprocess_matches_keras():
    images = np.random.RandomState(0).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    expected = keras.applications.vgg16.preprocess_input(images.copy())
    np.testing.assert_allclose(vgg.preprocess_caffe(jnp.asarray(images)), expected, atol=1e-4)


def test_trunk_param_count_by_hand():
    hand = sum(_conv(3, cin, cout) for cin, cout in (
            (3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
            (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)))
    assert hand == VGG16_TRUNK_PARAMS
    variables = jax.eval_shape(lambda: vgg.VGG16().init(jax.random.PRNGKey(0),
                                                        jnp.zeros((1, 32, 32, 3))))
    assert sum(x.size for x in jax.tree_util.tree_leaves(variables)) == hand


def test_block5_pool_matches_keras(keras_notop):
    images = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    x = keras.applications.vgg16.preprocess_input(images.copy())
    expected = keras_notop.predict(x, verbose=0)
    params = vgg.params_from_keras(keras_notop)
    assert "fc6" not in params  # include_top=False has no fc layers to convert.
    ours = vgg.VGG16().apply({"params": params}, jnp.asarray(x))
    assert ours.shape == expected.shape == (2, 1, 1, 512)
    assert ours.dtype == jnp.float32
    assert np.count_nonzero(expected) > 50  # A dead (all-zero) net would compare trivially.
    assert _rel_err(ours, expected) < 1e-4


def test_fc_layers_convert_to_convolutions():
    keras.utils.set_random_seed(1)
    model = keras.applications.VGG16(weights=None, include_top=True)
    params = vgg.params_from_keras(model)
    fc1_kernel, fc1_bias = model.get_layer("fc1").get_weights()
    assert params["fc6"]["kernel"].shape == (7, 7, 512, 4096)
    np.testing.assert_array_equal(params["fc6"]["kernel"], fc1_kernel.reshape(7, 7, 512, 4096))
    assert params["fc7"]["kernel"].shape == (1, 1, 4096, 4096)
    # fc6 as a 7x7 VALID conv over a block5_pool-sized map == Keras's Flatten + Dense (+ReLU).
    feature_map = np.random.RandomState(0).normal(size=(1, 7, 7, 512)).astype(np.float32)
    dense = model.get_layer("fc1")(model.get_layer("flatten")(feature_map))
    conv = nn.Conv(4096, (7, 7), padding="VALID").apply({"params": params["fc6"]},
                                                        jnp.asarray(feature_map))
    assert conv.shape == (1, 1, 1, 4096)
    assert np.count_nonzero(np.asarray(dense)) > 100
    assert _rel_err(jax.nn.relu(conv[:, 0, 0]), np.asarray(dense)) < 1e-4
    hidden = np.abs(np.random.RandomState(1).normal(size=(1, 4096))).astype(np.float32)
    dense2 = model.get_layer("fc2")(hidden)
    conv2 = nn.Conv(4096, (1, 1)).apply({"params": params["fc7"]},
                                        jnp.asarray(hidden.reshape(1, 1, 1, 4096)))
    assert _rel_err(jax.nn.relu(conv2[:, 0, 0]), np.asarray(dense2)) < 1e-4


def _save_legacy_h5(model, path):
    """Writes weights in the layout of Keras's published vgg16_weights_*.h5 files."""
    from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def _dilated8_config(pretrained):
    config = ml_collections.ConfigDict()
    config.num_classes = 3
    config.dtype = "float32"
    config.segmentor = ml_collections.ConfigDict(
            {"name": "dilated8", "pretrained": pretrained, "context_module": True,
             "dropout_rate": 0.5, "conv_algorithm": "auto", "width_divisor": 1})
    return config


def test_pretrained_loader_reads_notop_h5(keras_notop, tmp_path):
    path = str(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    _save_legacy_h5(keras_notop, path)
    assert not vgg.infer_include_top(path)
    config = _dilated8_config(path)
    model = models.build_segmentor(config)
    # Shapes only: the loader must replace VGG leaves and leave the rest as it found them.
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 16, 16, 3))))["params"]
    loaded = models.load_pretrained(config, params)
    for name in ("block1_conv1", "block3_conv2", "block5_conv3"):
        kernel, bias = keras_notop.get_layer(name).get_weights()
        np.testing.assert_array_equal(loaded["frontend"][name]["kernel"], kernel)
        np.testing.assert_array_equal(loaded["frontend"][name]["bias"], bias)
    # Not in a _notop file, or not VGG at all: kept as initialised.
    for name in ("fc6", "fc7", "final"):
        assert loaded["frontend"][name] is params["frontend"][name]
    assert loaded["context"] is params["context"]


@pytest.mark.parametrize("groups,attrs,expected", [
        (["block1_conv1/block1_conv1", "fc1/fc1"], [b"block1_conv1", b"fc1"], True),  # Keras 2.
        (["block1_conv1/block1_conv1"], [b"block1_conv1"], False),
        (["layers/conv2d/vars", "layers/dense/vars"], None, True),  # Keras 3 .weights.h5.
        (["layers/conv2d/vars", "layers/max_pooling2d"], None, False),
])
def test_infer_include_top(tmp_path, groups, attrs, expected):
    path = str(tmp_path / "weights.h5")
    with h5py.File(path, "w") as f:
        for group in groups:
            f.create_group(group)
        if attrs is not None:
            f.attrs["layer_names"] = attrs
    assert vgg.infer_include_top(path) is expected


def test_missing_weights_file_names_value_and_fix(tmp_path):
    missing = str(tmp_path / "nope.h5")
    config = _dilated8_config(missing)
    params = {"frontend": {}}
    with pytest.raises(FileNotFoundError) as error:
        models.load_pretrained(config, params)
    assert missing in str(error.value) and "imagenet" in str(error.value)


def test_loader_rejects_params_of_another_model():
    with pytest.raises(ValueError, match="frontend"):
        models.load_pretrained(_dilated8_config("imagenet"), {"conv1": {}})


@pytest.mark.parametrize("height,width", [(64, 64), (72, 40)])
def test_dilated_front_end_has_output_stride_8(height, width):
    model = vgg.VGG16(dilated=True, num_classes=5)
    x = jnp.zeros((1, height, width, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    out = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert out.shape == (1, height // 8, width // 8, 5)
    assert variables["params"]["fc6"]["kernel"].shape == (7, 7, 512, 4096)
