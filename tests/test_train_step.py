"""The data-parallel step: device-count invariance, the baseline, k adversary steps, NaN guard."""

import jax
import numpy as np
import pytest

from advseg_jax import sharding
from advseg_jax import optim
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    size = tuple(config.input.crop_size)
    labels = rng.integers(0, config.num_classes, (config.batch_size, *size)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.3] = 255  # Uneven void counts across the two halves.
    labels[: config.batch_size // 2, :10] = 255
    images = rng.integers(0, 256, (config.batch_size, *size, 3)).astype(np.uint8)
    return {"image": images, "label": labels}


def _train(config, mesh, num_steps=3):
    segmentor, adversary = state_lib.build_models(config)
    state = state_lib.create_train_state(config, mesh)
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    for i in range(num_steps):
        state, metrics = step(state, sharding.global_batch(_batch(config, i), mesh))
    return jax.device_get(state), steps.host_scalars(metrics)


def test_one_and_two_devices_give_the_same_parameters(tiny_config):
    assert jax.device_count() == 2
    one, metrics_one = _train(tiny_config, sharding.make_mesh(jax.devices()[:1]))
    two, metrics_two = _train(tiny_config, sharding.make_mesh(jax.devices()))
    # The two runs differ only in the order of float sums (pmean over 2 devices); Adam divides
    # by sqrt(v), which can lift that 1e-7 noise to ~1e-6 on a small weight. 1e-5 is 1/300 of
    # one Adam step (lr 3e-3): a real difference in data, loss or gradient is far larger.
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)
    for key in metrics_one:
        assert metrics_one[key] == pytest.approx(metrics_two[key], rel=1e-4, abs=1e-6), key
    assert int(one.segmentor.step) == 3


def test_both_states_change_and_losses_are_finite(tiny_config):
    mesh = sharding.make_mesh()
    initial = jax.device_get(state_lib.create_train_state(tiny_config, mesh))
    final, metrics = _train(tiny_config, mesh, num_steps=1)
    for name in ("segmentor", "adversary"):
        before = jax.tree.leaves(getattr(initial, name).params)
        after = jax.tree.leaves(getattr(final, name).params)
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), name
    for key in ("cross_entropy", "adversarial_term", "adversary_loss", "segmentor_loss"):
        assert np.isfinite(metrics[key]), key
    assert metrics["segmentor_loss"] == pytest.approx(
        metrics["cross_entropy"] + tiny_config.lambda_adv * metrics["adversarial_term"], rel=1e-5)


def test_baseline_builds_no_adversary(tiny_config):
    tiny_config.lambda_adv = 0.0
    segmentor, adversary = state_lib.build_models(tiny_config)
    assert adversary is None
    state, metrics = _train(tiny_config, sharding.make_mesh(), num_steps=1)
    assert state.adversary is None
    assert set(metrics) == {"cross_entropy", "segmentor_loss", "nonfinite_segmentor"}


def test_adversary_steps_per_segmentor_step(tiny_config):
    tiny_config.adversary.steps_per_segmentor_step = 3
    state, _ = _train(tiny_config, sharding.make_mesh(), num_steps=2)
    assert int(state.adversary.step) == 6 and int(state.segmentor.step) == 2


def test_nonfinite_step_is_not_applied(tiny_config):
    mesh = sharding.make_mesh()
    segmentor, adversary = state_lib.build_models(tiny_config)
    state = state_lib.create_train_state(tiny_config, mesh)
    before = jax.device_get(state)
    step = steps.make_train_step(tiny_config, mesh, segmentor, adversary)
    batch = _batch(tiny_config)
    batch["image"] = batch["image"].astype(np.float32)
    batch["image"][0, 0, 0, 0] = np.nan
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    scalars = steps.host_scalars(metrics)
    assert scalars["nonfinite_segmentor"] == 1.0
    after = jax.device_get(state)
    assert int(after.segmentor.step) == 1  # The step counts, its update does not.
    for a, b in zip(jax.tree.leaves(before.segmentor.params),
                    jax.tree.leaves(after.segmentor.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(before.adversary.params),
                    jax.tree.leaves(after.adversary.params)):
        np.testing.assert_array_equal(a, b)


def test_cross_entropy_is_the_global_mean_over_valid_pixels(tiny_config):
    tiny_config.lambda_adv = 0.0
    mesh = sharding.make_mesh()
    segmentor, _ = state_lib.build_models(tiny_config)
    state = state_lib.create_train_state(tiny_config, mesh)
    params = jax.device_get(state.segmentor.params)
    batch = _batch(tiny_config)
    step = steps.make_train_step(tiny_config, mesh, segmentor, None)
    _, metrics = step(state, sharding.global_batch(batch, mesh))
    logits = segmentor.apply({"params": params}, batch["image"].astype(np.float32))
    logits = np.asarray(jax.image.resize(logits, (*batch["label"].shape, logits.shape[-1]),
                                         "bilinear", antialias=False))
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    valid = batch["label"] != 255
    expected = -log_probs[valid, batch["label"][valid]].mean()
    assert steps.host_scalars(metrics)["cross_entropy"] == pytest.approx(expected, rel=1e-4)


def test_lambda_ramps_linearly_over_warmup(tiny_config):
    import jax.numpy as jnp
    tiny_config.lambda_adv, tiny_config.lambda_adv_warmup_steps = 0.4, 10
    weights = [float(optim.adversarial_weight(tiny_config, jnp.asarray(s))) for s in (0, 5, 10, 50)]
    np.testing.assert_allclose(weights, [0.0, 0.2, 0.4, 0.4], rtol=1e-6)
    tiny_config.lambda_adv_warmup_steps = 0
    assert float(optim.adversarial_weight(tiny_config, jnp.asarray(0))) == pytest.approx(0.4)
