"""Bad configs fail at start with the key, the value and the valid options."""

import subprocess
import sys

import numpy as np
import pytest

from advseg_jax.config_checks import ConfigError
from advseg_jax.config_checks import check_input_sizes
from advseg_jax.config_checks import check_labels
from advseg_jax.config_checks import largest_image
from advseg_jax.config_checks import size_multiple
from advseg_jax.config_checks import validate_config
from dataset_records import records


@pytest.mark.parametrize("key, value, message", [
    ("lambda_adv", -1.0, "lambda_adv=-1.0 must be >= 0"),
    ("segmentor.name", "unet", "segmentor.name='unet'; valid options: .*digit_net"),
    ("adversary.name", "patchgan", "adversary.name='patchgan'; valid options: .*largefov"),
    ("adversary.encoding", "onehot", "adversary.encoding='onehot'; valid options: .*product"),
    ("adversarial_loss", "wgan", "adversarial_loss='wgan'; valid options"),
    ("batch_size", 3, "batch_size=3 must be a positive multiple of the device count \\(2\\)"),
    ("adversary.tau", 1.5, "adversary.tau=1.5 must lie in"),
    ("segmentor.conv_algorithm", "fft", "segmentor.conv_algorithm='fft'; valid options: .*taps"),
])
def test_bad_values(tiny_config, key, value, message):
    section, _, name = key.rpartition(".")
    (tiny_config[section] if section else tiny_config)[name] = value
    with pytest.raises(ValueError, match=message):
        validate_config(tiny_config)


def test_defaults_are_valid(tiny_config):
    validate_config(tiny_config)


def test_unknown_override_key_fails_at_start_naming_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "advseg_jax.main", "--config=configs/default.py",
         f"--workdir={tmp_path}", "--config.adversary.encodingg=product"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "encodingg" in result.stderr and "encoding" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_config_file_not_found_names_the_path(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "advseg_jax.main", "--config=configs/nope.py",
         f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--config=configs/nope.py: config file 'configs/nope.py' not found" in result.stderr
    assert "config_config" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("config_name, key, size, message", [
    ("stanford_background", "crop_size", (10, 10),
     r"input.crop_size=\(10, 10\): segmentor 'multiscale' downsamples by 16, so each side must "
     r"be a multiple of 16. Use e.g. --config.input.crop_size='\(16, 16\)'"),
    ("default", "crop_size", (4, 4), r"input.crop_size=\(4, 4\): it is too small for segmentor "
     r"'digit_net' and adversary 'stanford': the output of layer adversary/\w+ would be empty"),
    ("default", "eval_size", (50, 48), r"input.eval_size=\(50, 48\).*\(52, 48\)"),
    ("voc", "crop_size", (8, 8), r"too small for segmentor 'dilated8' and adversary 'largefov'"),
])
def test_sizes_the_networks_cannot_take_are_refused(config_name, key, size, message):
    import importlib
    config = importlib.import_module(f"configs.{config_name}").get_config()
    config.input[key] = size
    with pytest.raises(ConfigError, match=message):
        check_input_sizes(config)


@pytest.mark.parametrize("config_name, multiple", [
    ("default", 4), ("stanford_background", 16), ("voc", 8)])
def test_shipped_configs_pass_and_multiples_match_the_architectures(config_name, multiple):
    import importlib
    config = importlib.import_module(f"configs.{config_name}").get_config()
    check_input_sizes(config)
    # digit_net pools twice; multiscale pools twice on a 1/4 pyramid level; Dilated-8 is stride 8.
    assert size_multiple(config) == multiple


def test_labels_beyond_num_classes_are_refused_naming_value_and_dataset(tiny_config):
    labels = np.zeros((2, 4, 4), np.int32)
    labels[0, 0, 0], labels[1, 1, 1] = 255, 10
    check_labels(labels, tiny_config, step=1)  # 10 < 11 classes; 255 is void.
    labels[1, 2, 2] = 12
    with pytest.raises(ConfigError, match=r"step 7 has label id\(s\) \[12\] in dataset "
                                          r"'digit_scenes', but num_classes=11"):
        check_labels(labels, tiny_config, step=7)


def test_largest_image_scans_headers_when_sizes_vary(tmp_path):
    from advseg_jax import prepare_data
    from advseg_jax.data.dummy_data import make_dummy_data as dummy
    builder = prepare_data.prepare("stanford_background/fold0", str(tmp_path),
                                   str(dummy.DUMMY_DIR / "stanford_background"))
    shapes = [ex["image"].shape for ex in records(builder, "train")]
    expected = (max(s[0] for s in shapes), max(s[1] for s in shapes))
    assert largest_image(builder, "train") == expected
    first_two = [ex["image"].shape
                 for ex in records(builder, "train", 2)]
    assert largest_image(builder, "train", 2) == (max(s[0] for s in first_two),
                                                  max(s[1] for s in first_two))
