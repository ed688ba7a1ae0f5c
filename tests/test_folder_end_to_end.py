"""A user's folder from training to scores and coloured PNGs, with only config.folder keys set
(tiny nets, a few steps): class names, colours and sizes all come from the folder."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from advseg_jax import config_checks
from advseg_jax import evaluate
from advseg_jax import evaluation
from advseg_jax import input_pipeline
from advseg_jax import predict
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train
from advseg_jax import train_step as steps
from advseg_jax.configs import folder as folder_config
from advseg_jax.data import dataset_facts
from advseg_jax.data import dataset_info
import test_cli

COLOURS = {(250, 200, 0): "sun", (0, 90, 0): "forest", (40, 40, 200): "lake"}
VOID = (0, 0, 0)
SIZE = (24, 32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for kind in ("images", "masks"):
            (root / kind / split).mkdir(parents=True)
        for i in range(count):
            ids = rng.integers(0, 4, SIZE)
            rgb = np.zeros((*SIZE, 3), np.uint8)
            for label, colour in enumerate([*COLOURS, VOID]):
                rgb[ids == label] = colour
            image = np.clip(rgb + rng.normal(0, 20, rgb.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{split}{i}.png")
            Image.fromarray(rgb).save(root / "masks" / split / f"{split}{i}.png")
    (root / "colors.txt").write_text("".join(f"{r} {g} {b} {name}\n"
                                             for (r, g, b), name in COLOURS.items()) +
                                     "0 0 0 void\n")
    config = folder_config.get_config()
    config.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.folder.root = str(root)
    config.folder.colors = str(root / "colors.txt")
    # Only to keep the test small: a tiny net, no adversary, two steps at half scale.
    config.segmentor.name = "digit_net"
    config.segmentor.width = 4
    config.lambda_adv = 0.0
    config.input.image_scale = 0.5
    config.input.crop_size = (12, 16)
    config.input.shuffle_buffer = 8
    config.batch_size = config.eval_batch_size = 2
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
    config.log_every_steps = 1
    config.num_train_eval_examples = 0
    config.num_image_summaries = 1
    workdir = str(tmp_path_factory.mktemp("run"))
    record = train.train_and_evaluate(config, workdir)
    return config, workdir, record, root


def test_training_scores_carry_the_user_s_class_names(trained):
    config, workdir, record, _ = trained
    names = list(COLOURS.values())
    assert record["class_names"] == names and len(record["per_class_iou"]) == 3
    with open(os.path.join(workdir, "eval_results.json")) as f:
        assert json.load(f)["class_names"] == names
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert saved["num_classes"] == 3  # From the names, not set by the user.
    assert saved["input"]["eval_size"] == [12, 16]  # The largest image, halved.
    assert config.num_classes == 0  # The caller's config is left as it was.
    result = evaluate.evaluate_checkpoint(config, workdir)
    assert result["class_names"] == names
    assert result["mean_iou"] == pytest.approx(record["mean_iou"], abs=1e-9)


def test_summary_strips_use_the_user_s_colours(trained):
    config, workdir, _, _ = trained
    config = dataset_facts.with_num_classes_from_builder(config)
    builder = input_pipeline.get_builder(config)
    config = config_checks.with_eval_size(config, builder)
    mesh = sharding.make_mesh()
    params, _ = evaluate.restore_params(config, workdir, None, mesh)
    segmentor, _ = state_lib.build_models(config)
    _, strips = evaluation.evaluate(config, steps.make_eval_step(config, mesh, segmentor),
                                    params, builder, mesh, "validation", num_images=1)
    width = config.input.eval_size[1]
    palette = dataset_info.palette(builder)
    truth, predicted = strips[0][:, width:2 * width], strips[0][:, 2 * width:]
    allowed = {*COLOURS, tuple(palette[255])}
    assert {tuple(c) for c in truth.reshape(-1, 3)} <= allowed
    assert {tuple(c) for c in predicted.reshape(-1, 3)} <= set(COLOURS)
    assert len({tuple(c) for c in truth.reshape(-1, 3)} & set(COLOURS)) == 3


def test_predicted_masks_have_each_image_s_own_size_and_the_user_s_palette(trained, tmp_path):
    config, workdir, _, _ = trained
    inputs = tmp_path / "new"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    sizes = {"odd": (23, 37), "tall": (50, 18)}
    for stem, size in sizes.items():
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            inputs / f"{stem}.jpg")
    written, failed = predict.predict_path(config, workdir, str(inputs), str(tmp_path / "out"))
    assert not failed and len(written) == 2
    for stem, (height, width) in sizes.items():
        with Image.open(tmp_path / "out" / f"{stem}.png") as mask:
            assert mask.mode == "P" and mask.size == (width, height)
            palette = np.asarray(mask.getpalette(), np.uint8).reshape(-1, 3)
            assert [tuple(c) for c in palette[:3]] == list(COLOURS)
            assert np.asarray(mask).max() < 3


def test_evaluate_and_predict_without_config_use_the_run_s_config_json(trained, tmp_path):
    """What `evaluate --workdir=DIR` and `predict --workdir=DIR ...` parse with no --config and
    none of the run's folder flags: the saved config finds the folder, classes and colours."""
    _, workdir, record, _ = trained
    config = test_cli.parse_config(["evaluate", f"--workdir={workdir}"])
    result = evaluate.evaluate_checkpoint(config, workdir)
    assert result["class_names"] == list(COLOURS.values())
    assert result["mean_iou"] == pytest.approx(record["mean_iou"], abs=1e-9)
    Image.fromarray(np.full((20, 28, 3), 90, np.uint8)).save(tmp_path / "photo.png")
    config = test_cli.parse_config(["predict", f"--workdir={workdir}"])
    written, failed = predict.predict_path(config, workdir, str(tmp_path / "photo.png"),
                                           str(tmp_path / "out"))
    assert not failed and len(written) == 1
    with Image.open(tmp_path / "out" / "photo.png") as mask:
        assert mask.size == (28, 20)
        palette = np.asarray(mask.getpalette(), np.uint8).reshape(-1, 3)
        assert [tuple(c) for c in palette[:3]] == list(COLOURS)
