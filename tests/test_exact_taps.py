"""Convolutions by taps compute what lax's do: values, gradients, the whole of Dilated-8.

20 training steps of configs/voc.py by taps and by lax: tests/test_voc_config.py."""

import itertools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from advseg_jax.models import dilated
from advseg_jax.models import exact_taps

NHWC = exact_taps.NHWC_HWIO


def _relative_error(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30))


def _lax_conv(lhs, rhs, padding, dilation):
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    return lax.conv_general_dilated(lhs, rhs, (1, 1), padding, rhs_dilation=dilation,
                                    dimension_numbers=numbers)


@pytest.mark.parametrize("size, kernel, dilation, padding", [
    ((8, 8), (7, 7), (4, 4), "SAME"),  # fc6 on a 64x64 crop: 92 % of the products are padding.
    ((9, 13), (3, 3), (2, 5), "SAME"),  # Odd, non-square, different dilations per axis.
    ((10, 9), (3, 5), (5, 1), ((1, 2), (0, 3))),  # Explicit, uneven padding.
    ((6, 7), (3, 3), (1, 1), "VALID"),
    ((5, 4), (1, 1), (1, 1), "SAME"),  # 1x1: one matmul.
    ((3, 3), (5, 5), (4, 4), "SAME"),  # Only the centre tap meets the image.
])
def test_values_and_both_gradients_match_lax(size, kernel, dilation, padding):
    rng = np.random.default_rng(0)
    lhs = jnp.asarray(rng.normal(size=(2, *size, 5)), jnp.float32)
    rhs = jnp.asarray(rng.normal(size=(*kernel, 5, 6)), jnp.float32)
    want = _lax_conv(lhs, rhs, padding, dilation)
    weights = jnp.asarray(rng.normal(size=want.shape), jnp.float32)

    def loss(conv, lhs, rhs):
        return jnp.sum(conv(lhs, rhs) * weights)

    by_taps = lambda lhs, rhs: exact_taps.conv_by_taps(lhs, rhs, padding, dilation)
    by_lax = lambda lhs, rhs: _lax_conv(lhs, rhs, padding, dilation)
    got = by_taps(lhs, rhs)
    assert got.shape == want.shape
    assert _relative_error(got, want) < 1e-5
    grads_taps = jax.grad(loss, argnums=(1, 2))(by_taps, lhs, rhs)
    grads_lax = jax.grad(loss, argnums=(1, 2))(by_lax, lhs, rhs)
    for a, b in zip(grads_taps, grads_lax):
        assert _relative_error(a, b) < 1e-5


@pytest.mark.parametrize("size, kernel, dilation, padding", [
    ((40, 40), (7, 7), (4, 4), "SAME"), ((8, 8), (7, 7), (4, 4), "SAME"),
    ((9, 13), (3, 3), (2, 5), ((1, 2), (0, 3))), ((6, 6), (1, 1), (1, 1), "SAME")])
def test_padding_fraction_counts_like_brute_force(size, kernel, dilation, padding):
    pads = (lax.padtype_to_pads(size, [(k - 1) * d + 1 for k, d in zip(kernel, dilation)],
                                (1, 1), padding) if isinstance(padding, str) else padding)
    out = [n + lo + hi - (k - 1) * d for n, (lo, hi), k, d in zip(size, pads, kernel, dilation)]
    padded = total = 0
    for oy, ox, ky, kx in itertools.product(range(out[0]), range(out[1]), range(kernel[0]),
                                            range(kernel[1])):
        y = oy - pads[0][0] + ky * dilation[0]
        x = ox - pads[1][0] + kx * dilation[1]
        padded += not (0 <= y < size[0] and 0 <= x < size[1])
        total += 1
    assert exact_taps.padding_fraction(size, kernel, dilation, padding) == pytest.approx(
            padded / total)


def _primitives(setting, platform, size, kernel, dilation):
    conv = exact_taps.conv_general_dilated(setting, platform=platform)
    lhs = jax.ShapeDtypeStruct((1, *size, 4), jnp.float32)
    rhs = jax.ShapeDtypeStruct((*kernel, 4, 3), jnp.float32)
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    jaxpr = jax.make_jaxpr(lambda a, b: conv(a, b, (1, 1), "SAME", rhs_dilation=dilation,
                                             dimension_numbers=numbers))(lhs, rhs)
    return _names(jaxpr.jaxpr)


def _names(jaxpr) -> set:
    """Primitive names in `jaxpr` and in the jaxprs its equations carry (custom_vjp, pjit)."""
    names = set()
    for equation in jaxpr.eqns:
        names.add(equation.primitive.name)
        for value in equation.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                names |= _names(inner)
    return names


