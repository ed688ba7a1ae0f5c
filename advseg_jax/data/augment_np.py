"""Per-example training augmentation and evaluation padding in numpy, for the Grain pipeline.

The same semantics and the same sampling grid as the tf.data version (now
`tests/tf_augment.py`), with no TensorFlow: an example's augmentation is a pure function of
(example, seed, position), drawn from `numpy.random.default_rng([seed, position])`, so a
resumed run, any number of processes and any number of input workers produce the very same
crops.

Draws, in this order, from that generator: the scale s ~ U[min_scale, max_scale), the crop's
top row and left column (uniform integers over the valid placements of the padded image), and
the flip (u ~ U[0, 1) < 1/2; drawn even when flipping is off, so turning it on changes nothing
else). Only the crop's pixels are computed, sampled from the source on one grid for image and
mask, with half-pixel centres as `tf.image.resize` (image bilinear, mask nearest).
"""

from typing import NamedTuple, Sequence, Tuple

import numpy as np



def check_args(crop_size: Sequence[int], fill_rgb: Sequence[int], min_scale: float,
               max_scale: float) -> None:
    """Raises, naming the value, on augmentation settings that cannot be applied."""
    if len(crop_size) != 2 or min(crop_size) < 1:
        raise ValueError(f"crop_size must be (height, width) >= 1, got {crop_size}.")
    if len(fill_rgb) != 3 or not all(0 <= v <= 255 for v in fill_rgb):
        raise ValueError(f"fill_rgb must be 3 values in [0, 255], got {fill_rgb}.")
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"Need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}.")


class CropDraw(NamedTuple):
    """The random choices of one example's augmentation."""
    scale: np.float32
    top: int
    left: int
    flip: bool


def scaled_size(size: Tuple[int, int], scale: float) -> Tuple[int, int]:
    """round(size · scale), at least 1, in float32 as the tf.data version computes it."""
    scaled = np.round(np.asarray(size, np.float32) * np.float32(scale))
    return tuple(int(v) for v in np.maximum(scaled, 1).astype(np.int64))


def draw_crop(rng: np.random.Generator, size: Tuple[int, int], crop_size: Sequence[int],
              min_scale: float, max_scale: float) -> CropDraw:
    """The scale, crop corner and flip of an image of `size` (h, w), in the documented order."""
    scale = np.float32(rng.uniform(min_scale, max_scale))
    scaled = scaled_size(size, scale)
    padded = (max(scaled[0], crop_size[0]), max(scaled[1], crop_size[1]))
    top = int(rng.integers(0, padded[0] - crop_size[0] + 1))
    left = int(rng.integers(0, padded[1] - crop_size[1] + 1))
    flip = bool(rng.random() < 0.5)
    return CropDraw(scale, top, left, flip)


class _AxisGrid(NamedTuple):
    nearest: np.ndarray
    low: np.ndarray
    high: np.ndarray
    frac: np.ndarray


def _axis_grid(start: int, count: int, in_size: int, out_size: int) -> _AxisGrid:
    """Source sampling of output pixels [start, start + count) of an axis rescaled
    in_size → out_size (float32, half-pixel centres: resizing then cropping)."""
    ratio = np.float32(in_size) / np.float32(out_size)
    centre = (np.arange(start, start + count).astype(np.float32) + np.float32(0.5)) * ratio
    nearest = np.minimum(np.floor(centre).astype(np.int64), in_size - 1)
    source = centre - np.float32(0.5)
    floor = np.floor(source)
    low = np.clip(floor.astype(np.int64), 0, in_size - 1)
    high = np.clip(np.ceil(source).astype(np.int64), 0, in_size - 1)
    return _AxisGrid(nearest, low, high, (source - floor).astype(np.float32))


def _row_lerp(columns: np.ndarray, rows: _AxisGrid, first_row: int) -> np.ndarray:
    """float32 rows-axis interpolation of uint8 `columns` (source rows from `first_row`)."""
    low = np.take(columns, rows.low - first_row, axis=0).astype(np.float32)
    high = np.take(columns, rows.high - first_row, axis=0).astype(np.float32)
    high -= low
    high *= rows.frac[:, None, None]
    low += high  # low + frac · (high − low): exactly `low` when frac == 0 (identity at scale 1).
    return low


def _bilinear(image: np.ndarray, rows: _AxisGrid, cols: _AxisGrid) -> np.ndarray:
    """uint8 bilinear samples of `image` on the grid: rows interpolated first, then columns,
    each as low + frac · (high − low) in float32, rounded half to even.

    Picking a column commutes with interpolating along rows, so the source columns are
    gathered first, in uint8 (3 bytes per pixel instead of 12), and only the rows the grid
    reaches are read: the same float32 operations on the same values as interpolating the
    whole rows, for a fraction of the memory traffic.
    """
    first_row = int(rows.low.min())
    source = image[first_row:int(rows.high.max()) + 1]
    low = _row_lerp(np.take(source, cols.low, axis=1), rows, first_row)
    high = _row_lerp(np.take(source, cols.high, axis=1), rows, first_row)
    high -= low
    high *= cols.frac[None, :, None]
    low += high
    np.round(low, out=low)
    np.clip(low, 0, 255, out=low)
    return low.astype(np.uint8)


