"""experiments/choose_semi_threshold.py's rule and results.py's selection-curve figure."""

import json
import os

import pytest

from advseg_jax import workdir_io
from experiments import choose_semi_threshold
from experiments import results

CURVES = {"thresholds": [0.1, 0.3, 0.5, 0.7, 0.9],
          "coverage": [0.9, 0.6, 0.4, 0.2, 0.0],
          "precision": [0.5, 0.7, 0.82, 0.9, None]}


def test_rule_takes_the_largest_coverage_at_least_as_accurate_as_the_labeled_images():
    choice = choose_semi_threshold.choose(CURVES, target=0.8)
    assert choice == {"threshold": 0.5, "coverage": 0.4, "precision": 0.82}
    assert choose_semi_threshold.choose(CURVES, target=0.95) is None  # Null never qualifies.


def _history(run_dir, curves):
    os.makedirs(run_dir)
    workdir_io.append_eval_history(run_dir, [
        {"step": 900, "split": "test", "mean_iou": 0.3,
         "selection_curves": {"discriminator": dict(curves, precision=[0.6] * 4 + [None]),
                              "softmax": curves}},
        {"step": 900, "split": "train", "pixel_accuracy": 0.8}])


def test_choice_reads_the_train_record_at_the_step(tmp_path):
    _history(str(tmp_path / "run"), CURVES)
    records = workdir_io.read_eval_history(str(tmp_path / "run"))
    chosen = choose_semi_threshold.choose_for_run(records, 900, "test")
    assert chosen["target_pixel_accuracy"] == 0.8
    assert chosen["softmax"]["threshold"] == 0.5 and chosen["discriminator"] is None
    with pytest.raises(ValueError, match="step 450"):
        choose_semi_threshold.choose_for_run(records, 450, "test")


def test_selection_curve_figure_is_written(tmp_path):
    for variant in ("softmax_semi", "adversarial_semi_rechosen"):
        for seed in (0, 1):
            _history(str(tmp_path / variant / f"seed_{seed}"), CURVES)
    os.makedirs(tmp_path / "supervised" / "seed_0")  # A committed arm without curves: no panel.
    workdir_io.append_eval_history(str(tmp_path / "supervised" / "seed_0"),
                                   [{"step": 900, "split": "test", "mean_iou": 0.3}])
    path = str(tmp_path / "selection_curves.png")
    drawn = results.plot_selection_curves(str(tmp_path), [900], path)
    assert sorted(drawn) == ["adversarial_semi_rechosen", "softmax_semi"]
    assert os.path.getsize(path) > 10_000
    assert results.plot_selection_curves(str(tmp_path), [450], str(tmp_path / "none.png")) == []
    assert not os.path.exists(tmp_path / "none.png")
    averaged = results._selection_curves_at(  # pylint: disable=protected-access
        [str(tmp_path / "softmax_semi" / f"seed_{s}") for s in (0, 1)], 900)
    assert averaged["softmax"]["runs"] == 2
    assert list(averaged["softmax"]["precision"][:4]) == pytest.approx([0.5, 0.7, 0.82, 0.9])
    json.dumps(CURVES)  # Null precision is valid JSON.
