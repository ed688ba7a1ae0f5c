"""digit_net and the registry: hand-counted parameters, output stride, error messages."""

import jax
import jax.numpy as jnp
import pytest

from advseg_jax import models


def _count(params):
    return sum(x.size for x in jax.tree.leaves(params))


def test_digit_net_parameter_count_and_stride(tiny_config):
    tiny_config.segmentor.width = 16
    segmentor = models.build_segmentor(tiny_config)
    images = jnp.zeros((2, 48, 40, 3))
    params = segmentor.init(jax.random.key(0), images)["params"]
    w, c = 16, tiny_config.num_classes
    conv = lambda k, cin, cout: k * k * cin * cout + cout
    expected = (conv(3, 3, w) + conv(3, w, 2 * w) + conv(3, 2 * w, 4 * w)
                + 2 * conv(3, 4 * w, 4 * w)
                + conv(3, 6 * w, 2 * w) + conv(1, 2 * w, c))
    assert _count(params) == expected == 125_483
    assert segmentor.apply({"params": params}, images).shape == (2, 24, 20, c)


def test_digit_net_ignores_scene_colour(tiny_config):
    """Per-image standardisation: a global colour shift and gain change nothing."""
    segmentor = models.build_segmentor(tiny_config)
    images = jax.random.uniform(jax.random.key(1), (1, 48, 48, 3), maxval=100.0)
    params = segmentor.init(jax.random.key(0), images)["params"]
    shifted = images * 1.5 + 60.0
    a = segmentor.apply({"params": params}, images)
    b = segmentor.apply({"params": params}, shifted)
    assert jnp.allclose(a, b, atol=0.1)


def test_registry_errors_list_the_options(tiny_config):
    tiny_config.segmentor.name = "fcn32"
    with pytest.raises(ValueError, match="segmentor.name='fcn32'; valid options: .*dilated8"):
        models.build_segmentor(tiny_config)
    tiny_config.segmentor.name = "digit_net"
    tiny_config.segmentor.pretrained = "imagenet"
    with pytest.raises(ValueError, match="has no pretrained weights.*dilated8"):
        models.load_pretrained(tiny_config, {})
