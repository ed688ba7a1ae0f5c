"""`python -m advseg_jax.predict`: palette masks and overlays at each image's own size."""

import io
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from advseg_jax import checkpointing
from advseg_jax import evaluate
from advseg_jax import models
from advseg_jax import predict
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax.data import class_info
from experiments import results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"segmentor.width": 8, "lambda_adv": 0.0}  # No adversary: the fastest state to build.


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """(config, workdir) with a step-0 checkpoint of fresh weights: predict needs no training."""
    from configs import default
    config = default.get_config()
    config.segmentor.width = 8
    config.lambda_adv = 0.0
    workdir = str(tmp_path_factory.mktemp("predict_run"))
    manager = checkpointing.manager(workdir, config)
    checkpointing.save(manager, 0, state_lib.create_train_state(config, sharding.make_mesh()))
    manager.wait_until_finished()
    manager.close()
    return config, workdir


@pytest.fixture
def images(tmp_path):
    """A PNG and a JPEG of sizes that are no multiple of the output stride, and a stray file."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (70, 41, 3), dtype=np.uint8)).save(folder / "b.JPG")
    (folder / "notes.txt").write_text("not an image")
    return str(folder)


def _predict_cli(workdir, images, output) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "advseg_jax.predict", "--config=configs/default.py",
         f"--workdir={workdir}", f"--input={images}", f"--output={output}",
         *results.override_flags(TINY)],
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
        timeout=300, check=False)


def test_cli_writes_palette_masks_and_overlays(checkpointed, images, tmp_path):
    _, workdir = checkpointed
    output = str(tmp_path / "out")
    result = _predict_cli(workdir, images, output)
    assert result.returncode == 0, result.stderr[-5000:]
    assert sorted(os.listdir(output)) == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
    palette = class_info.voc_palette()  # digit_scenes's metadata palette.
    for stem, (height, width) in (("a", (37, 53)), ("b", (70, 41))):
        with Image.open(os.path.join(output, f"{stem}.png")) as mask:
            assert mask.mode == "P" and mask.size == (width, height)
            assert np.array_equal(np.asarray(mask.getpalette(), np.uint8).reshape(-1, 3),
                                  palette[:len(mask.getpalette()) // 3])
            assert np.asarray(mask).max() < 11
        with Image.open(os.path.join(output, f"{stem}_overlay.png")) as overlay:
            assert overlay.mode == "RGB" and overlay.size == (2 * width, height)


def test_labels_are_the_segmentor_s_argmax(checkpointed, tmp_path):
    config, workdir = checkpointed
    params, step = evaluate.restore_params(config, workdir)
    assert step == 0
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    labels = predict.make_predict_fn(config, params)(image)
    logits = models.build_segmentor(config).apply(
        {"params": jax.device_get(params)}, jnp.asarray(image[None], jnp.float32), train=False)
    logits = jax.image.resize(logits, (1, 64, 96, logits.shape[-1]), "bilinear",
                              antialias=False)
    expected = np.asarray(jnp.argmax(logits[0], axis=-1))
    assert labels.shape == (64, 96) and labels.dtype == np.uint8
    assert np.mean(labels == expected) > 0.999  # Up to float ties.


def test_input_errors_name_the_path(checkpointed, images, tmp_path):
    config, workdir = checkpointed
    missing = str(tmp_path / "missing")
    with pytest.raises(predict.InputError, match="missing.*does not exist"):
        predict.find_images(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(predict.InputError, match=f"No images .* found in '{empty}'"):
        predict.find_images(str(empty))
    Image.new("RGB", (8, 8)).save(os.path.join(images, "a.jpeg"))
    with pytest.raises(predict.InputError, match="a.png.*a.jpeg|a.jpeg.*a.png"):
        predict.find_images(images)


def _add_bad_files(folder):
    """c.png: no image at all; d.jpg (40x40): a valid header, then truncated (decoding fails)."""
    with open(os.path.join(folder, "c.png"), "w") as f:
        f.write("not a png")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 40, 3), np.uint8)).save(
        buffer, format="JPEG")
    with open(os.path.join(folder, "d.jpg"), "wb") as f:
        f.write(buffer.getvalue()[:len(buffer.getvalue()) * 2 // 3])


def test_bad_and_oversized_files_are_skipped_and_the_others_written(checkpointed, images,
                                                                    tmp_path):
    config, workdir = checkpointed
    _add_bad_files(images)
    output = tmp_path / "out"
    # a.png is 53x37 = 1961 pixels, b.JPG 41x70 = 2870.
    written, failed = predict.predict_path(config, workdir, images, str(output),
                                           max_pixels=2500)
    assert written == [str(output / "a.png")]
    assert sorted(os.listdir(output)) == ["a.png", "a_overlay.png"]
    assert sorted(os.path.basename(f) for f in failed) == ["b.JPG", "c.png", "d.jpg"]
    assert "41x70 = 2,870 pixels, more than --max_pixels=2,500" in failed[
        os.path.join(images, "b.JPG")]
    assert "Cannot read image" in failed[os.path.join(images, "c.png")]
    assert "truncated" in failed[os.path.join(images, "d.jpg")]


def test_cli_writes_the_good_images_and_exits_1_naming_the_bad_one(checkpointed, images,
                                                                   tmp_path):
    _, workdir = checkpointed
    _add_bad_files(images)
    output = tmp_path / "out"
    result = _predict_cli(workdir, images, output)
    assert result.returncode == 1, result.stderr[-3000:]
    assert sorted(os.listdir(output)) == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
    assert "skipped 2 of 4 images" in result.stderr
    assert "c.png" in result.stderr.split("skipped 2 of 4")[-1]
    assert "d.jpg" in result.stderr.split("skipped 2 of 4")[-1]


def _interpolation_matrix(in_size, out_size):
    """[out, in] weights of half-pixel bilinear resampling, clamped at the edges (float64)."""
    weights = np.zeros((out_size, in_size))
    for out in range(out_size):
        source = (out + 0.5) * in_size / out_size - 0.5
        below = int(np.floor(source))
        fraction = source - below
        weights[out, min(max(below, 0), in_size - 1)] += 1 - fraction
        weights[out, min(max(below + 1, 0), in_size - 1)] += fraction
    return weights


@pytest.mark.parametrize("scale", [0.5, 0.37, 1.6])
def test_rescaled_is_bilinear_resampling_of_the_whole_image(scale):
    image = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    result = predict.rescaled(image, scale)
    height, width = round(37 * scale), round(53 * scale)
    assert result.shape == (height, width, 3) and result.dtype == np.uint8
    rows, cols = _interpolation_matrix(37, height), _interpolation_matrix(53, width)
    expected = np.einsum("ij,jkc,lk->ilc", rows, image.astype(np.float64), cols)
    difference = np.abs(result.astype(int) - np.round(expected))
    assert difference.max() <= 1  # float32 vs float64 at .5 rounding boundaries only.
    assert np.mean(difference == 0) > 0.99


def test_rescaled_matches_evaluation_s_tensorflow_rescale_exactly():
    """Evaluation rescaled with the tf.data augmentation (now tests/tf_augment.py) before the
    pipeline dropped TensorFlow; predict must match it."""
    tf = pytest.importorskip("tensorflow")
    import tf_augment as augment
    image = np.random.default_rng(4).integers(0, 256, (61, 45, 3), dtype=np.uint8)
    for scale in (0.5, 0.37, 1.6):
        expected, _ = augment.rescale(tf.constant(image), tf.zeros((61, 45, 1), tf.uint8), scale)
        np.testing.assert_array_equal(predict.rescaled(image, scale), expected.numpy())


@pytest.mark.parametrize("size", [(70, 41), (13, 9)])
def test_resize_bilinear_of_scores_matches_jax_image_resize(size):
    scores = np.random.default_rng(5).normal(size=(29, 17, 4)).astype(np.float32)
    expected = jax.image.resize(scores, (*size, 4), "bilinear", antialias=False)
    np.testing.assert_allclose(predict.resize_bilinear(scores, size), expected, atol=1e-5)


def test_rescaled_refuses_a_scale_that_is_not_positive():
    with pytest.raises(ValueError, match="input.image_scale must be > 0, got 0"):
        predict.rescaled(np.zeros((4, 4, 3), np.uint8), 0.0)
