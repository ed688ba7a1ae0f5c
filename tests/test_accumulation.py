"""Accumulated steps compute the whole batch's loss and gradients: for K = 1, 2, 8 microbatches,
on 1 and 2 devices, baseline and adversarial, with dropout, and for the Stanford models."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advseg_jax import accumulation
from accumulation_helpers import one_step_gradients, relative_error, sgd_one, stanford_pair

TOLERANCE = 1e-4


@pytest.mark.parametrize("unroll", [True, False])  # CPU's unrolled loop; the accelerators' scan.
@pytest.mark.parametrize("count", [1, 2, 4])
def test_sum_value_and_grad_is_the_whole_batch_gradient_against_numpy(unroll, count):
    """loss = Σ_rows (x_r · w)² / R, normalised by the whole batch: grad = 2 Xᵀ X w / R."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    w = rng.normal(size=(5,)).astype(np.float32)

    def loss_fn(params, part):
        values = part["x"] @ params
        return jnp.sum(values ** 2) / 8, {"rows": jnp.float32(part["x"].shape[0])}

    (loss, aux), grad = jax.jit(functools.partial(
        accumulation.sum_value_and_grad, loss_fn, count=count, unroll=unroll))(w, {"x": x})
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert float(loss) == pytest.approx(np.sum((x64 @ w64) ** 2) / 8, rel=1e-5)
    np.testing.assert_allclose(grad, 2 * x64.T @ (x64 @ w64) / 8, rtol=1e-5)
    assert float(aux["rows"]) == 8  # Aux summed over the microbatches.
    mapped = accumulation.map_microbatches(lambda part: part["x"] * 2, {"x": x}, count,
                                           unroll=unroll)
    np.testing.assert_array_equal(mapped, 2 * x)  # Outputs back in row order.


def test_row_keys_depend_on_the_global_row_only():
    rng = jax.random.key(3)
    whole = accumulation.row_keys(rng, 4, jnp.int32(0))
    second_half = accumulation.row_keys(rng, 2, jnp.int32(2))  # Device 1 of 2, say.
    np.testing.assert_array_equal(whole[2:], second_half)
    assert len({tuple(np.asarray(k)) for k in whole}) == 4


@pytest.mark.parametrize("unroll", [True, False])
def test_stanford_models_accumulated_match_one_call(unroll):
    """The paper's Stanford segmentor and adversary (narrow): loss and every parameter gradient
    of two microbatches against one call on the whole batch."""
    pair = stanford_pair()
    segmentor, adversary, images, small = (pair[k] for k in ("segmentor", "adversary", "images",
                                                             "small"))
    seg_params, adv_params, rng = pair["seg_params"], pair["adv_params"], pair["rng"]
    weights = jnp.asarray(rng.uniform(size=(4, 8, 12, 5)), jnp.float32)  # Per row and pixel.

    def loss(params, part):
        logits = segmentor.apply({"params": params[0]}, part["image"])
        scores = adversary.apply({"params": params[1]}, part["small"], jax.nn.softmax(logits))
        value = (jnp.sum(jnp.sin(logits) * part["weights"]) / logits.size * logits.shape[0] / 4
                 + jnp.sum(scores) / 4)
        return value, {}

    rows = {"image": images, "small": small, "weights": weights}
    plain = jax.jit(lambda p: accumulation.sum_value_and_grad(loss, p, rows, 1, unroll=True))
    accumulated = jax.jit(lambda p: accumulation.sum_value_and_grad(loss, p, rows, 2,
                                                                    unroll=unroll))
    (value, _), grads = plain((seg_params, adv_params))
    (value_k, _), grads_k = accumulated((seg_params, adv_params))
    assert relative_error(value_k, value) < TOLERANCE
    for a, b in zip(jax.tree.leaves(grads_k), jax.tree.leaves(grads)):
        assert relative_error(a, b) < TOLERANCE
        assert float(jnp.max(jnp.abs(b))) > 0  # Every gradient is exercised.


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    size = tuple(config.input.crop_size)
    labels = rng.integers(0, config.num_classes, (config.batch_size, *size)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.3] = 255  # Uneven void counts across rows.
    labels[: config.batch_size // 2, :6] = 255
    images = rng.integers(0, 256, (config.batch_size, *size, 3)).astype(np.uint8)
    return {"image": images, "label": labels}


def _gradients(config, devices: int, microbatch_size: int):
    return one_step_gradients(config, devices, microbatch_size, _batch(config))


def _assert_same(result, reference):
    (grads, metrics), (want, want_metrics) = result, reference
    for key, value in want_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=TOLERANCE, abs=1e-7), key
    for name in ("segmentor", "adversary"):
        if want[name] is None:
            assert grads[name] is None
            continue
        for a, b in zip(jax.tree.leaves(grads[name]), jax.tree.leaves(want[name])):
            assert relative_error(a, b) < TOLERANCE, name
            assert np.max(np.abs(b)) > 0, name  # Every gradient is exercised.


# (devices, microbatch sizes): batch 8 is 8 rows on one device (K = 1, 2, 8), 4 on each of two.
_SPLITS = [(1, (8, 4, 1)), (2, (4, 2))]


@pytest.mark.parametrize("lambda_adv", [0.0, 0.5], ids=["baseline", "adversarial"])
def test_accumulated_step_has_the_whole_batch_loss_and_gradients(tiny_config, lambda_adv):
    config = sgd_one(tiny_config)
    config.batch_size, config.input.crop_size, config.lambda_adv = 8, (32, 32), lambda_adv
    reference = _gradients(config, 1, 8)
    for devices, sizes in _SPLITS:
        for size in sizes:
            if (devices, size) != (1, 8):
                _assert_same(_gradients(config, devices, size), reference)


def test_with_dropout_accumulation_and_devices_change_nothing(tiny_config):
    """Dropout masks are drawn per example from (seed, step, global row): K and the device count
    change no mask, so the loss and both gradients stay those of the whole batch."""
    config = sgd_one(tiny_config)
    config.segmentor.name, config.segmentor.dropout_rate = "tiny_dilated_test", 0.5
    config.batch_size, config.input.crop_size, config.lambda_adv = 4, (16, 16), 0.5
    reference = _gradients(config, 1, 4)
    for devices, size in ((1, 1), (2, 1)):  # K = 4 on one device, K = 2 on each of two.
        _assert_same(_gradients(config, devices, size), reference)
    config.segmentor.dropout_rate = 0.0  # The masks were real: without them the loss differs.
    no_dropout = _gradients(config, 1, 4)[1]
    assert no_dropout["segmentor_loss"] != pytest.approx(reference[1]["segmentor_loss"],
                                                         rel=1e-3)
