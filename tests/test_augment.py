"""train_augment / eval_pad: void handling, nearest masks, alignment, identity, seeding, padding."""

import numpy as np
import pytest
import tensorflow as tf

import tf_augment as augment

VOID = 255
FILL = (11, 22, 33)
BLOCK = 16


def _colour(labels: np.ndarray) -> np.ndarray:
    """A distinct colour per label, far from FILL, so the image encodes the mask."""
    labels = labels.astype(np.int64)
    return np.stack([40 + 9 * labels % 200, 250 - 7 * labels % 150, 60 + 5 * labels % 180],
                    axis=-1).astype(np.uint8)


def _scene(height=64, width=96, seed=0):
    """Blocks of classes (and a void block), and an image whose colour spells each label."""
    rng = np.random.RandomState(seed)
    blocks = rng.randint(0, 21, size=(height // BLOCK, width // BLOCK))
    blocks[1, 2] = VOID
    labels = np.kron(blocks, np.ones((BLOCK, BLOCK), np.int64)).astype(np.uint8)
    return _colour(labels), labels[..., None]


def _augment(image, mask, seed, **overrides):
    kwargs = dict(crop_size=(48, 48), min_scale=0.5, max_scale=2.0, random_flip=True,
                  ignore_label=VOID, fill_rgb=FILL)
    kwargs.update(overrides)
    out = augment.train_augment(tf.constant(image), tf.constant(mask),
                                tf.constant(seed, tf.int64), **kwargs)
    return tuple(np.asarray(t) for t in out)


SEEDS = [(0, i) for i in range(12)]


@pytest.mark.parametrize("seed", SEEDS)
def test_void_stays_void_and_classes_stay_classes(seed):
    image, mask = _scene()
    _, out = _augment(image, mask, seed)
    # Same seed → same geometry; so augmenting indicator masks tracks where pixels came from.
    _, was_void = _augment(image, np.where(mask == VOID, VOID, 1).astype(np.uint8), seed)
    _, padding = _augment(image, np.zeros_like(mask), seed)
    padding = padding == VOID
    from_void = (was_void == VOID) & ~padding
    assert np.all(out[from_void] == VOID)  # Void never becomes a class.
    assert np.all((out == VOID) == (from_void | padding))  # Only void and padding are void.


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_mask_values_are_a_subset_of_the_input(seed):
    labels = np.zeros((40, 40), np.uint8)
    labels[::2, ::2] = 20  # Bilinear would blend 0 and 20 into values in between.
    labels[1::2, 1::2] = VOID
    _, out = _augment(_colour(labels), labels[..., None], seed, crop_size=(32, 32))
    assert set(np.unique(out)) <= {0, 20, VOID}


@pytest.mark.parametrize("seed", SEEDS)
def test_image_and_mask_stay_aligned(seed):
    image, mask = _scene(seed=seed[1])
    out_image, out_mask = _augment(image, mask, seed, crop_size=(80, 112))  # Padding too.
    labels = out_mask[..., 0].astype(np.int64)
    # Pixels whose 3x3 neighbourhood has one label: bilinear has no other colour to mix in.
    padded = np.pad(labels, 1, mode="edge")
    windows = np.stack([padded[i:i + labels.shape[0], j:j + labels.shape[1]]
                        for i in range(3) for j in range(3)])
    interior = np.all(windows == labels, axis=0)
    classes = interior & (labels != VOID)
    assert classes.mean() > 0.2  # Not vacuous.
    diff = np.abs(out_image[classes].astype(int) - _colour(labels[classes]).astype(int))
    assert diff.max() <= 2
    _, padding = _augment(image, np.zeros_like(mask), seed, crop_size=(80, 112))
    assert np.all(out_image[padding[..., 0] == VOID] == FILL)


def _resized(image, mask, scale):
    size = np.round(np.array(image.shape[:2]) * scale).astype(int)
    full = tf.image.resize(tf.constant(image), size, method="bilinear")
    full = np.asarray(tf.cast(tf.clip_by_value(tf.round(full), 0, 255), tf.uint8))
    return full, np.asarray(tf.image.resize(tf.constant(mask), size, method="nearest"))


@pytest.mark.parametrize("scale", [0.61, 1.37, 2.0])
def test_crop_is_a_window_of_the_tf_image_resize_result(scale):
    rng = np.random.RandomState(1)
    image = rng.randint(0, 256, size=(30, 40, 3)).astype(np.uint8)
    mask = rng.randint(0, 21, size=(30, 40, 1)).astype(np.uint8)
    full_image, full_mask = _resized(image, mask, scale)
    crop = (full_image.shape[0] - 5, full_image.shape[1] - 7)
    out_image, out_mask = _augment(image, mask, (0, 3), crop_size=crop, min_scale=scale,
                                   max_scale=scale, random_flip=False)
    windows = [(y, x) for y in range(6) for x in range(8)
               if np.array_equal(full_mask[y:y + crop[0], x:x + crop[1]], out_mask)]
    assert windows, "the mask crop is no window of the nearest-resized mask"
    y, x = windows[0]
    diff = np.abs(full_image[y:y + crop[0], x:x + crop[1]].astype(int) - out_image)
    assert diff.max() <= 1  # Float rounding only.


def test_identity_without_scaling_cropping_or_flipping():
    image, mask = _scene(height=48, width=80)
    out_image, out_mask = _augment(image, mask, (3, 4), crop_size=(48, 80), min_scale=1.0,
                                   max_scale=1.0, random_flip=False)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)


def test_flips_about_half_the_time():
    image, mask = _scene(height=32, width=48)

    @tf.function
    def flipped(seed):
        out, _ = augment.train_augment(image, mask, seed, crop_size=(32, 48), min_scale=1.0,
                                       max_scale=1.0, random_flip=True, ignore_label=VOID,
                                       fill_rgb=FILL)
        return tf.reduce_all(tf.equal(out, image[:, ::-1]))

    count = sum(bool(flipped(tf.constant([7, i], tf.int64))) for i in range(100))
    assert 30 <= count <= 70


def test_equal_seeds_give_equal_outputs_and_different_seeds_differ():
    image, mask = _scene()
    first = _augment(image, mask, (5, 6))
    again = _augment(image, mask, (5, 6))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    others = [_augment(image, mask, (5, i)) for i in range(7, 10)]
    assert all(not np.array_equal(first[0], other[0]) for other in others)


def test_works_in_dataset_map_with_unknown_shapes():
    sizes = [(30, 40), (50, 20)]

    def generator():
        for h, w in sizes:
            yield np.zeros((h, w, 3), np.uint8), np.ones((h, w, 1), np.uint8)

    ds = tf.data.Dataset.from_generator(generator, output_signature=(
            tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, None, 1], tf.uint8)))
    ds = ds.enumerate().map(lambda i, ex: augment.train_augment(
            ex[0], ex[1], tf.stack([tf.constant(0, tf.int64), i]), crop_size=(32, 32),
            min_scale=0.5, max_scale=1.5, random_flip=True, ignore_label=VOID, fill_rgb=FILL))
    assert ds.element_spec[0].shape == (32, 32, 3)
    for image, mask in ds:
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32, 1)
        assert set(np.unique(mask)) <= {1, VOID}


