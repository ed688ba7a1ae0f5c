"""train_and_evaluate end to end on a tiny config: outputs, resume, baseline."""

import json
import os

import numpy as np
import pytest

from advseg_jax import checkpointing
from advseg_jax import sharding
from advseg_jax import train
from advseg_jax import train_step as steps


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
                            "per_class_iou"}
    assert len(results["per_class_iou"]) == tiny_config.num_classes
    assert 0 <= results["mean_iou"] <= 1 and results["mean_iou"] == pytest.approx(record["mean_iou"])
    # The validation confusion matrix counts every non-void pixel of the 500 images once.
    assert np.sum(record["confusion"]) > 500 * 48 * 48 * 0.8
    assert {r["split"] for r in _read_history(workdir)} == {"validation", "train"}
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


def test_sliced_splits_whole_train_eval_and_epochs(tiny_config, tmp_path):
    """Tuning protocol: train on train[:40], score on train[40:60], train-eval over all 40."""
    import tensorflow_datasets as tfds

    from advseg_jax import evaluation
    from advseg_jax import input_pipeline
    tiny_config.train_split, tiny_config.eval_split = "train[:40]", "train[40:60]"
    tiny_config.num_train_eval_examples = -1
    tiny_config.num_train_steps = 2
    tiny_config.checkpoint_every_steps = tiny_config.eval_every_steps = 2
    tiny_config.input.image_scale = 0.5
    tiny_config.input.crop_size, tiny_config.input.eval_size = (24, 24), (24, 24)
    workdir = str(tmp_path)
    train.train_and_evaluate(tiny_config, workdir)
    records = {r["split"]: r for r in _read_history(workdir)}
    assert set(records) == {"train", "train[40:60]"}
    for record in records.values():  # 2 steps of 4 images over 40 training images.
        assert record["epoch"] == pytest.approx(2 * 4 / 40)

    # The whole sliced split, downscaled, once: every non-void pixel in the confusion matrix.
    builder = input_pipeline.get_builder(tiny_config)
    mesh = sharding.make_mesh()
    segmentor, _ = steps.build_models(tiny_config)
    state = steps.create_train_state(tiny_config, mesh)
    scores, _ = evaluation.evaluate(tiny_config, steps.make_eval_step(tiny_config, mesh, segmentor),
                                    state.segmentor.params, builder, mesh, "train[:40]")
    masks = [e["segmentation_mask"][1::2, 1::2] for e in
             tfds.as_numpy(builder.as_dataset(split="train[:40]"))]  # 48 → 24: exact 1/2.
    assert len(masks) == 40
    assert np.sum(scores["confusion"]) == sum(int(np.sum(m != 255)) for m in masks)
