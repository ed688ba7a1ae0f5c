"""Confusion matrix and scores against scikit-learn."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk

from advseg_jax import metrics
from advseg_jax import workdir_io
from advseg_jax.data.class_info import IGNORE_LABEL


def _random_maps(seed, n=3, size=17, classes=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, (n, size, size))
    labels[rng.random(labels.shape) < 0.2] = 255
    predictions = rng.integers(0, classes, (n, size, size))
    return labels, predictions


def test_confusion_matrix_matches_sklearn_and_skips_void():
    labels, predictions = _random_maps(0)
    ours = np.asarray(metrics.confusion_matrix(labels, predictions, 5, IGNORE_LABEL))
    keep = labels.ravel() != 255
    expected = sk.confusion_matrix(labels.ravel()[keep], predictions.ravel()[keep], labels=range(5))
    np.testing.assert_array_equal(ours, expected)


def test_confusion_matrix_weights_mask_out_padding():
    labels, predictions = _random_maps(1)
    weights = np.zeros(labels.shape, bool)
    weights[:, :8] = True
    ours = np.asarray(metrics.confusion_matrix(labels, predictions, 5, IGNORE_LABEL,
                                               weights=weights))
    keep = (labels != 255) & weights
    expected = sk.confusion_matrix(labels[keep], predictions[keep], labels=range(5))
    np.testing.assert_array_equal(ours, expected)


def test_scores_match_sklearn():
    labels, predictions = _random_maps(2)
    keep = labels != 255
    y, p = labels[keep], predictions[keep]
    scores = metrics.segmentation_scores(
        metrics.confusion_matrix(labels, predictions, 5, IGNORE_LABEL))
    np.testing.assert_allclose(scores["per_class_iou"], sk.jaccard_score(y, p, average=None))
    assert scores["mean_iou"] == pytest.approx(sk.jaccard_score(y, p, average="macro"))
    assert scores["pixel_accuracy"] == pytest.approx(sk.accuracy_score(y, p))
    assert scores["mean_class_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, p))


def test_class_with_zero_union_is_nan_left_out_and_null_in_json():
    confusion = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    scores = metrics.segmentation_scores(confusion)
    assert np.isnan(scores["per_class_iou"][2])
    assert scores["mean_iou"] == pytest.approx(np.mean([5 / 8, 3 / 6]))
    assert scores["mean_class_accuracy"] == pytest.approx(np.mean([5 / 6, 3 / 5]))
    assert json.loads(json.dumps(workdir_io.json_ready(scores)))["per_class_iou"][2] is None


def test_scores_are_ratios_of_sums_not_means_of_images():
    # Image A: 1 pixel of class 1 right; image B: 99 pixels of class 1, all wrong (as 0).
    labels = np.array([[1] + [0] * 99, [1] * 99 + [0]])
    predictions = np.array([[1] + [0] * 99, [0] * 100])
    confusion = metrics.confusion_matrix(labels, predictions, 2, IGNORE_LABEL)
    assert metrics.segmentation_scores(confusion)["per_class_accuracy"][1] == pytest.approx(1 / 100)


def test_metrics_does_not_import_the_data_package():
    """The data package imports every TFDS builder (and scipy); metrics needs none of it."""
    code = ("import sys, advseg_jax.metrics; "
            "print(sorted(m for m in sys.modules if 'advseg_jax.' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['advseg_jax.metrics']"
