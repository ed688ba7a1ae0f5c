"""Basic / Product / Scaling encodings against the paper's formulas in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advseg_jax import encodings


def _inputs(seed=0, n=2, h=3, w=4, c=5):
    rng = np.random.default_rng(seed)
    probs = np.asarray(jax.nn.softmax(rng.normal(size=(n, h, w, c)) * 3, -1), np.float32)
    labels = rng.integers(0, c, (n, h, w))
    labels[0, 0, 0] = 255
    images = rng.random((n, h, w, 3)).astype(np.float32)
    return probs, labels, images


def test_channels():
    assert encodings.encoded_channels("basic", 21) == 21
    assert encodings.encoded_channels("scaling", 21) == 21
    assert encodings.encoded_channels("product", 21) == 63
    with pytest.raises(ValueError, match="adversary.encoding='prod'.*product"):
        encodings.encoded_channels("prod", 21)


def test_product_is_every_class_times_every_channel():
    probs, _, images = _inputs()
    out = np.asarray(encodings.product_map(jnp.asarray(probs), jnp.asarray(images)))
    expected = np.einsum("nhwc,nhwk->nhwck", probs, images).reshape(*probs.shape[:3], -1)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_scaling_matches_paper_formula():
    probs, labels, _ = _inputs(1)
    tau = 0.9
    real = encodings.real_label_map(jnp.asarray(labels), jnp.asarray(probs), 255)
    out = np.asarray(encodings.scale_label_map(real, jnp.asarray(probs), tau))
    for index in np.ndindex(labels.shape):
        s, label = probs[index], labels[index]
        if label == 255:
            np.testing.assert_allclose(out[index], s, rtol=1e-6)  # Void: the prediction.
            continue
        y_true = max(tau, s[label])
        expected = s * (1 - y_true) / (1 - s[label])
        expected[label] = y_true
        np.testing.assert_allclose(out[index], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_scaling_with_confident_correct_prediction_is_the_prediction():
    probs = jnp.array([[[[0.01, 0.97, 0.02]]]])
    real = encodings.real_label_map(jnp.array([[[1]]]), probs, 255)
    np.testing.assert_allclose(encodings.scale_label_map(real, probs, 0.9), probs, rtol=1e-6)


@pytest.mark.parametrize("name", encodings.ENCODINGS)
def test_void_pixels_carry_no_signal(name):
    probs, labels, images = _inputs(2)
    labels[1, 2, :] = 255
    real, fake = encodings.adversary_inputs(name, jnp.asarray(labels), jnp.asarray(probs),
                                            jnp.asarray(images), 0.9, 255)
    void = labels == 255
    np.testing.assert_allclose(np.asarray(real)[void], np.asarray(fake)[void], rtol=1e-6)
    assert not np.allclose(np.asarray(real)[~void], np.asarray(fake)[~void])


def test_real_map_blocks_gradient_fake_map_passes_it():
    probs, labels, images = _inputs(3)

    def total(which):
        return lambda p: encodings.adversary_inputs(
            "scaling", jnp.asarray(labels), p, jnp.asarray(images), 0.9, 255)[which].sum()

    assert np.all(np.asarray(jax.grad(total(0))(jnp.asarray(probs))) == 0)
    assert np.any(np.asarray(jax.grad(total(1))(jnp.asarray(probs))) != 0)


def test_basic_real_map_is_one_hot_off_void():
    probs, labels, images = _inputs(4)
    real, _ = encodings.adversary_inputs("basic", jnp.asarray(labels), jnp.asarray(probs),
                                         jnp.asarray(images), 0.9, 255)
    valid = labels != 255
    np.testing.assert_array_equal(np.asarray(real)[valid], np.eye(5)[labels[valid]])