def _nearest(mask: np.ndarray, rows: _AxisGrid, cols: _AxisGrid) -> np.ndarray:
    """Nearest-neighbour samples of `mask` on the grid (one uint8 gather per axis)."""
    return np.take(np.take(mask, rows.nearest, axis=0), cols.nearest, axis=1)


def _reversed(grid: _AxisGrid) -> _AxisGrid:
    return _AxisGrid(*(values[::-1] for values in grid))


def apply_crop(image: np.ndarray, mask: np.ndarray, draw: CropDraw, *,
               crop_size: Sequence[int], random_flip: bool, ignore_label: int,
               fill_rgb: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 image [ch, cw, 3] and mask [ch, cw, 1] of `draw` applied to image [H, W, 3] and
    mask [H, W, 1]: rescale, pad bottom/right (image with `fill_rgb`, mask with
    `ignore_label`), crop at (top, left), flip if `draw.flip` and `random_flip`.

    Only the crop's pixels inside the rescaled image are sampled; a flip samples the columns
    in reverse order into the mirrored place, rather than copying the crop once more.
    """
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    size = image.shape[:2]
    scaled = scaled_size(size, draw.scale)
    rows = _axis_grid(draw.top, max(0, min(crop_h, scaled[0] - draw.top)), size[0], scaled[0])
    cols = _axis_grid(draw.left, max(0, min(crop_w, scaled[1] - draw.left)), size[1],
                      scaled[1])
    out_image = np.empty((crop_h, crop_w, 3), np.uint8)
    out_mask = np.empty((crop_h, crop_w, 1), np.uint8)
    inside_h, inside_w = len(rows.low), len(cols.low)
    flip = random_flip and draw.flip
    left = crop_w - inside_w if flip else 0
    # Padding: the rows below the rescaled image, and the columns beside it (right, or left
    # once flipped). Only these are filled; the rest is written once, below.
    for rows_out, cols_out in ((slice(inside_h, crop_h), slice(0, crop_w)),
                               (slice(0, inside_h), slice(0, left)),
                               (slice(0, inside_h), slice(left + inside_w, crop_w))):
        out_image[rows_out, cols_out] = np.asarray(fill_rgb, np.uint8)
        out_mask[rows_out, cols_out] = ignore_label
    if not inside_h or not inside_w:
        return out_image, out_mask
    if flip:
        cols = _reversed(cols)
    inside = (slice(0, inside_h), slice(left, left + inside_w))
    out_image[inside] = _bilinear(image, rows, cols)
    out_mask[inside] = _nearest(mask, rows, cols)
    return out_image, out_mask


def train_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *,
                  crop_size: Sequence[int], min_scale: float, max_scale: float,
                  random_flip: bool, ignore_label: int,
                  fill_rgb: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Random scale, pad, crop and flip (see the module docstring) with draws from `rng`."""
    check_args(crop_size, fill_rgb, min_scale, max_scale)
    draw = draw_crop(rng, image.shape[:2], crop_size, min_scale, max_scale)
    return apply_crop(image, mask, draw, crop_size=crop_size, random_flip=random_flip,
                      ignore_label=ignore_label, fill_rgb=fill_rgb)


def rescale(image: np.ndarray, mask: np.ndarray, scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """Whole image (bilinear) and mask (nearest) rescaled by `scale`, on training's grid."""
    if scale == 1.0:
        return image, mask
    if scale <= 0:
        raise ValueError(f"input.image_scale must be > 0, got {scale}.")
    size = image.shape[:2]
    scaled = scaled_size(size, scale)
    rows = _axis_grid(0, scaled[0], size[0], scaled[0])
    cols = _axis_grid(0, scaled[1], size[1], scaled[1])
    return _bilinear(image, rows, cols), _nearest(mask, rows, cols)


def eval_pad(image: np.ndarray, mask: np.ndarray, *, eval_size: Sequence[int],
             ignore_label: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (0), mask (`ignore_label`) padded bottom/right to `eval_size`, and `pixel_mask`
    (True on original pixels). Raises on an image larger than `eval_size`: cropping it would
    silently score only part of it."""
    eval_h, eval_w = int(eval_size[0]), int(eval_size[1])
    height, width = image.shape[:2]
    if height > eval_h or width > eval_w:
        raise ValueError(f"An evaluation image is larger than eval_size=({eval_h}, {eval_w}) "
                         f"(h, w): ({height}, {width}). Raise config.input.eval_size to at "
                         "least the largest image of the split.")
    padded_image = np.zeros((eval_h, eval_w, 3), np.uint8)
    padded_image[:height, :width] = image
    padded_mask = np.full((eval_h, eval_w, 1), ignore_label, np.uint8)
    padded_mask[:height, :width] = mask
    pixel_mask = np.zeros((eval_h, eval_w), bool)
    pixel_mask[:height, :width] = True
    return padded_image, padded_mask, pixel_mask
