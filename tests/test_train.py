"""train_and_evaluate end to end on a tiny config: outputs, resume, baseline."""

import json
import logging
import os

import jax
import numpy as np
import pytest

from advseg_jax import checkpointing
from advseg_jax import config_checks
from advseg_jax import device_metrics
from advseg_jax import sharding
from advseg_jax import train
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from advseg_jax.data import class_info
from dataset_records import records


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
    state = checkpointing.restore(checkpoints, state_lib.create_train_state(
        tiny_config, sharding.make_mesh()))
    assert int(state.step) == 6 and int(state.adversary.step) == 6


def test_baseline_run_has_no_adversary_in_checkpoint(tiny_config, tmp_path):
    tiny_config.lambda_adv = 0.0
    tiny_config.num_train_steps = 2
    tiny_config.num_train_eval_examples = 0
    train.train_and_evaluate(tiny_config, str(tmp_path))
    checkpoints = checkpointing.manager(str(tmp_path), tiny_config)
    state = checkpointing.restore(checkpoints, state_lib.create_train_state(
        tiny_config, sharding.make_mesh()))
    assert state.adversary is None and int(state.step) == 2


def test_sliced_splits_whole_train_eval_and_epochs(tiny_config, tmp_path):
    """Tuning protocol: train on train[:40], score on train[40:60], train-eval over all 40."""
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
    by_split = {r["split"]: r for r in _read_history(workdir)}
    assert set(by_split) == {"train", "train[40:60]"}
    for record in by_split.values():  # 2 steps of 4 images over 40 training images.
        assert record["epoch"] == pytest.approx(2 * 4 / 40)

    # The whole sliced split, downscaled, once: every non-void pixel in the confusion matrix.
    builder = input_pipeline.get_builder(tiny_config)
    mesh = sharding.make_mesh()
    segmentor, _ = state_lib.build_models(tiny_config)
    state = state_lib.create_train_state(tiny_config, mesh)
    scores, _ = evaluation.evaluate(tiny_config, steps.make_eval_step(tiny_config, mesh, segmentor),
                                    state.segmentor.params, builder, mesh, "train[:40]")
    masks = [e["segmentation_mask"][1::2, 1::2] for e in
             records(builder, "train[:40]")]  # 48 → 24: exact 1/2.
    assert len(masks) == 40
    assert np.sum(scores["confusion"]) == sum(int(np.sum(m != 255)) for m in masks)


def test_a_failing_eval_keeps_the_step_s_checkpoint_and_is_redone_on_resume(
        tiny_config, tmp_path, monkeypatch):
    workdir = str(tmp_path)
    tiny_config.num_train_eval_examples = 0

    def broken_eval(*args, **kwargs):
        raise RuntimeError("eval failed")

    with monkeypatch.context() as patch:
        patch.setattr(train, "_evaluate_and_write", broken_eval)
        with pytest.raises(RuntimeError, match="eval failed"):
            train.train_and_evaluate(tiny_config, workdir)
    # Step 4 is both a checkpoint and an eval step: checkpointed before the eval failed.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    assert not os.path.exists(os.path.join(workdir, "lock"))  # Released on the crash.
    record = train.train_and_evaluate(tiny_config, workdir)  # Nothing left to train: eval only.
    assert record["step"] == 4
    assert [(r["step"], r["split"]) for r in _read_history(workdir)] == [(4, "validation")]


def _config_json(workdir):
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)


def test_resume_refuses_another_model_warns_on_changed_keys_and_survives_damage(
        tiny_config, tmp_path, caplog):
    workdir = str(tmp_path)
    tiny_config.lambda_adv = 0.0  # Baseline: the quickest resumable run.
    tiny_config.num_train_eval_examples = 0
    tiny_config.num_train_steps = 2
    train.train_and_evaluate(tiny_config, workdir)

    wider = tiny_config.copy_and_resolve_references()
    wider.segmentor.width = 16
    with pytest.raises(checkpointing.RestoreError) as error:
        train.train_and_evaluate(wider, workdir)
    message = str(error.value)
    assert len(message.splitlines()) <= 20, message
    assert "segmentor/params/" in message and "segmentor.width: 16 vs 8" in message
    assert _config_json(workdir)["segmentor"]["width"] == 8  # Not overwritten by the refusal.

    tiny_config.segmentor.learning_rate = 1e-4
    tiny_config.num_train_steps = 3
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(tiny_config, workdir)
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "segmentor.learning_rate: 0.0001 vs 0.003" in warnings
    assert "num_train_steps: 3 vs 2" in warnings
    assert _config_json(workdir)["segmentor"]["learning_rate"] == 1e-4  # After the restore.

    # A damaged latest checkpoint: set aside, the run resumes from the one before.
    for path in (tmp_path / "checkpoints" / "3").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(tiny_config, workdir)
    assert "Checkpoint step 3 is damaged" in caplog.text
    assert (tmp_path / checkpointing.DAMAGED_DIR / "3").is_dir()
    state = checkpointing.restore(checkpointing.manager(workdir, tiny_config),
                                  state_lib.create_train_state(tiny_config, sharding.make_mesh()))
    assert int(state.step) == 3


