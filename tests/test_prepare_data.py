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


def _tiny_folder(root):
    """Two 8x10 PNG pairs with values 0 (void), 1, 2; classes 'land,sea' in a file."""
    import numpy as np
    from PIL import Image
    for split, stem, mask in (("train", "a", np.array([[1] * 10] * 6 + [[0] * 10] * 2)),
                              ("val", "b", np.array([[2] * 10] * 8))):
        for kind in ("images", "masks"):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        image = np.zeros((8, 10, 3), np.uint8)
        Image.fromarray(image).save(root / "images" / split / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / split / f"{stem}.png")
    (root / "classes.txt").write_text("land\nsea\n")


def _prepare_folder_cli(root, data_dir, *extra):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
            [sys.executable, "-m", "advseg_jax.prepare_data", "--config=folder",
             f"--config.data_dir={data_dir}", f"--config.folder.root={root}",
             f"--config.folder.class_names={root / 'classes.txt'}", *extra],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cli_with_folder_config_builds_and_summarises(tmp_path):
    _tiny_folder(tmp_path / "mine")
    result = _prepare_folder_cli(tmp_path / "mine", tmp_path / "tfds",
                                 "--config.folder.void_label=0")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "2 classes: land, sea; void: mask value 0 (stored as 255)" in out
    assert "split train: 1 examples, image sizes 8x10 to 8x10" in out
    assert "void: 20 pixels (25.0 %)" in out  # 2 of 8 rows of the training mask.
    assert "0 land" in out and "60 pixels ( 75.0 %)" in out
    assert "1 sea" in out and "absent" in out  # No sea pixel in the training split.
    assert "input.eval_size must be at least (16, 16)" in out  # ~2x2 at scale 0.25, up to 16.


def test_cli_with_folder_config_names_a_bad_mask(tmp_path):
    _tiny_folder(tmp_path / "mine")
    result = _prepare_folder_cli(tmp_path / "mine", tmp_path / "tfds")  # void 255: 0 is land.
    assert result.returncode == 1
    assert "masks/val/b.png has value(s) 2 (80 pixels)" in result.stderr
    assert not (tmp_path / "tfds" / "segmentation_folder").exists()
