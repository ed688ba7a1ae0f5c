"""`experiments/calibration.py`: its sums and scores against sklearn and a per-pixel loop."""

import json

import numpy as np
import pytest
from scipy import special
from sklearn import metrics as sk_metrics

from advseg_jax.data import class_info
from experiments import calibration

NUM_CLASSES, BINS = 5, 15


def _batch(seed, sharpness):
    rng = np.random.default_rng(seed)
    logits = sharpness * rng.standard_normal((3, 6, 7, NUM_CLASSES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (3, 6, 7)).astype(np.int32)
    labels[0, :2] = class_info.IGNORE_LABEL  # Void pixels count nowhere.
    weights = np.ones((3, 6, 7), bool)
    weights[2, :, 4:] = False  # Padding counts nowhere either.
    return logits, labels, weights


def _reference(logits, labels, weights):
    """The scores, pixel by pixel, from the probabilities alone (float64)."""
    log_p = special.log_softmax(logits.astype(np.float64), axis=-1)
    keep = weights & (labels != class_info.IGNORE_LABEL)
    p, y = np.exp(log_p[keep]), labels[keep]
    confidence, predicted = p.max(-1), p.argmax(-1)
    right = predicted == y
    ece = 0.0
    for b in range(BINS):  # Guo et al.'s bins (b/B, (b+1)/B], the first closed at 0.
        low, high = b / BINS, (b + 1) / BINS
        inside = (confidence > low) & (confidence <= high) if b else confidence <= high
        if inside.any():
            ece += inside.sum() / len(y) * abs(right[inside].mean() - confidence[inside].mean())
    return {"pixels": len(y), "pixel_accuracy": right.mean(),
            "nll": -np.take_along_axis(log_p[keep], y[:, None], -1).mean(), "ece": ece,
            "confidence_correct": confidence[right].mean(),
            "confidence_wrong": confidence[~right].mean(),
            "wrong_confident_fraction": (confidence[~right] >= 0.99).mean()}


@pytest.mark.parametrize("sharpness", [1.0, 12.0])  # Soft maps; maps sharp enough to be sure.
def test_scores_match_a_per_pixel_reference(sharpness):
    logits, labels, weights = _batch(0, sharpness)
    got = calibration.scores_from_sums(
        calibration.calibration_sums(logits, labels, weights, BINS))
    expected = _reference(logits, labels, weights)
    assert got["pixels"] == expected["pixels"] == 3 * 6 * 7 - 2 * 7 - 6 * 3
    assert got["bins"] == BINS
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=1e-6, err_msg=key)
    if sharpness == 1:  # sklearn clips probabilities at 1e-15, harmless for soft maps only.
        keep = weights & (labels != class_info.IGNORE_LABEL)
        p = special.softmax(logits.astype(np.float64), -1)[keep]
        np.testing.assert_allclose(
            got["nll"], sk_metrics.log_loss(labels[keep], p, labels=range(NUM_CLASSES)),
            rtol=2e-5)
    else:  # The case the tool is for: wrong and sure of it.
        assert got["wrong_confident_fraction"] > 0.3 and got["nll"] > 2


def test_sums_over_batches_equal_one_batch():
    logits, labels, weights = _batch(1, 3.0)
    whole = calibration.calibration_sums(logits, labels, weights, BINS)
    parts = [calibration.calibration_sums(logits[i:i + 1], labels[i:i + 1], weights[i:i + 1],
                                          BINS) for i in range(3)]
    added = {key: sum(np.asarray(p[key], np.float64) for p in parts) for key in whole}
    for key in whole:
        np.testing.assert_allclose(added[key], whole[key], rtol=1e-5, err_msg=key)
    assert calibration.scores_from_sums(added) == pytest.approx(
        calibration.scores_from_sums(whole), rel=1e-5)


def test_a_split_without_labelled_pixels_is_refused():
    logits, labels, weights = _batch(2, 1.0)
    sums = calibration.calibration_sums(logits, labels, np.zeros_like(weights), BINS)
    with pytest.raises(ValueError, match="No labelled pixel"):
        calibration.scores_from_sums(sums)


def test_summary_groups_runs_by_lambda(tmp_path):
    rows = {"a": (0.0, 0.5, 1.0), "b": (0.0, 0.7, 3.0), "c": (0.5, 0.6, 2.0)}
    paths = []
    for name, (lambda_adv, accuracy, nll) in rows.items():
        paths.append(str(tmp_path / f"{name}.json"))
        with open(paths[-1], "w") as f:
            json.dump({"lambda_adv": lambda_adv, "pixel_accuracy": accuracy, "nll": nll,
                       "ece": 0.1, "confidence_correct": 0.9, "confidence_wrong": None,
                       "wrong_confident_fraction": 0.25}, f)
    table = calibration.summary_table(paths).splitlines()
    assert table[2].startswith("| 0 | 2 | 60.00 ± 14.14 | 2.00 ± 1.41 | 10.00 ± 0.00 |")
    assert table[3].startswith("| 0.5 | 1 | 60.00 | 2.00 | 10.00 |")
    assert table[2].split(" | ")[6] == "—"  # No run of λ 0 had a wrong pixel to measure.
    with pytest.raises(ValueError, match="matched no file"):
        calibration.summary_table([])
