"""train_and_evaluate end to end on a tiny config: outputs, resume, baseline."""

import json
import os

import numpy as np
import pytest

from advseg_jax import checkpointing
from advseg_jax import sharding
from advseg_jax import train
from advseg_jax import train_step as steps
from advseg_jax.data import class_info


def _per_class_iou_in_tensorboard(workdir, prefix, step):
    """{class name: IoU} of the `<prefix>_per_class_iou/<name>` scalars at `step` (None = NaN)."""
    import tensorflow as tf
    found = {}
    for name in os.listdir(workdir):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
                for value in event.summary.value:
                    if event.step == step and value.tag.startswith(f"{prefix}_per_class_iou/"):
                        number = float(tf.make_ndarray(value.tensor))
                        found[value.tag.split("/", 1)[1]] = None if np.isnan(number) else number
    return found


def _read_history(workdir):
    with open(os.path.join(workdir, "eval_history.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_run_writes_results_and_resumes_with_more_steps(tiny_config, tmp_path):
    workdir = str(tmp_path)
    record = train.train_and_evaluate(tiny_config, workdir)
    with open(os.path.join(workdir, "eval_results.json")) as f:
        results = json.load(f)
    assert results["step"] == 4
    assert set(results) == {"step", "mean_iou", "pixel_accuracy", "mean_class_accuracy",
                            "class_names", "per_class_iou"}
    assert results["class_names"] == list(class_info.DIGIT_SCENES_CLASSES)
    assert len(results["per_class_iou"]) == tiny_config.num_classes
    assert 0 <= results["mean_iou"] <= 1
    assert results["mean_iou"] == pytest.approx(record["mean_iou"])
    # The validation confusion matrix counts every non-void pixel of the 500 images once.
    assert np.sum(record["confusion"]) > 500 * 48 * 48 * 0.8
    assert {r["split"] for r in _read_history(workdir)} == {"validation", "train"}
    assert all(r["class_names"] == results["class_names"] for r in _read_history(workdir))
    logged = _per_class_iou_in_tensorboard(workdir, "eval", 4)  # float32 in TensorBoard.
    assert list(logged) == results["class_names"]
    np.testing.assert_allclose([np.nan if v is None else v for v in logged.values()],
                               [np.nan if v is None else v for v in results["per_class_iou"]],
                               rtol=1e-6)
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))

    tiny_config.num_train_steps = 6
    train.train_and_evaluate(tiny_config, workdir)
    history = _read_history(workdir)
    assert [r["step"] for r in history if r["split"] == "validation"] == [4, 6]
    checkpoints = checkpointing.manager(workdir, tiny_config)
    state = checkpointing.restore(checkpoints, steps.create_train_state(
        tiny_config, sharding.make_mesh()))
    assert int(state.step) == 6 and int(state.adversary.step) == 6


def test_baseline_run_has_no_adversary_in_checkpoint(tiny_config, tmp_path):
    tiny_config.lambda_adv = 0.0
    tiny_config.num_train_steps = 2
    tiny_config.num_train_eval_examples = 0
    train.train_and_evaluate(tiny_config, str(tmp_path))
    checkpoints = checkpointing.manager(str(tmp_path), tiny_config)
    state = checkpointing.restore(checkpoints, steps.create_train_state(
        tiny_config, sharding.make_mesh()))
    assert state.adversary is None and int(state.step) == 2
