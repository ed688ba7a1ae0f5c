"""Issue 32: self-training by the segmentor's softmax (no discriminator), and the
precision-coverage curves of both criteria, checked against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advseg_jax import config_checks
from advseg_jax import losses
from advseg_jax import selection_curves
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train
from advseg_jax import workdir_io

import accumulation_helpers
from test_semi_supervised import _run_steps, _semi_batch, semi_config  # noqa: F401 (fixture)


@pytest.fixture
def softmax_config(semi_config):  # noqa: F811 (the imported fixture, by name)
    """Self-training on the segmentor's softmax alone: no adversarial term anywhere."""
    semi_config.semi_selection = "softmax"
    semi_config.lambda_adv = semi_config.lambda_adv_unlabeled = 0.0
    semi_config.semi_threshold = 0.1  # The untrained tiny segmentor's softmax is flat.
    return semi_config


def _numpy_curves(confidence, predictions, labels, valid, thresholds):
    coverage, precision = [], []
    for t in thresholds:
        selected = (confidence > t) & valid
        scored = selected & (labels != 255)
        coverage.append(selected.sum() / valid.sum())
        precision.append((predictions[scored] == labels[scored]).mean() if scored.any()
                         else None)
    return coverage, precision


def test_threshold_counts_give_the_numpy_curves_on_a_hand_made_map():
    confidence = np.array([[[0.05, 0.15, 0.35], [0.55, 0.75, 0.95]],
                           [[0.25, 0.45, 0.65], [0.85, 0.99, 0.10]]], np.float32)
    predictions = np.array([[[0, 1, 2], [0, 1, 2]], [[1, 1, 1], [2, 2, 2]]])
    labels = np.array([[[0, 0, 2], [255, 1, 1]], [[1, 255, 0], [2, 2, 255]]])
    valid = np.ones_like(labels, bool)
    valid[1, 1, 2] = False  # Crop padding: counts nowhere.
    thresholds = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.999])
    counts = selection_curves.threshold_counts(jnp.asarray(confidence), jnp.asarray(predictions),
                                               jnp.asarray(labels), jnp.asarray(valid),
                                               jnp.asarray(thresholds, jnp.float32))
    curves = selection_curves.curves_from_counts(thresholds, np.asarray(counts))
    coverage, precision = _numpy_curves(confidence, predictions, labels, valid, thresholds)
    np.testing.assert_allclose(curves["coverage"], coverage)
    assert curves["precision"][-1] is None  # 0.999 selects nothing: null, not 0 or NaN.
    assert precision[-1] is None
    np.testing.assert_allclose(curves["precision"][:-1], precision[:-1])
    # By hand at 0.5: 0.55 (void), 0.75 (right), 0.95 (wrong), 0.65 (wrong), 0.85 (right),
    # 0.99 (right) of 11 image pixels (0.10's is padding).
    assert curves["coverage"][5] == pytest.approx(6 / 11)
    assert curves["precision"][5] == pytest.approx(3 / 5)


def test_curves_step_sums_both_criteria_over_devices(semi_config):  # noqa: F811
    """The jitted step on 2 devices against numpy from the models applied directly."""
    semi_config.selection_curve_thresholds = tuple(np.linspace(0.05, 0.95, 10))
    mesh = sharding.make_mesh()
    segmentor, adversary = state_lib.build_models(semi_config)
    state = jax.device_get(state_lib.create_train_state(semi_config, mesh))
    rng = np.random.default_rng(1)
    size = tuple(semi_config.input.crop_size)
    labels = rng.integers(0, semi_config.num_classes, (4, *size)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = 255
    pixel_mask = rng.random((4, *size)) > 0.1
    images = rng.integers(0, 256, (4, *size, 3)).astype(np.uint8)
    step = selection_curves.make_curves_step(semi_config, mesh, segmentor, adversary)
    counts = step(state, sharding.global_batch(
        {"image": images, "label": labels, "pixel_mask": pixel_mask}, mesh))
    assert set(counts) == {"discriminator", "softmax"}

    logits = segmentor.apply({"params": state.segmentor.params}, images.astype(np.float32))
    logits = jax.image.resize(logits, (*labels.shape, logits.shape[-1]), "bilinear",
                              antialias=False)
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
    verdict = adversary.apply({"params": state.adversary.params}, images / 255.0, probabilities)
    predictions = probabilities.argmax(-1)
    thresholds = semi_config.selection_curve_thresholds
    for name, confidence in (("softmax", probabilities.max(-1)),
                             ("discriminator", 1 / (1 + np.exp(-np.asarray(verdict))))):
        curves = selection_curves.curves_from_counts(thresholds,
                                                     np.asarray(counts[name].addressable_data(0)))
        coverage, precision = _numpy_curves(confidence, predictions, labels, pixel_mask,
                                            thresholds)
        np.testing.assert_allclose(curves["coverage"], coverage, atol=1e-3)
        for got, want in zip(curves["precision"], precision):
            assert (got is None) == (want is None), name
            if want is not None:
                assert got == pytest.approx(want, abs=2e-2), name


def test_softmax_mask_selects_above_the_threshold_and_passes_no_gradient():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 6, 4)) * 3, jnp.float32)
    valid = jnp.asarray(rng.random((2, 5, 6)) > 0.2)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    selected = losses.softmax_self_training_mask(logits, valid, 0.7)
    np.testing.assert_array_equal(selected, (probabilities.max(-1) > 0.7) & np.asarray(valid))
    assert 0 < int(selected.sum()) < int(valid.sum())

    def semi_loss(x):
        mask = losses.softmax_self_training_mask(x, valid, 0.7)
        return losses.self_training_cross_entropy(x, mask)[0]

    gradient = np.asarray(jax.grad(semi_loss)(logits))
    # Targets and mask are constants: d CE(x, argmax x) / dx = softmax(x) - onehot(argmax x).
    one_hot = np.eye(4)[probabilities.argmax(-1)]
    want = np.where(np.asarray(selected)[..., None], probabilities - one_hot, 0.0)
    np.testing.assert_allclose(gradient, want, atol=1e-6)


