"""numpy augmentation (augment_np.py) against an independent whole-image numpy computation and
against the tf.data version (augment.py) given the same draws."""

import numpy as np
import pytest

from advseg_jax.data import augment_np


def _resize_reference(image, mask, out_h, out_w):
    """Whole-image resize with half-pixel centres, written pixel by pixel. Source coordinates
    in float32 as the documented grid (tf.image.resize's): at exact pixel borders float64
    would pick the other neighbour; the interpolation itself is float64."""
    in_h, in_w = image.shape[:2]
    out_image = np.zeros((out_h, out_w, 3))
    out_mask = np.zeros((out_h, out_w, 1), np.uint8)
    for y in range(out_h):
        for x in range(out_w):
            sy = float(np.float32(y + 0.5) * (np.float32(in_h) / np.float32(out_h)))
            sx = float(np.float32(x + 0.5) * (np.float32(in_w) / np.float32(out_w)))
            out_mask[y, x] = mask[min(int(sy), in_h - 1), min(int(sx), in_w - 1)]
            fy, fx = sy - 0.5, sx - 0.5
            y0, x0 = int(np.floor(fy)), int(np.floor(fx))
            wy, wx = fy - y0, fx - x0
            y1, x1 = min(max(y0 + 1, 0), in_h - 1), min(max(x0 + 1, 0), in_w - 1)
            y0, x0 = min(max(y0, 0), in_h - 1), min(max(x0, 0), in_w - 1)
            top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
            bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
            out_image[y, x] = top * (1 - wy) + bottom * wy
    return out_image, out_mask


def _reference_augment(image, mask, draw, crop, fill_rgb, flip_on):
    """Resize the whole image, pad bottom/right, crop, flip: the documented semantics."""
    out_h, out_w = (max(1, int(np.round(np.float32(s) * draw.scale))) for s in image.shape[:2])
    scaled, scaled_mask = _resize_reference(image.astype(np.float64), mask, out_h, out_w)
    pad_h, pad_w = max(out_h, crop[0]), max(out_w, crop[1])
    canvas = np.zeros((pad_h, pad_w, 3)) + np.asarray(fill_rgb, np.float64)
    canvas_mask = np.full((pad_h, pad_w, 1), 255, np.uint8)
    canvas[:out_h, :out_w], canvas_mask[:out_h, :out_w] = scaled, scaled_mask
    window = (slice(draw.top, draw.top + crop[0]), slice(draw.left, draw.left + crop[1]))
    image, mask = canvas[window], canvas_mask[window]
    if flip_on and draw.flip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return image, mask


def _example(rng, height, width):
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = rng.integers(0, 6, size=(height, width, 1), dtype=np.uint8)
    return image, mask


@pytest.mark.parametrize("seed", range(6))
def test_train_augment_matches_whole_image_reference(seed):
    rng = np.random.default_rng(seed)
    image, mask = _example(rng, int(rng.integers(9, 20)), int(rng.integers(9, 20)))
    crop, fill = (12, 14), (10, 20, 30)
    draw = augment_np.draw_crop(np.random.default_rng([7, seed]), image.shape[:2], crop,
                                0.5, 2.0)
    got_image, got_mask = augment_np.train_augment(
            image, mask, np.random.default_rng([7, seed]), crop_size=crop, min_scale=0.5,
            max_scale=2.0, random_flip=True, ignore_label=255, fill_rgb=fill)
    want_image, want_mask = _reference_augment(image, mask, draw, crop, fill, True)
    assert got_image.shape == (12, 14, 3) and got_mask.shape == (12, 14, 1)
    assert got_image.dtype == np.uint8 and got_mask.dtype == np.uint8
    np.testing.assert_array_equal(got_mask, want_mask)
    # float32 vs float64 interpolation: at most one grey level apart.
    assert np.abs(got_image.astype(int) - np.round(want_image).astype(int)).max() <= 1


def test_draws_are_uniform_over_valid_placements():
    tops, lefts, flips, scales = [], [], [], []
    for position in range(2000):
        draw = augment_np.draw_crop(np.random.default_rng([0, position]), (10, 20), (8, 8),
                                    1.0, 1.0)
        tops.append(draw.top), lefts.append(draw.left), flips.append(draw.flip)
        scales.append(augment_np.draw_crop(np.random.default_rng([1, position]), (10, 10),
                                           (4, 4), 0.5, 1.5).scale)
    assert set(tops) == set(range(3)) and set(lefts) == set(range(13))
    assert 0.45 < np.mean(flips) < 0.55
    assert 0.5 <= min(scales) and max(scales) < 1.5 and abs(np.mean(scales) - 1.0) < 0.03


def test_identity_at_scale_one_full_crop_no_flip():
    image, mask = _example(np.random.default_rng(0), 7, 9)
    got_image, got_mask = augment_np.train_augment(
            image, mask, np.random.default_rng(1), crop_size=(7, 9), min_scale=1.0,
            max_scale=1.0, random_flip=False, ignore_label=255, fill_rgb=(0, 0, 0))
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_mask, mask)


