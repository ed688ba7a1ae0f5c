"""The tf.data augmentation (formerly `advseg_jax/data/augment.py`), kept as a test reference.

The pipeline has been TensorFlow-free since 2026-12-04 (`data/augment_np.py` through Grain);
this module is the independent TensorFlow computation the numpy augmentation and `predict`'s
rescaling are checked against, so it lives with the tests and the package imports no
TensorFlow. What follows is its original description.

Per-example training augmentation and evaluation padding, for `tf.data.Dataset.map`.

All randomness is stateless and derived from the `seed` argument alone, so an example's
augmentation is a pure function of (example, seed): runs reproduce exactly, and a resumed run
replays the same crops as the uninterrupted one (the input pipeline seeds by global position).

Image and mask are sampled on one grid, then stacked into one [h, w, 4] tensor, so rescaling,
cropping, padding and flipping act on both through the very same indices and cannot drift apart.
"""

from typing import NamedTuple, Sequence, Tuple

import tensorflow as tf

from advseg_jax.data.augment_np import check_args as _check_args


class _AxisGrid(NamedTuple):
    """Where output pixels of one axis sample the source: nearest index, bilinear pair."""
    nearest: tf.Tensor
    low: tf.Tensor
    high: tf.Tensor
    frac: tf.Tensor


def _axis_grid(start: tf.Tensor, count: tf.Tensor, in_size: tf.Tensor,
               out_size: tf.Tensor) -> _AxisGrid:
    """Sampling of output pixels [start, start + count) of an axis rescaled in_size → out_size.

    Half-pixel centres, as `tf.image.resize` (bilinear / nearest) uses, so the result is that
    of resizing the whole image and then cropping, without computing the discarded pixels.
    """
    centre = (tf.cast(tf.range(start, start + count), tf.float32) + 0.5) * (
            tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32))
    nearest = tf.minimum(tf.cast(tf.floor(centre), tf.int32), in_size - 1)
    source = centre - 0.5
    floor = tf.floor(source)
    low = tf.clip_by_value(tf.cast(floor, tf.int32), 0, in_size - 1)
    high = tf.clip_by_value(tf.cast(tf.math.ceil(source), tf.int32), 0, in_size - 1)
    return _AxisGrid(nearest, low, high, source - floor)


def _bilinear(image: tf.Tensor, rows: _AxisGrid, cols: _AxisGrid) -> tf.Tensor:
    def lerp(low, high, frac):
        low, high = tf.cast(low, tf.float32), tf.cast(high, tf.float32)
        return low + frac * (high - low)  # Exactly `low` when frac == 0: identity at scale 1.

    image = lerp(tf.gather(image, rows.low, axis=0), tf.gather(image, rows.high, axis=0),
                 rows.frac[:, None, None])
    image = lerp(tf.gather(image, cols.low, axis=1), tf.gather(image, cols.high, axis=1),
                 cols.frac[None, :, None])
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def train_augment(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, *,
                  crop_size: Sequence[int], min_scale: float, max_scale: float,
                  random_flip: bool, ignore_label: int,
                  fill_rgb: Sequence[int]) -> Tuple[tf.Tensor, tf.Tensor]:
    """Random scale, pad, crop and flip of uint8 image [H, W, 3] and mask [H, W, 1].

    Semantics: rescale by s ~ U[min_scale, max_scale] (image bilinear, mask nearest), pad at
    bottom/right up to `crop_size`, take a uniformly placed crop, flip it with probability 1/2.
    Padding is `fill_rgb` in the image, the dataset mean, so it looks like nothing in particular
    after normalisation, and `ignore_label` in the mask, so it counts in no loss or metric.
    Only the crop is computed: its pixels are sampled from the source directly, image and mask
    on one grid, so a 2x scale costs no more than 1x. `seed`: int32/int64 [2]. Returns uint8
    image [ch, cw, 3], mask [ch, cw, 1]. With min_scale = max_scale = 1, crop = image size and
    no flip it is the identity.
    """
    _check_args(crop_size, fill_rgb, min_scale, max_scale)
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    scale_seed, y_seed, x_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=4))

    size = tf.shape(image)[:2]
    scale = tf.random.stateless_uniform([], scale_seed, minval=min_scale, maxval=max_scale)
    scaled = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
    padded = tf.maximum(scaled, [crop_h, crop_w])
    top = tf.random.stateless_uniform([], y_seed, minval=0, maxval=padded[0] - crop_h + 1,
                                      dtype=tf.int32)
    left = tf.random.stateless_uniform([], x_seed, minval=0, maxval=padded[1] - crop_w + 1,
                                       dtype=tf.int32)
    # The part of the crop inside the rescaled image; the rest (bottom/right) is padding.
    rows = _axis_grid(top, tf.minimum(crop_h, scaled[0] - top), size[0], scaled[0])
    cols = _axis_grid(left, tf.minimum(crop_w, scaled[1] - left), size[1], scaled[1])
    image = _bilinear(image, rows, cols)
    mask = tf.gather(tf.gather(mask, rows.nearest, axis=0), cols.nearest, axis=1)

    both = tf.concat([image, mask], axis=-1)
    inside = tf.shape(both)[:2]
    paddings = [[0, crop_h - inside[0]], [0, crop_w - inside[1]]]
    inside_crop = tf.pad(tf.ones(inside, tf.bool), paddings, constant_values=False)
    fill = tf.constant(list(fill_rgb) + [ignore_label], tf.uint8)
    both = tf.where(inside_crop[..., None], tf.pad(both, paddings + [[0, 0]]), fill)

    if random_flip:
        flip = tf.random.stateless_uniform([], flip_seed) < 0.5
        both = tf.cond(flip, lambda: tf.reverse(both, axis=[1]), lambda: both)

    both = tf.ensure_shape(both, [crop_h, crop_w, 4])
    return both[..., :3], both[..., 3:]


