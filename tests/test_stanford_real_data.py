"""The real-data path of the Stanford experiment: prepare fold 0 from ../shared/data, train a few
steps of configs/stanford_cpu.py, evaluate on both splits. Skipped where the data is absent."""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from advseg_jax import train
import tf_augment as augment
from dataset_records import records

MANUAL_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "stanford_background"
pytestmark = pytest.mark.skipif(
    not (MANUAL_DIR / "iccv09Data.tar.gz").exists(),
    reason=f"real Stanford Background archive not found at {MANUAL_DIR} (../shared/data is "
           "only beside the repository on the project's own machines)")


@pytest.fixture(scope="module")
def real_data_dir(stanford_real_data_dir):
    return stanford_real_data_dir  # Prepared once per test process (conftest).


def test_fold0_holds_the_published_dataset(real_data_dir):
    builder = tfds.builder("stanford_background/fold0", data_dir=real_data_dir)
    assert builder.info.splits["train"].num_examples == 572
    assert builder.info.splits["test"].num_examples == 143
    for example in records(builder, "test"):
        image, mask = example["image"], example["segmentation_mask"]
        assert image.shape[:2] == mask.shape[:2] and max(image.shape[:2]) <= 320
        assert set(np.unique(mask)) <= set(range(8)) | {255}


def test_cpu_protocol_trains_and_scores_both_splits(real_data_dir, tmp_path):
    from configs import stanford_cpu
    config = stanford_cpu.get_config()
    config.data_dir = real_data_dir
    config.batch_size, config.eval_batch_size = 2, 16
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
    config.num_train_eval_examples = 16  # The protocol scores all 572; 16 keeps the test short.
    workdir = str(tmp_path)
    record = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "eval_history.jsonl")) as f:
        history = {r["split"]: r for r in map(json.loads, f)}
    assert set(history) == {"test", "train"}
    assert history["test"]["epoch"] == pytest.approx(2 * 2 / 572)
    assert all(0 <= history[s]["mean_class_accuracy"] <= 1 for s in history)

    # Every non-void pixel of the 143 downscaled test images is scored exactly once.
    builder = tfds.builder(config.dataset, data_dir=real_data_dir)
    expected = 0
    for example in records(builder, "test"):
        _, mask = augment.rescale(tf.constant(example["image"]),
                                  tf.constant(example["segmentation_mask"]),
                                  config.input.image_scale)
        expected += int(np.sum(np.asarray(mask) != 255))
    assert np.sum(record["confusion"]) == expected


def test_semi_supervised_protocol_trains_three_losses_on_the_real_images(real_data_dir,
                                                                         tmp_path):
    """A few steps of configs/stanford_semi.py: 72 labeled images, the other 500 unlabeled."""
    from advseg_jax import workdir_io
    from configs import stanford_semi
    config = stanford_semi.get_config()
    config.data_dir = real_data_dir
    config.batch_size = config.unlabeled_batch_size = 2
    config.eval_batch_size = 16
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
    config.log_every_steps = 2
    config.semi_start_step = 1
    config.num_train_eval_examples = 16
    workdir = str(tmp_path)
    train.train_and_evaluate(config, workdir)
    splits = workdir_io.read_data_splits(workdir)["splits"]
    assert splits["train[:72]"]["count"] == 72 and splits["train[72:]"]["count"] == 500
    assert not set(splits["train[:72]"]["ids"]) & set(splits["train[72:]"]["ids"])
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(workdir)
    events.Reload()
    logged = set(events.Tags()["tensors"]) | set(events.Tags().get("scalars", []))
    for tag in ("train/self_training_loss", "train/adversarial_term_unlabeled",
                "train/semi_selected_fraction", "train/semi_selected_accuracy"):
        assert tag in logged, tag
