"""Semi-supervised adversarial learning (Hung et al. 2018): the fcn discriminator, per-pixel
losses against numpy, L_semi's selection, the unlabeled stream, and the three-loss step."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from advseg_jax import benchmark
from advseg_jax import config_checks
from advseg_jax import input_pipeline
from advseg_jax import losses
from advseg_jax import memory_fit
from advseg_jax import optim
from advseg_jax import sharding
from advseg_jax import train
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from advseg_jax.models import fcn_discriminator

import accumulation_helpers


def _numpy_bce(logits, target):
    probability = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return -(target * np.log(probability) + (1 - target) * np.log(1 - probability))


@pytest.fixture
def semi_config(tiny_config):
    """digit_scenes with half of a slice labeled, the fcn at the labels' 48x48 resolution."""
    tiny_config.train_split = "train[:32]"
    tiny_config.unlabeled_split = "train[32:64]"
    tiny_config.adversary.name = "fcn"
    tiny_config.adversary.encoding = "basic"
    tiny_config.adversary.label_resolution = "input"
    tiny_config.adversary.fcn_width_divisor = 16  # Hung et al.'s five convolutions, narrow.
    tiny_config.lambda_adv = 0.01
    tiny_config.lambda_adv_unlabeled = 0.001
    tiny_config.lambda_semi = 0.1
    tiny_config.semi_threshold = 0.2
    return tiny_config


# The discriminator.

def test_fcn_has_hung_et_al_parameter_count_and_a_map_at_the_input_resolution():
    model = fcn_discriminator.FCNDiscriminator()
    for classes, expected in ((21, 2_783_169), (8, 16 * 64 * 8 + 2_761_665)):
        maps = jnp.zeros((2, 64, 80, classes))
        variables = jax.eval_shape(model.init, jax.random.key(0), maps[..., :3], maps)
        count = sum(leaf.size for leaf in jax.tree.leaves(variables))
        assert count == expected, classes
    # Hand formula for Hung et al.'s five 4x4 convolutions (bias included).
    widths = [21, 64, 128, 256, 512, 1]
    assert sum(16 * a * b + b for a, b in zip(widths, widths[1:])) == 2_783_169
    maps = jnp.ones((2, 64, 80, 8))
    variables = model.init(jax.random.key(0), maps[..., :3], maps)
    kernels = {name: value["kernel"].shape for name, value in variables["params"].items()}
    assert kernels == {"conv1": (4, 4, 8, 64), "conv2": (4, 4, 64, 128),
                       "conv3": (4, 4, 128, 256), "conv4": (4, 4, 256, 512),
                       "conv5": (4, 4, 512, 1)}
    assert model.apply(variables, maps[..., :3], maps).shape == (2, 64, 80)


def test_fcn_pixels_depend_on_their_neighbourhood_only():
    """A per-pixel verdict: changing one corner of the map leaves the far corner's logit."""
    model = fcn_discriminator.FCNDiscriminator()
    maps = jnp.zeros((1, 256, 256, 4))
    variables = model.init(jax.random.key(0), maps[..., :3], maps)
    grad = jax.grad(lambda m: model.apply(variables, None, m)[0, 10, 10])(maps)
    influence = np.abs(np.asarray(grad)).sum(-1)[0]
    assert influence[:32, :32].sum() > 0 and influence[160:, 160:].sum() == 0


# Per-pixel losses against numpy, with void pixels.

def test_masked_binary_cross_entropy_matches_numpy_over_non_void_pixels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
    weights = rng.random((3, 5, 7)) > 0.4
    for target in (0.0, 1.0):
        total, count = losses.masked_binary_cross_entropy(jnp.asarray(logits), target,
                                                          jnp.asarray(weights))
        assert float(count) == weights.sum()
        np.testing.assert_allclose(float(total) / float(count),
                                   _numpy_bce(logits, target)[weights].mean(), rtol=1e-5)
    # Void pixels with extreme logits change nothing.
    poisoned = np.where(weights, logits, 1e4).astype(np.float32)
    total_poisoned, _ = losses.masked_binary_cross_entropy(jnp.asarray(poisoned), 1.0,
                                                           jnp.asarray(weights))
    total, _ = losses.masked_binary_cross_entropy(jnp.asarray(logits), 1.0, jnp.asarray(weights))
    assert float(total_poisoned) == pytest.approx(float(total))