def rescale(image: tf.Tensor, mask: tf.Tensor, scale: float) -> Tuple[tf.Tensor, tf.Tensor]:
    """Whole image (bilinear) and mask (nearest) rescaled by `scale`, sampled as in training.

    For protocols that work on downscaled images (`input.image_scale`): evaluation must see the
    images at the resolution the model was trained on, through the very same sampling grid.
    """
    if scale == 1.0:
        return image, mask
    if scale <= 0:
        raise ValueError(f"input.image_scale must be > 0, got {scale}.")
    size = tf.shape(image)[:2]
    scaled = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
    rows = _axis_grid(0, scaled[0], size[0], scaled[0])
    cols = _axis_grid(0, scaled[1], size[1], scaled[1])
    image = _bilinear(image, rows, cols)
    mask = tf.gather(tf.gather(mask, rows.nearest, axis=0), cols.nearest, axis=1)
    return image, mask


def eval_pad(image: tf.Tensor, mask: tf.Tensor, *, eval_size: Sequence[int],
             ignore_label: int) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Pads image (with 0) and mask (with `ignore_label`) at bottom/right to `eval_size`.

    Evaluation sees whole images, never crops, and batches need one shape, so every image is
    padded to one size; `pixel_mask` (bool [eh, ew]) is True on original pixels so padding is
    scored nowhere. Fails, naming both sizes, on an image larger than `eval_size`: cropping it
    silently would score only part of the image.
    """
    eval_h, eval_w = int(eval_size[0]), int(eval_size[1])
    message = (f"An evaluation image is larger than eval_size=({eval_h}, {eval_w}) (h, w). "
               "Raise config.input.eval_size to at least the largest image of the split.")
    static_size = image.shape[:2]
    if static_size.is_fully_defined() and (static_size[0] > eval_h or static_size[1] > eval_w):
        raise ValueError(f"{message} Image size (h, w): {tuple(static_size)}.")
    size = tf.shape(image)[:2]
    check = tf.debugging.assert_less_equal(
            size, tf.constant([eval_h, eval_w], tf.int32),
            message=f"{message} Below, x is the image size (h, w) and y is eval_size.")
    with tf.control_dependencies([check] if check is not None else []):
        paddings = [[0, eval_h - size[0]], [0, eval_w - size[1]]]
        image = tf.pad(image, paddings + [[0, 0]])
        mask = tf.pad(mask, paddings + [[0, 0]],
                      constant_values=tf.constant(ignore_label, mask.dtype))
        pixel_mask = tf.pad(tf.ones(size, tf.bool), paddings, constant_values=False)
    image = tf.ensure_shape(image, [eval_h, eval_w, 3])
    mask = tf.ensure_shape(mask, [eval_h, eval_w, 1])
    pixel_mask = tf.ensure_shape(pixel_mask, [eval_h, eval_w])
    return image, mask, pixel_mask
