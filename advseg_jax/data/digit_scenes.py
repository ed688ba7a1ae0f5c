"""`digit_scenes`: segmentation scenes of real handwritten digits, built offline in seconds.

Each 48x48 scene holds one to three digits from scikit-learn's `load_digits` (UCI handwritten
digits, 8x8, 16 grey levels), upscaled 2x or 3x, on a background cluttered with *fragments* of
other digits drawn in the same colour. A stroke pixel therefore looks locally like any other
stroke — of any digit, or of clutter — and only the shape of the whole connected figure says
whether it is background or which digit it is. That is the situation in which the paper argues
an adversary, which sees the whole label map, can add what per-pixel losses miss.

Labels: 0 = background, 1 + d = digit d. Anti-aliased stroke borders of digits (neither clearly
in nor out) are void (255), as in VOC's object borders. Train and validation scenes use disjoint
digit samples (the first 1400 of `load_digits` for train, the remaining 397 for validation).
"""

from typing import Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

from advseg_jax.data import builder_io
from advseg_jax.data import class_info

IMAGE_SIZE = 48
_NUM_TRAIN_DIGITS = 1400
_SPLIT_SIZES = {"train": 4000, "validation": 500}
_SPLIT_SEEDS = {"train": 1, "validation": 2}
_STROKE, _VOID_LOW = 0.5, 0.25  # Fractions of full intensity: class above, void in between.


def _upscale(digit: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upscaling of an 8x8 digit (values in [0, 1]) so strokes get soft borders."""
    size = digit.shape[0] * factor
    coords = (np.arange(size) + 0.5) / factor - 0.5
    coords = np.clip(coords, 0, digit.shape[0] - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, digit.shape[0] - 1)
    frac = coords - low
    rows = digit[low] * (1 - frac)[:, None] + digit[high] * frac[:, None]
    return rows[:, low] * (1 - frac)[None, :] + rows[:, high] * frac[None, :]


def _place(occupied: np.ndarray, size: int, rng: np.random.Generator,
           tries: int = 50) -> Tuple[int, int] | None:
    for _ in range(tries):
        top, left = rng.integers(0, IMAGE_SIZE - size + 1, size=2)
        if not occupied[top:top + size, left:left + size].any():
            return int(top), int(left)
    return None


def make_scene(digits: np.ndarray, targets: np.ndarray,
               rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: (uint8 image [48, 48, 3], uint8 mask [48, 48, 1]) from a pool of digits."""
    intensity = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    occupied = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    for _ in range(rng.integers(1, 4)):
        index = rng.integers(len(digits))
        glyph = _upscale(digits[index], int(rng.choice([2, 3])))
        spot = _place(occupied, glyph.shape[0], rng)
        if spot is None:
            continue
        top, left = spot
        window = (slice(top, top + glyph.shape[0]), slice(left, left + glyph.shape[1]))
        occupied[window] = True
        intensity[window] = np.maximum(intensity[window], glyph)
        label = np.where(glyph >= _STROKE, 1 + targets[index], 0)
        label = np.where((glyph >= _VOID_LOW) & (glyph < _STROKE), class_info.IGNORE_LABEL, label)
        mask[window] = np.where(label > 0, label, mask[window])
    # Clutter: 8x8 crops of other digits' 4x4 corners at 2x, only where no digit sits.
    for _ in range(rng.integers(3, 7)):
        source = digits[rng.integers(len(digits))]
        r, c = rng.integers(0, 5, size=2)
        fragment = _upscale(source[r:r + 4, c:c + 4], 2)
        spot = _place(occupied, fragment.shape[0], rng)
        if spot is None:
            continue
        top, left = spot
        window = (slice(top, top + 8), slice(left, left + 8))
        occupied[window] = True
        intensity[window] = np.maximum(intensity[window], fragment)
    background, ink = rng.uniform(0, 255, size=(2, 3))
    while np.abs(background - ink).sum() < 150:  # Keep strokes visible against the ground.
        background, ink = rng.uniform(0, 255, size=(2, 3))
    image = background + intensity[..., None] * (ink - background)
    image += rng.normal(0, 12, size=image.shape)  # Sensor-like noise: no clean thresholds.
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask[..., None]


class DigitScenes(tfds.core.GeneratorBasedBuilder):
    """Scenes of handwritten digits with per-pixel digit classes (see module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                "segmentation_mask": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
                "image/filename": tfds.features.Text(),
            }),
            supervised_keys=("image", "segmentation_mask"),
            metadata=class_info.metadata(class_info.DIGIT_SCENES_CLASSES),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Everything comes from scikit-learn's bundled copy of the digits.
        return {split: self._generate_examples(split) for split in _SPLIT_SIZES}

    def _generate_examples(self, split: str) -> Iterator[Tuple[str, dict]]:
        from sklearn import datasets  # Only the builder needs scikit-learn.
        digits = datasets.load_digits()
        images = digits.images / 16.0
        pool = slice(0, _NUM_TRAIN_DIGITS) if split == "train" else slice(_NUM_TRAIN_DIGITS, None)
        rng = np.random.default_rng(_SPLIT_SEEDS[split])
        for i in range(_SPLIT_SIZES[split]):
            image, mask = make_scene(images[pool], digits.target[pool], rng)
            name = f"{split}_{i:05d}"
            # Encoded here (PIL, lossless) so that building needs no TensorFlow.
            yield name, {"image": builder_io.encode_png(image),
                         "segmentation_mask": builder_io.encode_png(mask),
                         "image/filename": name}