def test_segmentor_adversarial_term_per_pixel_both_forms():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 4)).astype(np.float32)
    weights = rng.random((2, 4, 4)) > 0.5
    total, count = losses.masked_segmentor_adversarial_loss(jnp.asarray(logits),
                                                            jnp.asarray(weights),
                                                            "non_saturating")
    np.testing.assert_allclose(float(total / count), _numpy_bce(logits, 1.0)[weights].mean(),
                               rtol=1e-5)
    total, count = losses.masked_segmentor_adversarial_loss(jnp.asarray(logits),
                                                            jnp.asarray(weights), "saturating")
    np.testing.assert_allclose(float(total / count), -_numpy_bce(logits, 0.0)[weights].mean(),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="adversarial_loss"):
        losses.masked_segmentor_adversarial_loss(jnp.asarray(logits), jnp.asarray(weights), "x")


def test_self_training_mask_selects_exactly_the_pixels_above_the_threshold():
    threshold = 0.2
    confidence = np.array([[[0.05, 0.19, 0.21], [0.5, 0.99, 0.2001]]])
    logits = np.log(confidence / (1 - confidence)).astype(np.float32)
    valid = np.array([[[True, True, True], [True, False, True]]])
    selected = np.asarray(losses.self_training_mask(jnp.asarray(logits), jnp.asarray(valid),
                                                    threshold))
    np.testing.assert_array_equal(selected, [[[False, False, True], [True, False, True]]])


def test_self_training_cross_entropy_is_against_the_own_argmax_on_selected_pixels():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    selected = rng.random((2, 3, 4)) > 0.5
    total, count, targets = losses.self_training_cross_entropy(jnp.asarray(logits),
                                                               jnp.asarray(selected))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, logits.argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(np.asarray(targets), logits.argmax(-1))
    assert float(count) == selected.sum()
    np.testing.assert_allclose(float(total), expected[selected].sum(), rtol=1e-5)
    # No gradient through the targets: the gradient is softmax - one_hot(argmax) on selected.
    grad = jax.grad(lambda x: losses.self_training_cross_entropy(x, jnp.asarray(selected))[0])(
        jnp.asarray(logits))
    softmax = np.exp(log_probs)
    one_hot = np.eye(5)[logits.argmax(-1)]
    np.testing.assert_allclose(np.asarray(grad), (softmax - one_hot) * selected[..., None],
                               atol=1e-6)


def test_semi_weights_start_at_semi_start_step(semi_config):
    semi_config.semi_start_step = 10
    before = optim.semi_weights(semi_config, 9)
    after = optim.semi_weights(semi_config, 10)
    assert float(before["lambda_semi"]) == 0.0
    assert float(after["lambda_semi"]) == pytest.approx(0.1)
    assert float(before["lambda_adv_unlabeled"]) == pytest.approx(0.001)


# The unlabeled stream.

def _take(iterator, count):
    return list(itertools.islice(iterator, count))


