"""metric_writer: scalars, PNG image strips and hparams written as events and read back."""

import io
import logging
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util

from advseg_jax import metric_writer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _events(logdir: str) -> event_accumulator.EventAccumulator:
    events = event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
    events.Reload()
    return events


def test_scalars_read_back_as_float32_by_step(tmp_path):
    writer = metric_writer.create_default_writer(str(tmp_path))
    writer.write_scalars(1, {"train/cross_entropy": 2.5, "train/skipped_nonfinite_steps": 0})
    writer.write_scalars(2, {"train/cross_entropy": np.float32(1.25),
                             "eval/mean_iou": jnp.asarray(0.1)})
    writer.write_scalars(3, {"eval_per_class_iou/sky": float("nan")})
    writer.close()
    events = _events(str(tmp_path))
    assert set(events.Tags()["tensors"]) == {
        "train/cross_entropy", "train/skipped_nonfinite_steps", "eval/mean_iou",
        "eval_per_class_iou/sky"}
    read = {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto))
                  for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]}
    assert [(s, float(v)) for s, v in read["train/cross_entropy"]] == [(1, 2.5), (2, 1.25)]
    assert read["train/skipped_nonfinite_steps"][0][1].dtype == np.float32
    assert read["eval/mean_iou"][0][1] == np.float32(0.1)
    assert np.isnan(read["eval_per_class_iou/sky"][0][1])
    assert events.SummaryMetadata("eval/mean_iou").plugin_data.plugin_name == "scalars"


def test_images_are_lossless_pngs_with_tensorboard_s_layout(tmp_path):
    rng = np.random.default_rng(0)
    strips = rng.integers(0, 256, (2, 5, 21, 3), dtype=np.uint8)
    writer = metric_writer.create_default_writer(str(tmp_path))
    writer.write_images(4, {"eval/image_truth_prediction": strips})
    writer.flush()
    (event,) = _events(str(tmp_path)).Tensors("eval/image_truth_prediction")
    width, height, *pngs = tensor_util.make_ndarray(event.tensor_proto)
    assert (event.step, int(width), int(height), len(pngs)) == (4, 21, 5, 2)
    for png, expected in zip(pngs, strips):
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"
            np.testing.assert_array_equal(np.asarray(image), expected)
    writer.close()


def test_hparams_reach_the_hparams_plugin(tmp_path):
    writer = metric_writer.create_default_writer(str(tmp_path))
    writer.write_hparams({"batch_size": 8, "dataset": "digit_scenes", "lambda_adv": 0.5,
                          "input.random_flip": True})
    writer.close()
    events = _events(str(tmp_path))
    content = events.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
    hparams = hparams_metadata.parse_session_start_info_plugin_data(content).hparams
    assert hparams["batch_size"].number_value == 8
    assert hparams["dataset"].string_value == "digit_scenes"
    assert hparams["lambda_adv"].number_value == 0.5
    assert hparams["input.random_flip"].bool_value is True


def test_just_logging_writes_no_file_but_logs_every_value(tmp_path, caplog):
    writer = metric_writer.create_default_writer(str(tmp_path), just_logging=True)
    with caplog.at_level(logging.INFO):
        writer.write_scalars(7, {"train/cross_entropy": 0.5, "eval/mean_iou": 0.25})
        writer.write_images(7, {"eval/strip": np.zeros((1, 2, 6, 3), np.uint8)})
    writer.close()
    assert list(tmp_path.iterdir()) == []
    assert "[7] eval/mean_iou=0.25, train/cross_entropy=0.5" in caplog.text
    assert "(1, 2, 6, 3)" in caplog.text


@pytest.mark.parametrize("images", [np.zeros((1, 4, 4, 3), np.float32),
                                    np.zeros((1, 4, 4, 2), np.uint8)])
def test_image_that_is_not_uint8_rgb_is_refused_by_name(tmp_path, images):
    writer = metric_writer.create_default_writer(str(tmp_path))
    with pytest.raises(ValueError, match="eval/strip.*uint8"):
        writer.write_images(1, {"eval/strip": images})
    writer.close()


_WRITE_WITH_TENSORFLOW_INSTALLED = """
import sys
from advseg_jax import metric_writer
writer = metric_writer.MetricWriter(sys.argv[1])
writer.write_scalars(1, {"loss": 0.5})
writer.close()
print("tensorflow" in sys.modules)
"""


def test_writing_events_never_imports_tensorflow_even_where_it_is_installed(tmp_path):
    """TensorBoard's writer would import TensorFlow for its file I/O where it is installed
    (7.5 s a training process); the marker module keeps it on TensorBoard's own stub."""
    pytest.importorskip("tensorflow")  # Installed here: the case this guards.
    done = subprocess.run([sys.executable, "-c", _WRITE_WITH_TENSORFLOW_INSTALLED,
                           str(tmp_path)], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.stdout.split() == ["False"], done.stdout + done.stderr
    events = _events(str(tmp_path))
    [event] = events.Tensors("loss")
    assert (event.step, float(tensor_util.make_ndarray(event.tensor_proto))) == (1, 0.5)
