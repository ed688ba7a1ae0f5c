"""Bad configs fail at start with the key, the value and the valid options."""

import subprocess
import sys

import pytest

from advseg_jax.config_checks import validate_config


@pytest.mark.parametrize("key, value, message", [
    ("lambda_adv", -1.0, "lambda_adv=-1.0 must be >= 0"),
    ("segmentor.name", "unet", "segmentor.name='unet'; valid options: .*digit_net"),
    ("adversary.name", "patchgan", "adversary.name='patchgan'; valid options: .*largefov"),
    ("adversary.encoding", "onehot", "adversary.encoding='onehot'; valid options: .*product"),
    ("adversarial_loss", "wgan", "adversarial_loss='wgan'; valid options"),
    ("batch_size", 3, "batch_size=3 must be a positive multiple of the device count \\(2\\)"),
    ("adversary.tau", 1.5, "adversary.tau=1.5 must lie in"),
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
