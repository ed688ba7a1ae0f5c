"""Segments JPEG/PNG images with a trained checkpoint: palette masks and overlays.

    python -m advseg_jax.predict --workdir=DIR --input=IMAGE_OR_DIR --output=OUT_DIR \\
        [--step=N|latest|best] [--config=FILE] [--config.KEY=VALUE ...]

Installed, the same flags work as the `advseg-predict` console script (a shipped config can
be named, e.g. `--config=voc`). Without `--config`, the run's own DIR/config.json is the config.

For each image `<stem>.jpg|png`, writes OUT_DIR/<stem>.png (the label map as a palette PNG with
the dataset's colours — read from its metadata, so a folder dataset's own colours — so it opens
like a VOC mask) and OUT_DIR/<stem>_overlay.png (image | image blended with the coloured
labels). Images are segmented one at a time: each is first rescaled by
`config.input.image_scale`, as evaluation rescales them (the model knows objects only at that
scale), and the class scores are resized back, so every mask has its input image's own size.
The segmentors are fully convolutional. The rescaled image is padded at bottom/right to a
multiple of `_SIZE_MULTIPLE` with `config.input.fill_rgb`, as training pads crops, which keeps
the output grid aligned with the input whatever the output stride (up to 32) and lets images of
nearby sizes share one compiled program; the scores are cropped back to the image.

Memory grows with an image's pixel count, so images above `--max_pixels` are refused rather
than left to exhaust the device. A file that cannot be read or is too large is reported and
skipped; the others are still written, and the exit status is 1 at the end.
"""

import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from PIL import UnidentifiedImageError  # noqa: E402

from advseg_jax import checkpointing  # noqa: E402
from advseg_jax import cli  # noqa: E402
from advseg_jax import config_checks  # noqa: E402
from advseg_jax import evaluate  # noqa: E402
from advseg_jax import models  # noqa: E402
from advseg_jax.data import dataset_facts  # noqa: E402
from advseg_jax.data import dataset_info  # noqa: E402
from advseg_jax.data import folder_files  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_SIZE_MULTIPLE = 32  # >= every segmentor's output stride (Dilated-8: 8; digit_net: 2).
_OVERLAY_ALPHA = 0.5  # Weight of the colour mask in the blend.
# 4 megapixels: phone photos (12-24 MP) would need many GiB of activations in Dilated-8.
DEFAULT_MAX_PIXELS = 4_000_000


class InputError(ValueError):
    """A missing, empty or unreadable input (the message names the path)."""


def find_images(path: str) -> List[str]:
    """`path` itself, or the JPEG/PNG files directly in directory `path`, sorted."""
    if not os.path.exists(path):
        raise InputError(f"Input {path!r} does not exist.")
    if os.path.isfile(path):
        files = [path]
    else:
        files = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if name.lower().endswith(IMAGE_SUFFIXES)
                       and os.path.isfile(os.path.join(path, name)))
        if not files:
            raise InputError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {path!r}.")
    stems = {}
    for file in files:
        stem = os.path.splitext(os.path.basename(file))[0]
        if stem in stems:  # a.jpg and a.png would overwrite each other's outputs.
            raise InputError(f"{stems[stem]!r} and {file!r} would both be written as {stem}.png; "
                             "rename one.")
        stems[stem] = file
    return files


def read_image(path: str) -> np.ndarray:
    """uint8 RGB [H, W, 3]; InputError naming the file if it is not a readable image."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise InputError(f"Cannot read image {path!r}: {error}") from error


def _axis_samples(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, frac) of output pixels 0..out_size-1 on an axis resized in_size → out_size.

    Half-pixel centres in float32, clamped at the edges: the arithmetic of evaluation's
    rescaling and of `tf.image.resize(..., "bilinear")`, so predictions see the images that
    evaluation scored, to the bit.
    """
    ratio = np.float32(in_size) / np.float32(out_size)
    source = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * ratio - np.float32(0.5)
    floor = np.floor(source)
    low = np.clip(floor.astype(np.int64), 0, in_size - 1)
    high = np.clip(np.ceil(source).astype(np.int64), 0, in_size - 1)
    return low, high, (source - floor).astype(np.float32)


