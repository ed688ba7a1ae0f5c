"""The embedded dataset: shapes, label semantics, determinism, disjoint splits."""

import numpy as np
import tensorflow_datasets as tfds
from sklearn import datasets

from advseg_jax.data import digit_scenes
from dataset_records import records


def _examples(data_dir, split, count):
    builder = tfds.builder("digit_scenes", data_dir=data_dir)
    return records(builder, split, count)


def test_splits_and_features(data_dir):
    builder = tfds.builder("digit_scenes", data_dir=data_dir)
    assert builder.info.splits["train"].num_examples == 4000
    assert builder.info.splits["validation"].num_examples == 500
    for example in _examples(data_dir, "validation", 20):
        assert example["image"].shape == (48, 48, 3) and example["image"].dtype == np.uint8
        assert example["segmentation_mask"].shape == (48, 48, 1)
        assert set(np.unique(example["segmentation_mask"])) <= set(range(11)) | {255}
        assert example["image/filename"].decode().startswith("validation_")


def test_digit_pixels_carry_the_digit_class_and_borders_are_void():
    digits = datasets.load_digits()
    rng = np.random.default_rng(0)
    image, mask = digit_scenes.make_scene(digits.images[:1] / 16.0, np.array([7]), rng)
    labels = set(np.unique(mask)) - {0, 255}
    assert labels == {8}  # Digit 7 is class 1 + 7.
    void = mask[..., 0] == 255
    digit = mask[..., 0] == 8
    assert void.any()
    # Void sits on the digit's faint stroke borders: inside the digit's bounding box, near it.
    rows, cols = np.nonzero(digit)
    box = np.zeros_like(digit)
    box[max(rows.min() - 3, 0):rows.max() + 4, max(cols.min() - 3, 0):cols.max() + 4] = True
    assert np.all(box[void])
    # Strokes are drawn darker or brighter than the ground, never the same colour.
    assert np.abs(image[digit].mean(0) - image[mask[..., 0] == 0].mean(0)).sum() > 50


def test_scenes_are_deterministic():
    digits = datasets.load_digits()
    a = digit_scenes.make_scene(digits.images / 16.0, digits.target, np.random.default_rng(3))
    b = digit_scenes.make_scene(digits.images / 16.0, digits.target, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_clutter_is_background():
    """Scenes without digits (empty pool index) still get clutter, all labelled background."""
    digits = datasets.load_digits()
    rng = np.random.default_rng(5)
    found_clutter_only_stroke = False
    for _ in range(10):
        image, mask = digit_scenes.make_scene(digits.images / 16.0, digits.target, rng)
        background = mask[..., 0] == 0
        ground = np.median(image[background], axis=0)
        strokes = np.abs(image.astype(int) - ground).sum(-1) > 150
        found_clutter_only_stroke |= bool((strokes & background).any())
    assert found_clutter_only_stroke
