"""`experiments/semi_analysis.py` on a synthetic sweep with known gains and curves."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from experiments import semi_analysis

FINAL_STEP = 40
THRESHOLDS = [0.01, 0.5, 0.7, 0.95]
# supervised, softmax_semi and adversarial_semi_rechosen test mIoU per seed at the final step.
TEST_MIOU = {"supervised": [0.30, 0.28, 0.33], "softmax_semi": [0.31, 0.30, 0.335],
             "adversarial_semi_rechosen": [0.29, 0.285, 0.33]}
SOFTMAX = {"thresholds": THRESHOLDS, "coverage": [1.0, 0.6, 0.3, 0.08],
           "precision": [0.5, 0.6, 0.7, 0.89]}
# 0.7 selects 0.2 % at 70 % right: softmax's T = 0.7 (30 %, 70 %) dominates it; T = 0.95 selects
# nothing; T = 0.5 (65 %, 62 %) is beyond anything softmax reaches at that coverage.
DISCRIMINATOR = {"thresholds": THRESHOLDS, "coverage": [0.9, 0.65, 0.002, 0.0],
                 "precision": [0.5, 0.62, 0.7, None]}


def write_run(sweep, arm, seed, miou, config, curves=None):
    run_dir = os.path.join(sweep, arm, f"seed_{seed}")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"num_train_steps": FINAL_STEP, "seed": seed, "eval_split": "test", **config}, f)
    final = {"step": FINAL_STEP, "epoch": 4, "split": "test", "mean_iou": miou,
             "pixel_accuracy": miou + 0.2, "mean_class_accuracy": miou + 0.1}
    with open(os.path.join(run_dir, "eval_results.json"), "w") as f:
        json.dump(final, f)
    with open(os.path.join(run_dir, "eval_history.jsonl"), "w") as f:
        for step in (20, FINAL_STEP):
            record = dict(final, step=step)
            if curves:
                record["selection_curves"] = curves
            f.write(json.dumps(record) + "\n")
            f.write(json.dumps(dict(record, split="train", mean_iou=2 * miou)) + "\n")


def synthetic_sweep(sweep):
    for seed in range(3):
        write_run(sweep, "supervised", seed, TEST_MIOU["supervised"][seed], {})
        write_run(sweep, "softmax_semi", seed, TEST_MIOU["softmax_semi"][seed],
                  {"semi_selection": "softmax", "semi_threshold": 0.95},
                  {"softmax": SOFTMAX})
        write_run(sweep, "adversarial_semi_rechosen", seed,
                  TEST_MIOU["adversarial_semi_rechosen"][seed],
                  {"semi_selection": "discriminator", "semi_threshold": 0.7},
                  {"softmax": SOFTMAX, "discriminator": DISCRIMINATOR})


def test_paired_gains_match_scipy(tmp_path):
    sweep = str(tmp_path)
    synthetic_sweep(sweep)
    reference = semi_analysis.finished_runs(sweep, "supervised")
    for arm in ("softmax_semi", "adversarial_semi_rechosen"):
        gain = semi_analysis.paired_gains(semi_analysis.finished_runs(sweep, arm), reference,
                                          "test", "mean_iou")
        arm_values, ref_values = np.array(TEST_MIOU[arm]), np.array(TEST_MIOU["supervised"])
        expected = stats.ttest_rel(arm_values, ref_values)
        np.testing.assert_allclose(gain["differences"], arm_values - ref_values)
        np.testing.assert_allclose(gain["p"], expected.pvalue)
        interval = expected.confidence_interval(0.95)
        np.testing.assert_allclose(gain["ci"], (interval.low, interval.high))
        np.testing.assert_allclose(gain["reference_std"], ref_values.std(ddof=1))
    # The labeled images' record ("train") is paired the same way.
    gain = semi_analysis.paired_gains(semi_analysis.finished_runs(sweep, "softmax_semi"),
                                      reference, "train", "mean_iou")
    np.testing.assert_allclose(gain["differences"], 2 * (np.array(TEST_MIOU["softmax_semi"])
                                                         - TEST_MIOU["supervised"]))


def test_unfinished_and_unpaired_seeds_are_left_out(tmp_path):
    sweep = str(tmp_path)
    synthetic_sweep(sweep)
    with open(os.path.join(sweep, "softmax_semi", "seed_2", "eval_results.json"), "w") as f:
        json.dump({"step": FINAL_STEP // 2, "mean_iou": 0.9}, f)  # Still running.
    write_run(sweep, "softmax_semi", 7, 0.9, {"semi_selection": "softmax",
                                              "semi_threshold": 0.95})  # No supervised seed 7.
    gain = semi_analysis.paired_gains(semi_analysis.finished_runs(sweep, "softmax_semi"),
                                      semi_analysis.finished_runs(sweep, "supervised"),
                                      "test", "mean_iou")
    assert gain["seeds"] == [0, 1]


def test_dominance_needs_more_coverage_and_more_precision():
    chosen = semi_analysis.point_at(DISCRIMINATOR, 0.7)
    assert chosen == {"threshold": 0.7, "coverage": 0.002, "precision": 0.7}
    # Softmax T = 0.7 (30 %, 70 %) and T = 0.95 (8 %, 89 %) dominate it, T = 0.5 (60 % right)
    # does not; the dominating point with the most coverage is reported.
    assert semi_analysis.dominating_point(chosen, SOFTMAX) == {
        "threshold": 0.7, "coverage": 0.3, "precision": 0.7}
    assert semi_analysis.dominating_point(semi_analysis.point_at(DISCRIMINATOR, 0.5),
                                          SOFTMAX) is None
    assert semi_analysis.dominating_point(semi_analysis.point_at(DISCRIMINATOR, 0.95),
                                          SOFTMAX) is None  # Selects nothing: no precision.
    with pytest.raises(ValueError, match=r"semi_threshold=0.8 .*selection_curve_thresholds"):
        semi_analysis.point_at(SOFTMAX, 0.8)


def test_report_counts_dominated_points_per_criterion(tmp_path):
    sweep = str(tmp_path)
    synthetic_sweep(sweep)
    rows = semi_analysis.selection_summary(
        semi_analysis.finished_runs(sweep, "adversarial_semi_rechosen"), [FINAL_STEP])
    by_criterion = {row["criterion"]: row["seeds"][0] for row in rows}
    # Discriminator points with a selection: 0.01 (90 %, 50 %: by softmax's 0.01, 100 %, 50 %),
    # 0.5 (not), 0.7 (by softmax 0.7). Softmax's 0.5 (60 %, 60 %) is dominated by the
    # discriminator's 0.5 (65 %, 62 %); its 0.01, 0.7 and 0.95 by nothing.
    assert (by_criterion["discriminator"]["dominated"], by_criterion["discriminator"]["points"]) \
        == (2, 3)
    assert (by_criterion["softmax"]["dominated"], by_criterion["softmax"]["points"]) == (1, 4)
    assert by_criterion["discriminator"]["chosen"]["coverage"] == 0.002
    assert "chosen" not in by_criterion["softmax"]  # Not this arm's criterion.
    text = semi_analysis.analyse(sweep, "supervised",
                                 ["softmax_semi", "adversarial_semi_rechosen"], [FINAL_STEP])
    differences = 100 * (np.array(TEST_MIOU["softmax_semi"]) - TEST_MIOU["supervised"])
    assert f"{differences.mean():+.2f} (" + ", ".join(f"{d:+.2f}" for d in differences) in text
    assert ("dominated by the other criterion at T = 0.7 (30.00 %, 70.0 % right)" in text)
    # The slice's accuracy over all pixels comes from a criterion that selects all of them.
    assert "| 40 | discriminator | 3 | — | T = 0.7: 0.2 ± 0.0 | 70.0 ± 0.0 |" in text
    assert "| 40 | softmax | 3 | 50.0 ± 0.0 | — | — |" in text


def test_a_missing_reference_is_refused_by_name(tmp_path):
    synthetic_sweep(str(tmp_path))
    with pytest.raises(ValueError, match="baseline has no finished runs: --reference"):
        semi_analysis.analyse(str(tmp_path), "baseline", ["softmax_semi"], [FINAL_STEP])