def test_softmax_self_training_builds_no_discriminator(softmax_config):
    segmentor, adversary = state_lib.build_models(softmax_config)
    assert adversary is None
    mesh = sharding.make_mesh()
    assert state_lib.create_train_state(softmax_config, mesh).adversary is None
    _, [metrics] = _run_steps(softmax_config, mesh, [_semi_batch(softmax_config)])
    assert not any(key.startswith("adversar") for key in metrics)
    assert 0 < metrics["semi_selected_fraction"] and metrics["self_training_loss"] > 0
    assert metrics["segmentor_loss"] == pytest.approx(
        metrics["cross_entropy"] + 0.1 * metrics["self_training_loss"], rel=1e-5)
    del segmentor


def test_softmax_selection_accumulates_to_the_whole_batch(softmax_config):
    """K microbatches must select the pixels K = 1 selects (chosen before the accumulation)."""
    config = accumulation_helpers.sgd_one(softmax_config)
    config.unlabeled_batch_size, config.semi_start_step = 8, 0
    batch = _semi_batch(config)
    want_grads, want = accumulation_helpers.one_step_gradients(config, 1, 4, batch)
    assert 0 < want["semi_selected_fraction"] <= 1 and want["self_training_loss"] > 0
    for devices, size in ((1, 1), (2, 1)):
        grads, metrics = accumulation_helpers.one_step_gradients(config, devices, size, batch)
        for key, value in want.items():
            assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-7), (devices, size, key)
        for a, b in zip(jax.tree.leaves(grads["segmentor"]),
                        jax.tree.leaves(want_grads["segmentor"])):
            assert accumulation_helpers.relative_error(a, b) < 1e-4, (devices, size)


@pytest.mark.parametrize("overrides,message", [
    ({"semi_selection": "entropy"}, "semi_selection"),
    ({"semi_selection": "softmax", "semi_threshold": 0.0}, "semi_threshold"),
    ({"semi_selection": "discriminator", "adversary.name": "largefov"}, "adversary.name"),
    ({"semi_selection": "softmax", "unlabeled_split": ""}, "unlabeled_split"),
    ({"selection_curves_split": "train[32:40]", "selection_curve_thresholds": (0.5,)},
     "selection_curve_thresholds"),
    ({"selection_curves_split": "train[:32]"}, "selection_curves_split"),
])
def test_selection_config_errors_name_the_key(softmax_config, overrides, message):
    for key, value in overrides.items():
        if key == "adversary.name":
            softmax_config.adversary.name = value
            softmax_config.lambda_adv = 0.01
        else:
            softmax_config[key] = value
    with pytest.raises(config_checks.ConfigError, match=message):
        config_checks.validate_config(softmax_config)


def test_every_evaluation_writes_selection_curves(softmax_config, tmp_path):
    softmax_config.selection_curves_split = "train[32:40]"
    softmax_config.num_train_steps = softmax_config.eval_every_steps = 2
    softmax_config.checkpoint_every_steps = softmax_config.log_every_steps = 2
    train.train_and_evaluate(softmax_config, str(tmp_path))
    [record] = [r for r in workdir_io.read_eval_history(str(tmp_path))
                if r["split"] == softmax_config.eval_split]
    curves = record["selection_curves"]
    assert list(curves) == ["softmax"]  # No discriminator, no discriminator curve.
    softmax = curves["softmax"]
    assert softmax["thresholds"] == list(softmax_config.selection_curve_thresholds)
    assert np.all(np.diff(softmax["coverage"]) <= 0)  # A higher threshold selects a subset.
    assert softmax["coverage"][0] == pytest.approx(1.0)  # Max softmax > 0.01 everywhere.
