"""`python -m advseg_jax.evaluate` gives exactly the numbers of training's own evaluation."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from advseg_jax import evaluate
from advseg_jax import train
from advseg_jax.data import class_info
from experiments import results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Checkpoints and evaluations at steps 2 and 4; kept as overrides so the CLI gets the same.
# The baseline (no adversary) compiles fastest; evaluation never sees the adversary anyway.
TINY = {"batch_size": 4, "eval_batch_size": 64, "num_train_steps": 4, "log_every_steps": 2,
        "eval_every_steps": 2, "checkpoint_every_steps": 2, "num_train_eval_examples": 0,
        "num_image_summaries": 0, "segmentor.width": 8, "segmentor.warmup_steps": 0,
        "lambda_adv": 0.0, "input.shuffle_buffer": 64}


def make_config(data_dir):
    from configs import default
    config = default.get_config()
    for key, value in {**TINY, "data_dir": data_dir}.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """(config, workdir) of one tiny run, trained in this process (no import or start-up cost)."""
    config = make_config(data_dir)
    workdir = str(tmp_path_factory.mktemp("evaluate_run"))
    train.train_and_evaluate(config, workdir)
    return config, workdir


def _read_history(workdir):
    with open(os.path.join(workdir, "eval_history.jsonl")) as f:
        return [json.loads(line) for line in f]


def _training_eval(workdir, step):
    records = _read_history(workdir)
    return next(r for r in records if r["step"] == step and r["split"] == "validation")


def test_cli_equals_training_eval_results(trained, tmp_path):
    config, workdir = trained
    output = str(tmp_path / "scores.json")
    flags = results.override_flags({**TINY, "data_dir": config.data_dir})
    result = subprocess.run(
        [sys.executable, "-m", "advseg_jax.evaluate", "--config=configs/default.py",
         f"--workdir={workdir}", f"--output={output}", *flags],
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
        timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    printed = json.loads(result.stdout)  # stdout is exactly the JSON object.
    with open(output) as f:
        written = json.load(f)
    with open(os.path.join(workdir, "eval_results.json")) as f:
        expected = json.load(f)
    assert printed == written
    assert expected["step"] == 4
    for key, value in expected.items():
        assert written[key] == value, key  # Bit-identical: the same code on the same data.
    assert written["split"] == "validation"
    assert written["class_names"] == list(class_info.DIGIT_SCENES_CLASSES)
    # The per-class table on stderr: one line per class, named.
    for name, iou in zip(written["class_names"], written["per_class_iou"]):
        cell = "—" if iou is None else f"{100 * iou:.1f}"
        assert any(line.split()[-3:-1] == [name, cell] for line in result.stderr.splitlines()), name


def test_step_best_is_the_best_validation_step_of_the_history(trained):
    config, workdir = trained
    history = [r for r in _read_history(workdir) if r["split"] == "validation"]
    best = max(history, key=lambda r: (r["mean_iou"], -r["step"]))  # First of equal scores.
    scores = evaluate.evaluate_checkpoint(config, workdir, step="best")
    assert scores["step"] == best["step"]
    assert scores["mean_iou"] == best["mean_iou"]


def test_earlier_step_equals_that_step_s_training_eval(trained):
    config, workdir = trained
    scores = evaluate.evaluate_checkpoint(config, workdir, step=2)
    expected = _training_eval(workdir, 2)
    assert scores["step"] == 2
    for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "per_class_iou",
                "per_class_accuracy"):
        assert scores[key] == expected[key], key


def test_missing_checkpoints_name_the_workdir_and_steps(trained, tmp_path):
    config, workdir = trained
    empty = str(tmp_path / "empty")
    with pytest.raises(evaluate.CheckpointError, match=f"{empty}.*available steps: none"):
        evaluate.restore_params(config, empty)
    assert not os.path.exists(os.path.join(empty, "checkpoints"))  # Nothing created.
    with pytest.raises(evaluate.CheckpointError, match=r"step 3 .*available steps: \[2, 4\]"):
        evaluate.restore_params(config, workdir, step=3)


def test_wrong_config_names_the_differing_keys(trained):
    config, workdir = trained
    config = make_config(config.data_dir)
    config.segmentor.width = 16
    with pytest.raises(evaluate.CheckpointError, match=r"segmentor.width: 16 vs 8"):
        evaluate.restore_params(config, workdir)


def _cli(module, *flags) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"advseg_jax.{module}", *flags], cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300,
        check=False)


def test_cli_without_config_reads_the_run_s_config_json(trained, tmp_path):
    """No --config and no overrides repeated: DIR/config.json defines the run (the tiny net of
    width 8 that the default config's width could not restore)."""
    _, workdir = trained
    output = str(tmp_path / "scores.json")
    result = _cli("evaluate", f"--workdir={workdir}", "--step=2", f"--output={output}")
    assert result.returncode == 0, result.stderr[-5000:]
    with open(output) as f:
        written = json.load(f)
    expected = _training_eval(workdir, 2)
    assert written["step"] == 2
    for key in ("mean_iou", "pixel_accuracy", "per_class_iou"):
        assert written[key] == expected[key], key


def test_predict_cli_without_config_reads_the_run_s_config_json(trained, tmp_path):
    _, workdir = trained
    inputs = tmp_path / "photos"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)).save(inputs / "a.png")
    result = _cli("predict", f"--workdir={workdir}", f"--input={inputs}",
                  f"--output={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-5000:]
    with Image.open(tmp_path / "out" / "a.png") as mask:
        assert mask.mode == "P" and mask.size == (45, 30)
        assert np.asarray(mask).max() < len(class_info.DIGIT_SCENES_CLASSES)


def test_cli_without_config_or_config_json_names_the_missing_file(tmp_path):
    result = _cli("evaluate", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert str(tmp_path / "config.json") in result.stderr


def test_calibration_scores_the_pixels_of_training_s_evaluation(trained, tmp_path):
    """experiments/calibration.py sees the same pixels and argmax as the run's evaluation."""
    from experiments import calibration
    config, workdir = trained
    scores = calibration.calibrate_checkpoint(config, workdir)
    with open(os.path.join(workdir, "eval_results.json")) as f:
        expected = json.load(f)
    assert scores["step"] == expected["step"] == 4 and scores["split"] == "validation"
    np.testing.assert_allclose(scores["pixel_accuracy"], expected["pixel_accuracy"], atol=1e-9)
    assert 0 <= scores["ece"] <= 1 and scores["nll"] > 0
    output = str(tmp_path / "calibration.json")
    flags = results.override_flags({**TINY, "data_dir": config.data_dir})
    result = subprocess.run(
        [sys.executable, "experiments/calibration.py", f"--workdir={workdir}",
         f"--output={output}", *flags],  # No --config: the run's own config.json.
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
        timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    with open(output) as f:
        written = json.load(f)
    assert json.loads(result.stdout) == written
    assert written == pytest.approx(scores, rel=1e-6)
