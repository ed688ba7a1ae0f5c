"""The best checkpoint by `config.best_checkpoint_metric`: kept besides the latest ones, named in
best_checkpoint.json, kept across a resume, and restored by `--step=best`."""

import json
import os

import ml_collections
import numpy as np
import pytest

from advseg_jax import checkpointing
from advseg_jax import evaluation
from advseg_jax import metrics
from advseg_jax import train
from advseg_jax import workdir_io
from advseg_jax.data import dataset_info


def _checkpoint_config(keep=1, metric="mean_iou"):
    config = ml_collections.ConfigDict()
    config.keep_checkpoints = keep
    config.best_checkpoint_metric = metric
    return config


def _scores(value):
    return {"mean_iou": value, "pixel_accuracy": 0.9, "mean_class_accuracy": 0.5}


def test_manager_keeps_the_recorded_best_step_besides_the_latest_after_reopening(tmp_path):
    workdir = str(tmp_path)
    config = _checkpoint_config(keep=1)
    manager = checkpointing.manager(workdir, config)
    for step in (1, 2):
        checkpointing.save(manager, step, {"w": np.full(3, step, np.float32)})
        manager.wait_until_finished()
        workdir_io.write_best_checkpoint(workdir, "mean_iou", step, 0.1 * step)
    for step in (3, 4):
        checkpointing.save(manager, step, {"w": np.full(3, step, np.float32)})
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [2, 4]  # Step 1 was dropped once 2 became the best.
    manager.close()
    reopened = checkpointing.manager(workdir, config)  # A resumed run's manager.
    checkpointing.save(reopened, 5, {"w": np.full(3, 5, np.float32)})
    reopened.wait_until_finished()
    assert sorted(reopened.all_steps()) == [2, 5]
    restored = checkpointing.restore(reopened, {"w": np.zeros(3, np.float32)}, 2)
    np.testing.assert_array_equal(restored["w"], [2, 2, 2])
    reopened.close()


def test_without_a_metric_only_the_latest_are_kept(tmp_path):
    manager = checkpointing.manager(str(tmp_path), _checkpoint_config(keep=2, metric=""))
    for step in range(1, 5):
        checkpointing.save(manager, step, {"w": np.zeros(2)})
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [3, 4]
    manager.close()


def test_tracker_counts_strict_improvements_and_resumes_from_the_workdir(tmp_path):
    workdir = str(tmp_path)
    tracker = checkpointing.BestTracker(_checkpoint_config(), workdir)
    assert tracker.improves(_scores(0.1))
    tracker.record(3, _scores(0.1))
    assert not tracker.improves(_scores(0.1))  # A tie keeps the earlier step.
    assert not tracker.improves(_scores(float("nan")))
    assert tracker.improves(_scores(0.2))
    assert workdir_io.read_best_checkpoint(workdir) == {"metric": "mean_iou", "step": 3,
                                                        "value": 0.1}
    resumed = checkpointing.BestTracker(_checkpoint_config(), workdir)
    assert not resumed.improves(_scores(0.05)) and resumed.improves(_scores(0.15))
    with pytest.raises(ValueError, match="best_checkpoint_metric='pixel_accuracy'.*'mean_iou'"):
        checkpointing.BestTracker(_checkpoint_config(metric="pixel_accuracy"), workdir)
    assert not checkpointing.BestTracker(_checkpoint_config(metric=""), workdir).improves(
        _scores(1.0))


def test_step_flag_values():
    assert checkpointing.parse_step(None) is None
    assert checkpointing.parse_step("latest") is None
    assert checkpointing.parse_step("12") == 12
    assert checkpointing.parse_step("best") == checkpointing.BEST
    with pytest.raises(ValueError, match="'last'.*'latest' or 'best'"):
        checkpointing.parse_step("last")


def _scripted_evaluation(monkeypatch, values):
    """Validation scores with mIoU from `values`, one per evaluation: no data is read."""
    values = iter(values)

    def fake(config, eval_step, params, builder, mesh, split, num_examples=None, num_images=0):
        del eval_step, params, builder, mesh, split, num_examples, num_images
        names = dataset_info.class_names(dataset_info.builder(config), config.num_classes)
        scores = metrics.segmentation_scores(np.eye(config.num_classes), names)
        scores.update(mean_iou=next(values), confusion=[])
        return scores, None

    monkeypatch.setattr(evaluation, "evaluate", fake)


def test_run_keeps_best_checkpoint_across_resume_and_step_best_names_it(
        tiny_config, tmp_path, monkeypatch):
    config = tiny_config
    config.lambda_adv = 0.0
    config.num_train_eval_examples = 0
    config.num_train_steps = 3
    config.eval_every_steps = 1
    config.checkpoint_every_steps = 100
    config.keep_checkpoints = 1
    workdir = str(tmp_path)
    _scripted_evaluation(monkeypatch, [0.2, 0.6, 0.4, 0.5])
    train.train_and_evaluate(config, workdir)  # Steps 1-3.
    assert workdir_io.read_best_checkpoint(workdir) == {"metric": "mean_iou", "step": 2,
                                                        "value": 0.6}
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3"]

    config.num_train_steps = 4
    train.train_and_evaluate(config, workdir)  # Resumed: step 4 does not beat step 2.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    # `--step=best` resolves to it (evaluate's restore of it: tests/test_evaluate.py).
    assert checkpointing.resolve_step(workdir, checkpointing.BEST) == 2
    os.remove(os.path.join(workdir, workdir_io.BEST_CHECKPOINT))
    with pytest.raises(FileNotFoundError, match="No best checkpoint recorded"):
        checkpointing.resolve_step(workdir, checkpointing.BEST)


def test_history_and_results_carry_json_nulls_not_nan(tmp_path):
    workdir_io.write_eval_results(str(tmp_path), {"per_class_iou": [0.5, float("nan")],
                                                  "value": np.float32(0.25)})
    with open(tmp_path / workdir_io.EVAL_RESULTS) as f:
        assert json.load(f) == {"per_class_iou": [0.5, None], "value": 0.25}
