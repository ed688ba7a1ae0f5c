"""bench/side_by_side.py's parts: the revision export and the worker's config overrides."""

import importlib.util
import os

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_config_applies_overrides_and_skips_unknown_keys():
    worker = _load("_step_worker")
    path = os.path.join(_ROOT, "configs", "default.py")
    config = worker._config(path, "baseline", ["batch_size=4", "input.crop_size=(32, 40)",
                                               "no_such_key_in_this_tree=1"])
    assert config.batch_size == 4 and tuple(config.input.crop_size) == (32, 40)
    assert config.lambda_adv == 0 and "no_such_key_in_this_tree" not in config
    config = worker._config(path, "adversarial", ["lambda_adv=0.0"])
    assert config.lambda_adv == 0.5  # The adversarial variant always runs an adversary.


def test_export_unpacks_the_revision_and_rejects_unknown_ones(tmp_path):
    if not os.path.isdir(os.path.join(_ROOT, ".git")) and not os.path.isfile(
            os.path.join(_ROOT, ".git")):
        pytest.skip("not a git checkout")
    side_by_side = _load("side_by_side")
    side_by_side._export("HEAD", str(tmp_path))
    assert os.path.isfile(tmp_path / "advseg_jax" / "train_step.py")
    with pytest.raises(SystemExit, match="--rev='no-such-revision'"):
        side_by_side._export("no-such-revision", str(tmp_path))