def test_matches_tf_augment_given_the_same_draws():
    tf = pytest.importorskip("tensorflow")
    import tf_augment as augment
    image, mask = _example(np.random.default_rng(3), 15, 11)
    for scale in (0.6, 1.0, 1.7):
        draw = augment_np.CropDraw(np.float32(scale), 1, 2, False)
        got_image, got_mask = augment_np.apply_crop(
                image, mask, draw, crop_size=(9, 9), random_flip=False, ignore_label=255,
                fill_rgb=(1, 2, 3))
        scaled = augment_np.scaled_size(image.shape[:2], scale)
        rows = augment._axis_grid(1, max(0, min(9, scaled[0] - 1)), 15, scaled[0])
        cols = augment._axis_grid(2, max(0, min(9, scaled[1] - 2)), 11, scaled[1])
        tf_image = augment._bilinear(tf.constant(image), rows, cols).numpy()
        inside = tf_image.shape[:2]
        np.testing.assert_array_equal(got_image[:inside[0], :inside[1]], tf_image)
        assert (got_image[inside[0]:] == (1, 2, 3)).all()
        assert (got_mask[inside[0]:] == 255).all() and (got_mask[:, inside[1]:] == 255).all()


def test_rescale_and_eval_pad():
    image, mask = _example(np.random.default_rng(4), 10, 6)
    small_image, small_mask = augment_np.rescale(image, mask, 0.5)
    want_image, want_mask = _resize_reference(image.astype(np.float64), mask, 5, 3)
    np.testing.assert_array_equal(small_mask, want_mask)
    assert np.abs(small_image.astype(int) - np.round(want_image).astype(int)).max() <= 1
    padded, padded_mask, pixel_mask = augment_np.eval_pad(small_image, small_mask,
                                                          eval_size=(6, 4), ignore_label=255)
    np.testing.assert_array_equal(padded[:5, :3], small_image)
    assert (padded[5:] == 0).all() and (padded_mask[:, 3:] == 255).all()
    assert pixel_mask.sum() == 15 and pixel_mask[:5, :3].all()
    with pytest.raises(ValueError, match="eval_size"):
        augment_np.eval_pad(image, mask, eval_size=(6, 4), ignore_label=255)


def _straightforward_apply_crop(image, mask, draw, crop, fill, ignore):
    """The plain form of apply_crop: interpolate whole source rows, then columns, on a
    4-channel canvas, and flip the finished crop. Same float32 operations, so bit-exact."""
    scaled = augment_np.scaled_size(image.shape[:2], draw.scale)
    rows = augment_np._axis_grid(draw.top, max(0, min(crop[0], scaled[0] - draw.top)),
                                 image.shape[0], scaled[0])
    cols = augment_np._axis_grid(draw.left, max(0, min(crop[1], scaled[1] - draw.left)),
                                 image.shape[1], scaled[1])

    def lerp(low, high, frac):
        low, high = low.astype(np.float32), high.astype(np.float32)
        return low + frac * (high - low)

    both = np.empty(tuple(crop) + (4,), np.uint8)
    both[...] = np.asarray(list(fill) + [ignore], np.uint8)
    rows_done = lerp(image[rows.low], image[rows.high], rows.frac[:, None, None])
    resampled = lerp(rows_done[:, cols.low], rows_done[:, cols.high], cols.frac[None, :, None])
    both[:len(rows.low), :len(cols.low), :3] = np.clip(np.round(resampled), 0, 255)
    both[:len(rows.low), :len(cols.low), 3:] = mask[rows.nearest][:, cols.nearest]
    if draw.flip:
        both = both[:, ::-1]
    return both[..., :3], both[..., 3:]


@pytest.mark.parametrize("shape,crop,scales,padded", [((24, 31), (16, 20), (0.5, 2.0), True),
                                                      ((13, 9), (16, 20), (0.3, 1.1), True),
                                                      ((40, 33), (8, 8), (0.9, 3.0), False)])
def test_apply_crop_is_bit_exact_with_the_straightforward_form(shape, crop, scales, padded):
    """The gather-columns-first, flip-by-grid form against the plain one, over draws that
    cover flips, crops past the image's right and bottom edges, and crops inside it."""
    rng = np.random.default_rng(sum(shape))
    image, mask = _example(rng, *shape)
    partial = 0
    for position in range(60):
        draw = augment_np.draw_crop(np.random.default_rng([5, position]), shape, crop, *scales)
        got = augment_np.apply_crop(image, mask, draw, crop_size=crop, random_flip=True,
                                    ignore_label=255, fill_rgb=(7, 8, 9))
        want = _straightforward_apply_crop(image, mask, draw, crop, (7, 8, 9), 255)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        partial += bool((got[1] == 255).any())
    # Where the scales allow it, some draws padded the crop: fill and flip placement checked.
    assert bool(partial) == padded