@pytest.mark.parametrize("setting, platform, size, kernel, dilation, by_taps", [
    ("auto", "cpu", (40, 40), (7, 7), (4, 4), True),  # fc6 at crop 320: 31 % padding.
    ("auto", "cpu", (40, 40), (3, 3), (2, 2), False),  # conv5: 3 % padding.
    ("auto", "cpu", (40, 40), (1, 1), (1, 1), True),  # fc7: a matmul.
    ("auto", "gpu", (40, 40), (7, 7), (4, 4), False),  # Accelerators keep lax.
    ("auto", "tpu", (40, 40), (1, 1), (1, 1), False),
    ("taps", "gpu", (40, 40), (3, 3), (2, 2), True),
    ("lax", "cpu", (8, 8), (1, 1), (1, 1), False),
])
def test_each_setting_picks_the_algorithm_it_documents(setting, platform, size, kernel,
                                                       dilation, by_taps):
    primitives = _primitives(setting, platform, size, kernel, dilation)
    assert ("conv_general_dilated" not in primitives) == by_taps, primitives
    assert ("dot_general" in primitives) == by_taps, primitives


def test_strided_convolutions_are_left_to_lax():
    conv = exact_taps.conv_general_dilated("taps")
    lhs, rhs = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    jaxpr = jax.make_jaxpr(lambda a, b: conv(a, b, (2, 2), "SAME", dimension_numbers=numbers))(
            lhs, rhs)
    assert "conv_general_dilated" in {equation.primitive.name for equation in jaxpr.eqns}


def test_dilated8_automatic_matches_lax_values_and_every_gradient():
    """The whole segmentor on a 64x64 crop: on CPU, "auto" runs conv5, fc6, fc7, final and the
    context module by taps (fc6 on an 8x8 map). At 1/8 of VGG16's widths: which convolutions
    go by taps depends on kernels, dilations and map sizes, not on widths."""
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(0, 255, (1, 64, 64, 3)), jnp.float32)
    models = {setting: dilated.Dilated8(num_classes=5, conv_algorithm=setting, width_divisor=8)
              for setting in ("lax", "auto")}
    params = jax.jit(models["lax"].init)(jax.random.key(0), images)["params"]
    auto_shapes = jax.eval_shape(models["auto"].init, jax.random.key(0), images)["params"]
    assert jax.tree.map(np.shape, auto_shapes) == jax.tree.map(np.shape, params)
    weights = jnp.asarray(rng.normal(size=(1, 8, 8, 5)), jnp.float32)

    @jax.jit
    def value_and_grads(params):
        def loss(params, setting):
            return jnp.sum(models[setting].apply({"params": params}, images) * weights)
        return (jax.value_and_grad(loss)(params, "lax"),
                jax.value_and_grad(loss)(params, "auto"))

    (want, want_grads), (got, got_grads) = value_and_grads(params)
    assert _relative_error(got, want) < 1e-4
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got_grads),
                            jax.tree.leaves(want_grads)):
        assert _relative_error(a, b) < 1e-4, jax.tree_util.keystr(path)


def _padded_sum_taps(lhs, rhs, dilation):
    """The formulation this module replaced: each tap's product padded to the output, summed."""
    out_h, out_w, plan = exact_taps._tap_plan(lhs.shape, rhs.shape, "SAME", dilation)
    taps = rhs.reshape(-1, *rhs.shape[2:])
    total = 0.0
    for tap, (y0, y1, dy), (x0, x1, dx) in plan:
        part = lhs[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx, :] @ taps[tap]
        total = total + jnp.pad(part, ((0, 0), (y0, out_h - y1), (x0, out_w - x1), (0, 0)))
    return total


def _gradient_temp_bytes(conv, lhs, rhs) -> int:
    loss = lambda lhs, rhs: jnp.sum(jnp.tanh(conv(lhs, rhs)))
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(lhs, rhs).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_fc6_gradient_keeps_few_output_sized_buffers_alive():
    """fc6's shape at a 320x320 crop, narrowed: the taps run in order and add in place, so the
    gradient's temporaries stay a few output-sized buffers, not one per tap (49 here)."""
    lhs = jax.ShapeDtypeStruct((1, 40, 40, 32), jnp.float32)
    rhs = jax.ShapeDtypeStruct((7, 7, 32, 256), jnp.float32)
    output_bytes = 40 * 40 * 256 * 4
    kernel_bytes = 7 * 7 * 32 * 256 * 4
    ours = _gradient_temp_bytes(
        lambda a, b: exact_taps.conv_by_taps(a, b, "SAME", (4, 4)), lhs, rhs)
    padded = _gradient_temp_bytes(lambda a, b: _padded_sum_taps(a, b, (4, 4)), lhs, rhs)
    print(f"temp: ours {ours / 1e6:.1f} MB, padded sum {padded / 1e6:.1f} MB, output "
          f"{output_bytes / 1e6:.1f} MB, kernel {kernel_bytes / 1e6:.1f} MB")
    assert padded > 20 * output_bytes  # The old formulation: one padded product per tap.
    assert ours < 2 * kernel_bytes + 10 * output_bytes
    assert ours < padded / 3