def resize_bilinear(values: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """float32 [H, W, C] → [size[0], size[1], C], bilinear (rows, then columns; no antialias)."""
    values = np.asarray(values, np.float32)
    for axis, out_size in enumerate(size):
        low, high, frac = _axis_samples(values.shape[axis], out_size)
        frac = frac.reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
        low, high = np.take(values, low, axis=axis), np.take(values, high, axis=axis)
        values = low + frac * (high - low)  # Exactly `low` where frac == 0.
    return values


def rescaled(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 `image` rescaled by `scale` (size rounded half to even, at least 1 pixel).

    Bilinear, rounded back to uint8: evaluation's sampling of `input.image_scale`, so the model
    sees objects at the scale it was trained and evaluated on.
    """
    if scale == 1.0:
        return image
    if scale <= 0:
        raise ValueError(f"input.image_scale must be > 0, got {scale}.")
    size = np.maximum(np.round(np.float32(image.shape[:2]) * np.float32(scale)), 1)
    scaled = resize_bilinear(image, (int(size[0]), int(size[1])))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def make_predict_fn(config: ml_collections.ConfigDict,
                    params) -> Callable[[np.ndarray], np.ndarray]:
    """image uint8 [H, W, 3] → label ids uint8 [H, W]; compiled once per padded shape."""
    segmentor = models.build_segmentor(config)
    params = jax.device_put(jax.device_get(params), jax.local_devices()[0])
    fill = np.asarray(config.input.fill_rgb, np.uint8)
    scale = config.input.image_scale

    @jax.jit
    def scores_of(params, image):
        logits = segmentor.apply({"params": params}, image[None].astype(jnp.float32),
                                 train=False)
        return jax.image.resize(logits, (1, *image.shape[:2], logits.shape[-1]), "bilinear",
                                antialias=False)[0]

    def predict(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        small = rescaled(image, scale)
        small_height, small_width = small.shape[:2]
        padded_shape = (-(-small_height // _SIZE_MULTIPLE) * _SIZE_MULTIPLE,
                        -(-small_width // _SIZE_MULTIPLE) * _SIZE_MULTIPLE, 3)
        padded = np.empty(padded_shape, np.uint8)
        padded[...] = fill
        padded[:small_height, :small_width] = small
        scores = np.asarray(scores_of(params, padded))[:small_height, :small_width]
        if (small_height, small_width) != (height, width):  # Back to the input's own size.
            scores = resize_bilinear(scores, (height, width))
        return np.argmax(scores, axis=-1).astype(np.uint8)

    return predict


def palette_png(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Mode "P" image: pixel values are the label ids, the [256, 3] palette colours them."""
    mask = Image.fromarray(labels.astype(np.uint8))  # Mode "L"; the palette makes it "P".
    mask.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
    return mask


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """image | image blended with the coloured labels, side by side."""
    colours = palette[labels]
    blend = (1 - _OVERLAY_ALPHA) * image + _OVERLAY_ALPHA * colours
    return np.concatenate([image, np.round(blend).astype(np.uint8)], axis=1)


def check_images(files: Sequence[str], max_pixels: int) -> Dict[str, str]:
    """{file: why it is skipped} from a cheap header check, before the slow restore."""
    problems = {}
    for file in files:
        try:
            with Image.open(file) as image:
                width, height = image.size
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            problems[file] = f"Cannot read image {file!r}: {error}"
            continue
        if width * height > max_pixels:
            problems[file] = (
                f"Image {file!r} is {width}x{height} = {width * height:,} pixels, more than "
                f"--max_pixels={max_pixels:,}: segmenting it would need memory in "
                "proportion. Downscale it, or raise --max_pixels if the device has the memory.")
    return problems


def predict_files(config: ml_collections.ConfigDict, params, files: Sequence[str],
                  output_dir: str, facts: Optional[dataset_facts.DatasetFacts] = None
                  ) -> Tuple[List[str], Dict[str, str]]:
    """Writes mask and overlay per file: (mask paths, {file: error} of files that failed).

    The masks take the dataset's own colours, from `facts` (else read from its builder).
    """
    predict = make_predict_fn(config, params)
    palette = (facts or _facts(config)).palette
    os.makedirs(output_dir, exist_ok=True)
    written, failed = [], {}
    for file in files:
        try:
            image = read_image(file)  # Fails on a truncated file that passed the header check.
        except InputError as error:
            logging.error("Skipping %s", error)
            failed[file] = str(error)
            continue
        labels = predict(image)
        stem = os.path.splitext(os.path.basename(file))[0]
        mask_path = os.path.join(output_dir, f"{stem}.png")
        palette_png(labels, palette).save(mask_path)
        Image.fromarray(overlay(image, labels, palette)).save(
            os.path.join(output_dir, f"{stem}_overlay.png"))
        logging.info("%s (%dx%d) → %s", file, image.shape[1], image.shape[0], mask_path)
        written.append(mask_path)
    return written, failed


def _facts(config: ml_collections.ConfigDict) -> dataset_facts.DatasetFacts:
    """Classes and palette from the builder's own metadata: predicting needs no prepared data."""
    return dataset_facts.load(config, dataset_info.builder(config))


def predict_path(config: ml_collections.ConfigDict, workdir: str, input_path: str,
                 output_dir: str, step: Union[None, int, str] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[List[str], Dict[str, str]]:
    """Finds the images, restores the checkpoint, segments the usable ones.

    Returns (mask paths written, {file: error} of the files skipped).
    """
    files = find_images(input_path)  # Before the (slow) restore: input errors come first.
    failed = check_images(files, max_pixels)
    for error in failed.values():
        logging.error("Skipping %s", error)
    usable = [file for file in files if file not in failed]
    if not usable:
        return [], failed
    facts = _facts(config)
    config = dataset_facts.with_num_classes(config, facts)
    params, step = evaluate.restore_params(config, workdir, step)
    logging.info("Segmenting %d images with step %d of %s.", len(usable), step, workdir)
    written, unreadable = predict_files(config, params, usable, output_dir, facts)
    return written, {**failed, **unreadable}


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    if FLAGS.max_pixels < 1:
        raise app.UsageError(f"--max_pixels={FLAGS.max_pixels} must be >= 1.")
    try:
        step = checkpointing.parse_step(FLAGS.step)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    try:
        config = config_checks.config_from_flag(FLAGS)
        written, failed = predict_path(config, FLAGS.workdir, FLAGS.input, FLAGS.output,
                                       step, FLAGS.max_pixels)
    except (InputError, evaluate.CheckpointError, config_checks.ConfigError,
            folder_files.FolderError) as error:
        sys.exit(f"Error: {error}")
    print(f"Wrote {len(written)} masks and overlays to {FLAGS.output}.")
    if failed:
        sys.exit(f"Error: skipped {len(failed)} of {len(written) + len(failed)} images:\n" +
                 "\n".join(f"  {error}" for error in failed.values()))


def _define_flags() -> None:
    """Defined here, not on import, so tests and other tools can import this module's functions."""
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
    flags.DEFINE_string("input", None, "An image, or a directory of JPEG/PNG images.")
    flags.DEFINE_string("output", None, "Directory for <stem>.png and <stem>_overlay.png.")
    flags.DEFINE_string("step", None, "Checkpoint step: a number, 'latest' (the default) or "
                        "'best' (best by config.best_checkpoint_metric).")
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS,
                         "Images with more pixels (width x height) are skipped, as their "
                         "activations may not fit in memory.")
    config_flags.DEFINE_config_file("config", None, "The run's training config (default: "
                                    "--workdir's config.json).", lock_config=True)
    flags.mark_flags_as_required(["config", "workdir", "input", "output"])


def run() -> None:
    _define_flags()
    cli.run(main, __name__, config_from_workdir=True)


if __name__ == "__main__":
    run()