def _unique_pixels(height, width):
    index = np.arange(height * width).reshape(height, width)
    return np.stack([index % 251 + 1, index // 251 + 1, np.full_like(index, 7)],
                    axis=-1).astype(np.uint8)


def test_eval_pad_keeps_every_pixel_once_and_masks_padding():
    image = _unique_pixels(30, 40)
    mask = (np.arange(30 * 40).reshape(30, 40, 1) % 22).astype(np.uint8)
    mask[mask == 21] = VOID
    out_image, out_mask, pixel_mask = (np.asarray(t) for t in augment.eval_pad(
            tf.constant(image), tf.constant(mask), eval_size=(36, 48), ignore_label=VOID))
    assert out_image.shape == (36, 48, 3) and out_mask.shape == (36, 48, 1)
    assert pixel_mask.shape == (36, 48) and pixel_mask.dtype == bool
    expected_pixels = np.zeros((36, 48), bool)
    expected_pixels[:30, :40] = True
    np.testing.assert_array_equal(pixel_mask, expected_pixels)
    kept = [tuple(p) for p in out_image[pixel_mask]]
    assert sorted(kept) == sorted(tuple(p) for p in image.reshape(-1, 3))
    assert len(set(kept)) == 30 * 40  # Every original pixel exactly once.
    np.testing.assert_array_equal(out_image[:30, :40], image)
    np.testing.assert_array_equal(out_mask[:30, :40], mask)
    assert np.all(out_image[~pixel_mask] == 0) and np.all(out_mask[~pixel_mask] == VOID)


def test_eval_pad_rejects_an_image_larger_than_eval_size():
    image, mask = np.zeros((30, 50, 3), np.uint8), np.zeros((30, 50, 1), np.uint8)
    with pytest.raises(ValueError, match=r"eval_size=\(36, 48\).*config.input.eval_size"):
        augment.eval_pad(tf.constant(image), tf.constant(mask), eval_size=(36, 48),
                         ignore_label=VOID)
    ds = tf.data.Dataset.from_generator(lambda: iter([(image, mask)]), output_signature=(
            tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, None, 1], tf.uint8)))
    ds = ds.map(lambda i, m: augment.eval_pad(i, m, eval_size=(36, 48), ignore_label=VOID))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)eval_size=\(36, 48\).*config.input.eval_size.*30 50"):
        list(ds)


def test_rescale_by_half_is_a_2x2_box_average_and_a_nearest_mask():
    """Reference in numpy: at exactly 1/2, half-pixel bilinear sampling averages 2x2 blocks and
    nearest sampling takes the block's bottom-right pixel (centre 2i + 1)."""
    rng = np.random.RandomState(3)
    image = rng.randint(0, 256, size=(8, 6, 3)).astype(np.uint8)
    mask = rng.randint(0, 9, size=(8, 6, 1)).astype(np.uint8)
    mask[0, 0] = VOID
    small_image, small_mask = (np.asarray(t) for t in augment.rescale(
        tf.constant(image), tf.constant(mask), 0.5))
    blocks = image.astype(np.float64).reshape(4, 2, 3, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(small_image, blocks, atol=0.51)  # Rounded to uint8.
    np.testing.assert_array_equal(small_mask, mask[1::2, 1::2])


def test_rescale_matches_the_training_sampling_and_is_the_identity_at_one():
    image, mask = _scene(64, 96)
    same = augment.rescale(tf.constant(image), tf.constant(mask), 1.0)
    np.testing.assert_array_equal(same[0], image)
    # Training at scale s without crop or flip samples the very same grid as evaluation.
    small_image, small_mask = (np.asarray(t) for t in augment.rescale(
        tf.constant(image), tf.constant(mask), 0.5))
    trained = _augment(image, mask, (0, 1), crop_size=(32, 48), min_scale=0.5, max_scale=0.5,
                       random_flip=False)
    np.testing.assert_array_equal(small_image, trained[0])
    np.testing.assert_array_equal(small_mask, trained[1])
    with pytest.raises(ValueError, match="image_scale"):
        augment.rescale(tf.constant(image), tf.constant(mask), 0.0)