def test_unlabeled_stream_resumes_exactly_and_has_its_own_order(semi_config):
    builder = tfds.builder(semi_config.dataset, data_dir=semi_config.data_dir)
    fresh = _take(input_pipeline.unlabeled_iterator(semi_config, builder, 0), 5)
    resumed = _take(input_pipeline.unlabeled_iterator(semi_config, builder, 3), 2)
    for a, b in zip(fresh[3:], resumed):
        assert set(a) == {"unlabeled_image", "unlabeled_valid", "unlabeled_label"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert fresh[0]["unlabeled_image"].shape == (semi_config.batch_size, 48, 48, 3)
    # Another seed, another order.
    semi_config.seed = 1
    other = _take(input_pipeline.unlabeled_iterator(semi_config, builder, 0), 1)
    assert not np.array_equal(other[0]["unlabeled_image"], fresh[0]["unlabeled_image"])


def test_unlabeled_valid_marks_crop_padding_apart_from_the_splits_void(semi_config):
    semi_config.input.min_scale = semi_config.input.max_scale = 0.5  # 24x24 in a 48x48 crop.
    builder = tfds.builder(semi_config.dataset, data_dir=semi_config.data_dir)
    batch = _take(input_pipeline.unlabeled_iterator(semi_config, builder, 0), 1)[0]
    assert (batch["unlabeled_valid"].sum(axis=(1, 2)) == 24 * 24).all()
    assert (batch["unlabeled_label"][~batch["unlabeled_valid"]] == 255).all()
    # digit_scenes' own void (digit outlines) stays image: valid, hidden label 255.
    inside = batch["unlabeled_label"][batch["unlabeled_valid"]]
    assert 255 in inside and set(np.unique(inside)) <= set(range(semi_config.num_classes)) | {255}


def test_example_ids_follow_the_slices(semi_config):
    builder = tfds.builder(semi_config.dataset, data_dir=semi_config.data_dir)
    whole = input_pipeline.example_ids(builder, "train[:64]")
    assert input_pipeline.example_ids(builder, "train[:32]") == whole[:32]
    assert input_pipeline.example_ids(builder, "train[32:64]") == whole[32:]
    assert len(set(whole)) == 64


# The step.

def _semi_batch(config, seed=0):
    rng = np.random.default_rng(seed)
    size = tuple(config.input.crop_size)
    rows = config.batch_size
    u_rows = config.unlabeled_batch_size or rows
    labels = rng.integers(0, config.num_classes, (rows, *size)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.3] = 255
    labels[: rows // 2, :10] = 255  # Uneven void counts over the two devices.
    valid = rng.random((u_rows, *size)) > 0.2
    valid[u_rows // 2:, :, :20] = False  # Uneven crop padding over the two devices.
    hidden = rng.integers(0, config.num_classes, (u_rows, *size)).astype(np.int32)
    return {"image": rng.integers(0, 256, (rows, *size, 3)).astype(np.uint8), "label": labels,
            "unlabeled_image": rng.integers(0, 256, (u_rows, *size, 3)).astype(np.uint8),
            "unlabeled_valid": valid, "unlabeled_label": np.where(valid, hidden, 255)}


def _run_steps(config, mesh, batches):
    segmentor, adversary = state_lib.build_models(config)
    state = state_lib.create_train_state(config, mesh)
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    history = []
    for batch in batches:
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        history.append(steps.host_scalars(metrics))
    return jax.device_get(state), history


def test_semi_step_is_the_same_on_one_and_two_devices(semi_config):
    batches = [_semi_batch(semi_config, i) for i in range(2)]
    one, history_one = _run_steps(semi_config, sharding.make_mesh(jax.devices()[:1]), batches)
    two, history_two = _run_steps(semi_config, sharding.make_mesh(jax.devices()), batches)
    for metrics_one, metrics_two in zip(history_one, history_two):
        assert set(metrics_one) >= {"cross_entropy", "adversarial_term",
                                    "adversarial_term_unlabeled", "self_training_loss",
                                    "semi_selected_fraction", "semi_selected_accuracy"}
        for key in metrics_one:
            assert metrics_one[key] == pytest.approx(metrics_two[key], rel=1e-4, abs=1e-6), key
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)
    metrics = history_one[-1]
    assert metrics["segmentor_loss"] == pytest.approx(
        metrics["cross_entropy"] + 0.01 * metrics["adversarial_term"]
        + 0.001 * metrics["adversarial_term_unlabeled"] + 0.1 * metrics["self_training_loss"],
        rel=1e-5)
    assert 0 < metrics["semi_selected_fraction"] <= 1


def test_hidden_labels_reach_no_update_and_score_the_selection(semi_config):
    """The unlabeled split's masks feed the selection diagnostic only, which is checked here
    against the initial segmentor's argmax (T_semi = 0 selects every image pixel)."""
    semi_config.semi_threshold = 0.0
    mesh = sharding.make_mesh()
    batch = _semi_batch(semi_config)
    hidden_void = dict(batch, unlabeled_label=np.full_like(batch["unlabeled_label"], 255))
    a, history_a = _run_steps(semi_config, mesh, [batch])
    b, history_b = _run_steps(semi_config, mesh, [hidden_void])
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert history_a[0]["segmentor_loss"] == history_b[0]["segmentor_loss"]
    assert history_b[0]["semi_selected_accuracy"] == -1.0  # No labels: no accuracy.

    segmentor, _ = state_lib.build_models(semi_config)
    params = jax.device_get(state_lib.create_train_state(semi_config, mesh).segmentor.params)
    logits = segmentor.apply({"params": params}, batch["unlabeled_image"].astype(np.float32))
    logits = jax.image.resize(logits, (*batch["unlabeled_label"].shape, logits.shape[-1]),
                              "bilinear", antialias=False)
    predicted = np.asarray(logits).argmax(-1)
    scored = batch["unlabeled_valid"] & (batch["unlabeled_label"] != 255)
    expected = (predicted == batch["unlabeled_label"])[scored].mean()
    assert history_a[0]["semi_selected_fraction"] == pytest.approx(1.0)
    assert history_a[0]["semi_selected_accuracy"] == pytest.approx(expected, rel=1e-5)


def test_self_training_waits_for_semi_start_step(semi_config):
    mesh = sharding.make_mesh()
    semi_config.semi_start_step = 5
    _, history = _run_steps(semi_config, mesh, [_semi_batch(semi_config)])
    metrics = history[0]
    assert metrics["self_training_loss"] > 0  # Computed and logged, weighted 0.
    assert metrics["segmentor_loss"] == pytest.approx(
        metrics["cross_entropy"] + 0.01 * metrics["adversarial_term"]
        + 0.001 * metrics["adversarial_term_unlabeled"], rel=1e-5)


def test_image_level_adversary_takes_unlabeled_images_too(semi_config):
    semi_config.adversary.name = "stanford"
    semi_config.adversary.label_resolution = "output"
    semi_config.lambda_semi = 0.0
    _, history = _run_steps(semi_config, sharding.make_mesh(), [_semi_batch(semi_config)])
    assert np.isfinite(history[0]["adversarial_term_unlabeled"])
    assert "self_training_loss" not in history[0]


# Config checks.

@pytest.mark.parametrize("overrides, message", [
    ({"unlabeled_split": "", "lambda_semi": 0.1}, "needs unlabeled images"),
    ({"lambda_semi": 0.0, "lambda_adv_unlabeled": 0.0}, "no loss term uses it"),
    ({"adversary.name": "stanford"}, "one verdict per image"),
    ({"unlabeled_split": "train[:32]"}, "labeled train_split itself"),
    ({"semi_threshold": 1.5}, "semi_threshold"),
    ({"lambda_semi": -1.0}, "lambda_semi"),
    ({"adversary.label_resolution": "full"}, "label_resolution"),
])
def test_semi_config_errors_name_the_key(semi_config, overrides, message):
    for key, value in overrides.items():
        node = semi_config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    with pytest.raises(config_checks.ConfigError, match=message):
        config_checks.validate_config(semi_config)


def test_unknown_unlabeled_split_is_refused_before_training(semi_config):
    semi_config.unlabeled_split = "unlabelled"
    builder = tfds.builder(semi_config.dataset, data_dir=semi_config.data_dir)
    with pytest.raises(config_checks.ConfigError, match="is not a split of"):
        config_checks.check_dataset(semi_config, builder)


def test_no_unlabeled_split_and_no_lambdas_builds_no_discriminator(semi_config):
    semi_config.unlabeled_split = ""
    semi_config.lambda_adv = semi_config.lambda_adv_unlabeled = semi_config.lambda_semi = 0.0
    assert state_lib.build_models(semi_config)[1] is None


def test_fcn_without_unlabeled_stream_accumulates_exactly(semi_config):
    """Per-pixel losses are normalised over the whole global batch, so K microbatches sum to it."""
    semi_config.unlabeled_split = ""
    semi_config.lambda_adv_unlabeled = semi_config.lambda_semi = 0.0
    batch = {k: v for k, v in _semi_batch(semi_config).items() if not k.startswith("unlabeled")}
    mesh = sharding.make_mesh()
    results = {}
    for size in (2, 1):  # 4 rows over 2 devices: K = 1 and K = 2 per device.
        semi_config.microbatch_size = size
        results[size] = _run_steps(semi_config, mesh, [batch])
    (one, [m_one]), (two, [m_two]) = results[2], results[1]
    for key in ("cross_entropy", "adversarial_term", "adversary_loss", "segmentor_loss"):
        assert m_one[key] == pytest.approx(m_two[key], rel=1e-4), key
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_semi_step_accumulates_to_the_whole_batch(semi_config):
    """4 labeled + 8 unlabeled rows cut into K = 4 microbatches (1 device) and K = 2 per device
    (2 devices), with dropout (each row's masks drawn from its global index): every loss term,
    the selection's diagnostics and both models' gradients are the whole batch's.

    T_semi = 0 selects every image pixel of the unlabeled rows, whose counts differ from row
    to row (crop padding), so a selection paired with the wrong rows, or normalised by one
    microbatch's count rather than the batch's, would change the loss. (This discriminator's
    confidences lie within 1e-3 of each other: a threshold among them would flip pixels on
    float noise.) T_semi = 0.99, above all of them, must select nothing.
    """
    config = accumulation_helpers.sgd_one(semi_config)
    config.segmentor.name, config.segmentor.dropout_rate = "tiny_dilated_test", 0.5
    config.unlabeled_batch_size, config.semi_start_step, config.semi_threshold = 8, 0, 0.0
    config.input.crop_size = (32, 32)  # The fcn's smallest input.
    batch = _semi_batch(config)
    want_grads, want = accumulation_helpers.one_step_gradients(config, 1, 4, batch)
    assert want["semi_selected_fraction"] == 1.0 and want["self_training_loss"] > 0
    for devices, size in ((1, 1), (2, 1)):
        grads, metrics = accumulation_helpers.one_step_gradients(config, devices, size, batch)
        assert set(metrics) == set(want)
        for key, value in want.items():
            assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-7), (devices, size, key)
        for name in ("segmentor", "adversary"):
            for a, b in zip(jax.tree.leaves(grads[name]), jax.tree.leaves(want_grads[name])):
                assert accumulation_helpers.relative_error(a, b) < 1e-4, (devices, size, name)
                assert np.max(np.abs(b)) > 0, name
    config.semi_threshold = 0.99
    _, metrics = accumulation_helpers.one_step_gradients(config, 1, 2, batch)
    assert metrics["semi_selected_fraction"] == 0.0 and metrics["self_training_loss"] == 0.0
    assert metrics["cross_entropy"] == pytest.approx(want["cross_entropy"], rel=1e-6)


def test_microbatches_must_split_the_unlabeled_batch_too(semi_config):
    """On 2 devices, K = 2 microbatches of a device's 2 labeled rows cannot split its 1
    unlabeled row; the automatic choice skips such sizes."""
    semi_config.unlabeled_batch_size, semi_config.microbatch_size = 2, 1
    with pytest.raises(config_checks.ConfigError,
                       match="microbatch_size=1 cuts the 2 labeled images per device into 2 "):
        config_checks.validate_config(semi_config)
    assert memory_fit._microbatch_sizes(4, {4, 2}) == [4, 2]
    assert memory_fit._microbatch_sizes(4, {4, 8}) == [4, 2, 1]


def test_interval_accuracy_weights_steps_by_their_scored_pixels():
    """A step that selected nothing reports -1; the interval's accuracy must not average it."""
    steps_logged = [
        {"semi_selected_accuracy": -1.0, "semi_selected_scored_pixels": 0.0, "x": 1.0},
        {"semi_selected_accuracy": 0.5, "semi_selected_scored_pixels": 30.0, "x": 2.0},
        {"semi_selected_accuracy": 1.0, "semi_selected_scored_pixels": 10.0, "x": 3.0}]
    means = train.interval_means(steps_logged)
    assert means["semi_selected_accuracy"] == pytest.approx((0.5 * 30 + 10) / 40)
    assert means["x"] == pytest.approx(2.0)
    assert train.interval_means(steps_logged[:1])["semi_selected_accuracy"] == -1.0


def test_benchmark_times_the_semi_step_against_a_supervised_baseline(semi_config):
    """A semi-supervised config's benchmark batch has its unlabeled rows (all image pixels),
    and its baseline has neither them nor a discriminator."""
    semi_config.unlabeled_batch_size = 8
    variants = benchmark.benchmark_variants(semi_config)
    assert state_lib.build_models(variants["baseline"])[1] is None
    assert variants["baseline"].unlabeled_split == ""
    assert variants["adversarial"].lambda_adv == semi_config.lambda_adv
    assert variants["adversarial"].lambda_semi == semi_config.lambda_semi
    mesh = sharding.make_mesh()
    batch = benchmark._synthetic_batch(variants["adversarial"], mesh)
    crop = tuple(semi_config.input.crop_size)
    assert batch["image"].shape == (4, *crop, 3)
    assert batch["unlabeled_image"].shape == (8, *crop, 3)
    assert bool(np.all(np.asarray(batch["unlabeled_valid"])))
    assert set(benchmark._synthetic_batch(variants["baseline"], mesh)) == {"image", "label"}
