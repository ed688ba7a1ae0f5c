"""prepare_data: builds a dataset from a manual dir, in-process and through the real CLI."""

import os
import pathlib
import subprocess
import sys

import tensorflow_datasets as tfds

from advseg_jax import prepare_data
from advseg_jax.data.dummy_data import make_dummy_data as dummy

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_prepare_builds_the_requested_config(tmp_path):
    builder = prepare_data.prepare("stanford_background/fold2", str(tmp_path),
                                   str(dummy.DUMMY_DIR / "stanford_background"))
    assert builder.info.full_name == "stanford_background/fold2/1.0.0"
    reloaded = tfds.builder("stanford_background/fold2", data_dir=str(tmp_path))
    assert reloaded.info.splits["train"].num_examples == 8
    assert reloaded.info.splits["test"].num_examples == 2


def test_cli_builds_voc_and_reports_splits(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
            [sys.executable, "-m", "advseg_jax.prepare_data", "--dataset=voc2012_segmentation",
             f"--data_dir={tmp_path}",
             f"--manual_dir={dummy.DUMMY_DIR / 'voc2012_segmentation'}"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("voc2012_segmentation/1.0.0 train: 3 examples",
                 "voc2012_segmentation/1.0.0 validation: 2 examples",
                 "voc2012_segmentation/1.0.0 train_aug: 5 examples"):
        assert line in result.stdout
    assert (tmp_path / "voc2012_segmentation" / "1.0.0" / "dataset_info.json").exists()


def test_cli_requires_dataset(tmp_path):
    result = subprocess.run(
            [sys.executable, "-m", "advseg_jax.prepare_data", f"--data_dir={tmp_path}"],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--dataset" in result.stderr
