"""Schedules and optimizer construction from a sub-config."""

import ml_collections
import numpy as np
import pytest

from advseg_jax import optim


def _sub(**overrides):
    sub = ml_collections.ConfigDict(dict(optimizer="sgd", learning_rate=0.1, schedule="constant",
                                         warmup_steps=0, momentum=0.9, weight_decay=0.0))
    sub.update(overrides)
    return sub


def test_warmup_then_cosine():
    schedule = optim.make_schedule(_sub(schedule="cosine", warmup_steps=10), 110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.05)
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(60)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)


def test_poly_is_deeplab_power_point_nine():
    schedule = optim.make_schedule(_sub(schedule="poly"), 100)
    assert float(schedule(50)) == pytest.approx(0.1 * 0.5**0.9, rel=1e-5)


def test_sgd_with_weight_decay_matches_hand_update():
    import jax.numpy as jnp
    tx = optim.make_optimizer(_sub(weight_decay=0.5, momentum=0.0), 10)
    params = {"w": jnp.array([2.0])}
    updates, _ = tx.update({"w": jnp.array([1.0])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * (1.0 + 0.5 * 2.0), rtol=1e-6)


def test_unknown_names_are_rejected_with_options():
    with pytest.raises(ValueError, match="optimizer='rmsprop'.*adam"):
        optim.make_optimizer(_sub(optimizer="rmsprop"), 10)
    with pytest.raises(ValueError, match="schedule='step'.*cosine"):
        optim.make_schedule(_sub(schedule="step"), 10)
