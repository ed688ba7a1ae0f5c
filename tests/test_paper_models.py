"""The paper's segmentors (dilated8, multiscale) and VOC adversaries: size, stride, FOV, dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advseg_jax import models
from advseg_jax.models import dilated
from advseg_jax.models import fov_adversaries
from configs import default

VGG16_TRUNK = 14_714_688


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def dilated8_params(c, context=True):
    """VGG16 convs + fc6 (7x7x512→4096) + fc7 (1x1 4096→4096) + final 1x1 + context module."""
    front = VGG16_TRUNK + conv(7, 512, 4096) + conv(1, 4096, 4096) + conv(1, 4096, c)
    return front + (7 * conv(3, c, c) + conv(1, c, c) if context else 0)


def multiscale_params(c, widths=(16, 64, 256)):
    stack = conv(7, 3, widths[0]) + conv(7, widths[0], widths[1]) + conv(7, widths[1], widths[2])
    return stack + conv(1, 3 * widths[2], c)  # One stack for all 3 scales; 3x256 features.


def adversary_params(name, k):
    """k input channels; the layer lists of Luc et al. Sec. 4.2 written out."""
    layers = {
            "largefov": [(3, 96), (3, 128), (3, 128), (3, 256), (3, 256), (3, 512), (3, 1)],
            "largefov_light": [(3, 96), (3, 128), (3, 128), (3, 128), (3, 128), (3, 256), (3, 1)],
            "smallfov": [(3, 96), (1, 128), (3, 256), (1, 256), (3, 512), (1, 1)],
            "smallfov_light": [(3, 96), (1, 128), (3, 128), (1, 128), (3, 256), (1, 1)],
    }[name]
    total, cin = 0, k
    for size, cout in layers:
        total, cin = total + conv(size, cin, cout), cout
    return total


def make_config(**overrides):
    config = default.get_config()
    for key, value in overrides.items():
        parent = config
        *path, leaf = key.split(".")
        for part in path:
            parent = parent[part]
        parent[leaf] = value
    return config


def count(variables):
    return sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))


def shapes_of_segmentor(config, size):
    model = models.build_segmentor(config)
    x = jnp.zeros((1, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    return count(variables), jax.eval_shape(lambda v: model.apply(v, x), variables).shape


@pytest.fixture(scope="module")
def dilated8_variables():
    """Random Dilated-8 (21 classes) params without paying for 134M Gaussian draws.

    Tiling one random block (prime length, so rows do not repeat in step) fills fc6/fc7 in
    well under a second; `model.init` takes ~15 s on two CPU cores.
    """
    model = models.build_segmentor(make_config(**{"num_classes": 21,
                                                  "segmentor.name": "dilated8"}))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))))
    base = np.random.RandomState(0).standard_normal(1_000_003).astype(np.float32)

    def fill(leaf):
        values = np.resize(base, leaf.shape)
        scale = 0.01 if len(leaf.shape) == 1 else 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
        return jnp.asarray(values * np.float32(scale))

    return jax.tree_util.tree_map(fill, shapes)


def test_models_are_registered():
    assert {"dilated8", "multiscale"} <= set(models.segmentor_names())
    assert {"largefov", "largefov_light", "smallfov", "smallfov_light"} <= set(
            models.adversary_names())


@pytest.mark.parametrize("context", [True, False])
def test_dilated8_size_and_stride(context):
    config = make_config(**{"num_classes": 21, "segmentor.name": "dilated8",
                            "segmentor.context_module": context})
    params, out_shape = shapes_of_segmentor(config, 64)
    assert params == dilated8_params(21, context)
    assert out_shape == (1, 8, 8, 21)


def test_dilated8_param_count_value():
    # 134,374,973 for VOC: printed in the report and README; pinned to catch formula slips too.
    assert dilated8_params(21) == 134_374_973


def test_multiscale_size_and_stride():
    config = make_config(**{"num_classes": 8, "segmentor.name": "multiscale"})
    params, out_shape = shapes_of_segmentor(config, 64)
    assert params == multiscale_params(8) == 861_832
    assert out_shape == (1, 16, 16, 8)


@pytest.mark.parametrize("name", sorted(fov_adversaries.ARCHITECTURES))
@pytest.mark.parametrize("concat_image", [False, True])
def test_adversary_sizes(name, concat_image):
    config = make_config(**{"num_classes": 21, "adversary.name": name,
                            "adversary.concat_image": concat_image})
    model = models.build_adversary(config)
    k = 63  # Product encoding of 21 classes.
    images, maps = jnp.zeros((2, 24, 24, 3)), jnp.zeros((2, 24, 24, k))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, maps))
    assert count(variables) == adversary_params(name, k + 3 * concat_image)
    assert jax.eval_shape(lambda v: model.apply(v, images, maps), variables).shape == (2,)


def test_context_module_starts_as_identity():
    """Identity init: each layer passes its input through, so the module computes ReLU(x)."""
    module = dilated.ContextModule(num_classes=5)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 12, 5))
    variables = module.init(jax.random.PRNGKey(1), x)
    kernel = variables["params"]["conv3"]["kernel"]
    assert float(kernel[1, 1, 2, 2]) == 1.0 and float(jnp.sum(jnp.abs(kernel))) == 5.0
    np.testing.assert_allclose(module.apply(variables, x), jax.nn.relu(x), atol=1e-6)


def measured_fov(name, size=40, batch=8):
    """Extent of the input region the gradient of one interior score-map unit reaches.

    Positive weights and biases keep every ReLU open, so no path is cut by accident; max-pools
    route the gradient to one input per window, so the union over a batch of random maps is
    taken to reach every position of the receptive field.
    """
    stages, output_kernel = fov_adversaries.ARCHITECTURES[name]
    model = fov_adversaries.FovAdversary(stages, output_kernel)
    key = jax.random.PRNGKey(0)
    images = jnp.zeros((batch, size, size, 3))
    maps = jax.random.uniform(key, (batch, size, size, 2))
    variables = model.init(key, images, maps)
    variables = jax.tree_util.tree_map(lambda p: jnp.abs(p) + 0.01, variables)
    centre = size // 8  # The score map is size/4 wide.

    def unit(label_maps):
        scores = model.apply(variables, images, label_maps,
                             method=fov_adversaries.FovAdversary.score_map)
        return scores[:, centre, centre, 0].sum()

    support = np.asarray(jnp.any(jax.grad(unit)(maps) != 0, axis=(0, 3)))
    rows, cols = np.nonzero(support.any(axis=1))[0], np.nonzero(support.any(axis=0))[0]
    assert rows.min() > 0 and rows.max() < size - 1, "field of view touches the border"
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize("name,fov", [("largefov", 34), ("largefov_light", 34),
                                      ("smallfov", 18), ("smallfov_light", 18)])
def test_field_of_view(name, fov):
    assert measured_fov(name) == (fov, fov)
    assert fov_adversaries.field_of_view(*fov_adversaries.ARCHITECTURES[name]) == fov


@pytest.mark.parametrize("kind,overrides,size", [
        ("segmentor", {"num_classes": 21, "segmentor.name": "dilated8"}, 32),
        ("segmentor", {"num_classes": 8, "segmentor.name": "multiscale"}, 64),
        ("adversary", {"adversary.name": "largefov"}, 24),
        ("adversary", {"adversary.name": "smallfov_light"}, 24),
])
def test_bfloat16_matches_float32(kind, overrides, size, request):
    config = make_config(**overrides)
    key = jax.random.PRNGKey(2)
    if kind == "segmentor":
        build = models.build_segmentor
        args = (jax.random.uniform(key, (1, size, size, 3), maxval=255.0),)
    else:
        build = models.build_adversary
        args = (jax.random.uniform(key, (1, size, size, 3)),
                jax.nn.softmax(jax.random.normal(key, (1, size, size, 21)), axis=-1))
    config.dtype = "bfloat16"
    bf16_model = build(config)
    if config.segmentor.name == "dilated8" and kind == "segmentor":
        variables = request.getfixturevalue("dilated8_variables")
    else:
        variables = jax.jit(bf16_model.init)(jax.random.PRNGKey(0), *args)
    assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {jnp.dtype("float32")}
    config.dtype = "float32"
    ref = jax.jit(build(config).apply)(variables, *args)
    out = jax.jit(bf16_model.apply)(variables, *args)
    assert out.dtype == ref.dtype == jnp.float32
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert 0 < err < 5e-2  # > 0: the activations really ran in bfloat16.


def test_dilated8_dropout_only_in_training(dilated8_variables):
    config = make_config(**{"num_classes": 21, "segmentor.name": "dilated8",
                            "segmentor.dropout_rate": 0.5})
    model = models.build_segmentor(config)
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 16, 16, 3), maxval=255.0)
    apply = jax.jit(model.apply, static_argnames="train")
    eval_a = apply(dilated8_variables, x, train=False)
    eval_b = apply(dilated8_variables, x, train=False)
    train = apply(dilated8_variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(train, eval_a)