@pytest.mark.parametrize("key, value, message", [
    ("input.eval_size", (32, 32), r"input.eval_size=\(32, 32\) is smaller than the largest "
                                  r"image of 'digit_scenes' split 'validation' \(48x48"),
    ("num_classes", 3, r"num_classes=3 but dataset 'digit_scenes' has 11 classes"),
    # Downscaled evaluation (image_scale 0.5 of 48x48): 24x24 images against 16x16.
    ("input.eval_size", (16, 16), r"\(24x24, HxW, after input.image_scale=0.5\)"),
    ("input.crop_size", (2, 2), r"input.crop_size=\(2, 2\).*multiple of 4"),
])
def test_bad_sizes_and_class_counts_are_refused_before_anything_is_written(
        tiny_config, tmp_path, key, value, message):
    section, _, name = key.rpartition(".")
    if value == (16, 16):
        tiny_config.input.image_scale = 0.5
        tiny_config.input.crop_size = (24, 24)
    (tiny_config[section] if section else tiny_config)[name] = value
    with pytest.raises(config_checks.ConfigError, match=message):
        train.train_and_evaluate(tiny_config, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == []


def test_skipping_stops_when_too_many_steps_are_skipped(tiny_config):
    tiny_config.skip_nonfinite_steps = True
    bad = {"nonfinite_segmentor": 1.0, "cross_entropy": float("nan")}
    assert train._check_finite(5, bad, tiny_config, 0, steps_run=5) == 1  # A lone spike.
    assert train._check_finite(30, bad, tiny_config, 2, steps_run=30) == 3  # 3 of 30 = 0.1.
    with pytest.raises(train.NonFiniteError, match="4 of the 30 steps .* max_nonfinite_fraction"):
        train._check_finite(30, bad, tiny_config, 3, steps_run=30)
    tiny_config.max_nonfinite_fraction = 1.0
    assert train._check_finite(30, bad, tiny_config, 29, steps_run=30) == 30


def test_only_sync_points_read_from_the_device_and_input_wait_is_logged(
        tiny_config, tmp_path, monkeypatch):
    """Steps 1, 2, 4 and 5 of 6 (log every 3, checkpoint and evaluate at 6) read nothing from
    the device: a read outside the loop's sync points raises (transfer_checks)."""
    import tensorflow as tf
    import transfer_checks
    tiny_config.num_train_steps = 6
    tiny_config.log_every_steps = 3
    tiny_config.checkpoint_every_steps = tiny_config.eval_every_steps = 6
    monkeypatch.setattr(train, "_BETWEEN_SYNCS_TRANSFER_GUARD", "disallow_explicit")
    settled = []
    real_settle = train._settle
    monkeypatch.setattr(train, "_settle", lambda pending, *args: (
        settled.append(len(pending)), real_settle(pending, *args))[1])
    with transfer_checks.reads_refused_by_the_guard(monkeypatch):
        with jax.transfer_guard_device_to_host("allow"):  # Set-up may read; the loop may not.
            train.train_and_evaluate(tiny_config, str(tmp_path))
    assert [count for count in settled if count] == [3, 3]  # Two reads, three steps each.
    # The guard bites: a read in a step outside the sync points fails the run.
    real_add = device_metrics.StepMetrics.add
    monkeypatch.setattr(device_metrics.StepMetrics, "add", lambda self, step, metrics: (
        float(metrics["segmentor_loss"]), real_add(self, step, metrics)))
    tiny_config.num_train_steps = 8
    with transfer_checks.reads_refused_by_the_guard(monkeypatch):
        with jax.transfer_guard_device_to_host("allow"):
            with pytest.raises(transfer_checks.DeviceReadError, match=r"float32\[\]"):
                train.train_and_evaluate(tiny_config, str(tmp_path / "reading"))
    fractions = {}
    for name in os.listdir(tmp_path):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(str(tmp_path / name)):
                for value in event.summary.value:
                    if value.tag == "train/input_wait_fraction":
                        fractions[event.step] = float(tf.make_ndarray(value.tensor))
    assert sorted(fractions) == [3, 6]
    assert all(0 < fraction < 1 for fraction in fractions.values()), fractions
