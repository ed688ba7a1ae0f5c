"""Losses against hand computation in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advseg_jax import losses


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_masked_cross_entropy_sums_valid_pixels_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 4, 5))
    labels[0, 0, :] = 255
    total, count = losses.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 255)
    valid = labels != 255
    expected = -_log_softmax(logits)[valid, labels[valid]].sum()
    assert float(count) == valid.sum()
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_void_pixels_get_no_gradient():
    logits = jnp.ones((1, 2, 2, 3))
    labels = jnp.array([[[0, 255], [1, 2]]])
    grads = jax.grad(lambda x: losses.masked_cross_entropy(x, labels, 255)[0])(logits)
    assert np.all(np.asarray(grads[0, 0, 1]) == 0)
    assert np.any(np.asarray(grads[0, 0, 0]) != 0)


def test_bce_and_adversary_loss_by_hand():
    real, fake = np.array([2.0, -1.0]), np.array([0.5, -3.0])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    expected = -np.mean(np.log(sigmoid(real))) - np.mean(np.log(1 - sigmoid(fake)))
    assert float(losses.adversary_loss(jnp.asarray(real), jnp.asarray(fake))) == pytest.approx(
        expected, rel=1e-6)


def test_segmentor_term_forms():
    fake = np.array([0.3, -2.0, 1.5])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    non_saturating = losses.segmentor_adversarial_loss(jnp.asarray(fake), "non_saturating")
    saturating = losses.segmentor_adversarial_loss(jnp.asarray(fake), "saturating")
    assert float(non_saturating) == pytest.approx(-np.mean(np.log(sigmoid(fake))), rel=1e-6)
    assert float(saturating) == pytest.approx(np.mean(np.log(1 - sigmoid(fake))), rel=1e-6)
    # Both push a(x, s(x)) up; the non-saturating one pushes harder when the adversary wins.
    confident = jnp.array([-6.0])
    g_ns = jax.grad(
        lambda x: losses.segmentor_adversarial_loss(x, "non_saturating").sum())(confident)
    g_s = jax.grad(lambda x: losses.segmentor_adversarial_loss(x, "saturating").sum())(confident)
    assert float(g_ns[0]) < float(g_s[0]) < 0
    with pytest.raises(ValueError, match="adversarial_loss='minimax'.*non_saturating"):
        losses.segmentor_adversarial_loss(jnp.asarray(fake), "minimax")


def test_adversary_diagnostics():
    out = losses.adversary_diagnostics(jnp.array([1.0, -1.0, 2.0, 3.0]), jnp.array([-1.0, 1.0]))
    assert float(out["adversary_accuracy_real"]) == pytest.approx(0.75)
    assert float(out["adversary_accuracy_fake"]) == pytest.approx(0.5)
    assert float(out["adversary_output_fake"]) == pytest.approx(0.5)
