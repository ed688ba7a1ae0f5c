"""Images/s of decode + `train_augment` in a tf.data pipeline like the training one.

Tells whether the input pipeline can feed a given accelerator on this many CPU cores. Inputs
are the dummy VOC images and masks upscaled to VOC's typical 500x375, with noise added so the
JPEGs are about as large (and as slow to decode) as real photos.

    python -m advseg_jax.data.benchmark_augment --crop_size=320 --batch_size=8
"""

import io
import os
import tarfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from advseg_jax.data import augment
from advseg_jax.data.class_info import IGNORE_LABEL
from advseg_jax.data.dummy_data import make_dummy_data as dummy

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per batch.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 60, "Batches timed, after the warm-up.")
_CROP_SIZE = flags.DEFINE_integer("crop_size", 320, "Square crop side.")
_MIN_SCALE = flags.DEFINE_float("min_scale", 0.5, "Smallest random scale.")
_MAX_SCALE = flags.DEFINE_float("max_scale", 2.0, "Largest random scale.")
_WIDTH, _HEIGHT = 500, 375
_WARMUP_BATCHES = 5


def realistic_examples() -> list:
    """(JPEG bytes, PNG bytes) of every dummy VOC image with a mask, upscaled to 500x375."""
    rng = np.random.RandomState(0)
    path = dummy.DUMMY_DIR / "voc2012_segmentation" / dummy.VOC_TAR
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    examples = []
    for name, data in sorted(members.items()):
        if "/SegmentationClass/" not in name:
            continue
        image_id = name.rsplit("/", 1)[1][:-len(".png")]
        jpeg = members[f"{dummy.VOC_ROOT}/JPEGImages/{image_id}.jpg"]
        image = Image.open(io.BytesIO(jpeg)).resize((_WIDTH, _HEIGHT), Image.BILINEAR)
        noisy = np.asarray(image, np.float32) + rng.normal(0, 20, (_HEIGHT, _WIDTH, 3))
        image_bytes = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
                image_bytes, format="JPEG", quality=90)
        mask = Image.open(io.BytesIO(data)).resize((_WIDTH, _HEIGHT), Image.NEAREST)
        mask_bytes = io.BytesIO()
        mask.save(mask_bytes, format="PNG")
        examples.append((image_bytes.getvalue(), mask_bytes.getvalue()))
    return examples


def make_dataset(examples: list, batch_size: int, crop_size: int, min_scale: float,
                 max_scale: float) -> tf.data.Dataset:
    image_feature = tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
    mask_feature = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    images, masks = zip(*examples)
    ds = tf.data.Dataset.from_tensor_slices((list(images), list(masks))).repeat().enumerate()

    def prepare(position, example):
        image = image_feature.decode_example(example[0])
        mask = mask_feature.decode_example(example[1])
        seed = tf.stack([tf.constant(0, tf.int64), position])
        return augment.train_augment(
                image, mask, seed, crop_size=(crop_size, crop_size), min_scale=min_scale,
                max_scale=max_scale, random_flip=True, ignore_label=IGNORE_LABEL,
                fill_rgb=(123, 117, 104))

    options = tf.data.Options()
    options.deterministic = True  # As in training.
    ds = ds.with_options(options).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)


def main(argv):
    del argv
    examples = realistic_examples()
    kib = np.mean([len(jpeg) for jpeg, _ in examples]) / 1024
    iterator = iter(make_dataset(examples, _BATCH_SIZE.value, _CROP_SIZE.value,
                                 _MIN_SCALE.value, _MAX_SCALE.value))
    for _ in range(_WARMUP_BATCHES):
        next(iterator)
    start = time.perf_counter()
    for _ in range(_NUM_BATCHES.value):
        next(iterator)
    seconds = time.perf_counter() - start
    images = _NUM_BATCHES.value * _BATCH_SIZE.value
    print(f"{images / seconds:.1f} images/s: {images} images of {_WIDTH}x{_HEIGHT} (JPEG "
          f"{kib:.0f} KiB), crop {_CROP_SIZE.value}, scale [{_MIN_SCALE.value}, "
          f"{_MAX_SCALE.value}], batch {_BATCH_SIZE.value}, num_parallel_calls=AUTOTUNE, "
          f"{os.cpu_count()} CPU cores.")

if __name__ == "__main__":
    app.run(main)
