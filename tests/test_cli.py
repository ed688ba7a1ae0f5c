"""`cli.with_workdir_config`: a trained run's own config.json stands in for a missing --config."""

import json
import os
import subprocess
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from advseg_jax import cli
from advseg_jax.configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_config(argv) -> ml_collections.ConfigDict:
    """The config a CLI gets from `argv` (after `with_workdir_config`), parsed by the same
    ml_collections flag on a private flag registry, so no process is spawned. ml_collections
    reads `--config.KEY` overrides from the process's own argv, here the user's `argv`."""
    registry = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=registry, lock_config=True,
                                    sys_argv=list(argv))
    flags.DEFINE_string("workdir", None, "", flag_values=registry)
    registry(cli.with_workdir_config(argv))
    return registry.config


@pytest.fixture
def run_dir(tmp_path):
    """A workdir whose config.json is the default config with a few keys changed, as
    training writes it (tuples become JSON lists)."""
    config = default.get_config()
    config.num_train_steps = 7
    config.input.crop_size = (32, 40)
    config.segmentor.width = 5
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=1))
    return tmp_path


def test_the_saved_config_is_the_run_s_config_with_its_tuples(run_dir):
    config = parse_config(["tool", f"--workdir={run_dir}"])
    saved = json.loads((run_dir / "config.json").read_text())
    assert json.loads(config.to_json_best_effort()) == saved
    assert config.num_train_steps == 7 and config.segmentor.width == 5
    assert config.input.crop_size == (32, 40)  # A tuple again, as the shipped configs have it.
    assert isinstance(config.input.fill_rgb, tuple)


def test_overrides_apply_on_top_of_the_saved_config(run_dir):
    config = parse_config(["tool", "--workdir", str(run_dir), "--config.segmentor.width=9",
                           "--config.input.crop_size=(16,24)"])
    assert config.segmentor.width == 9
    assert config.input.crop_size == (16, 24)
    assert config.num_train_steps == 7  # Untouched keys keep the run's values.


def test_keys_added_since_the_run_take_their_defaults(run_dir):
    """A run saved before a key existed still reads: the key takes today's default (which
    keeps the earlier behaviour), and everything the run saved stays as saved."""
    saved = json.loads((run_dir / "config.json").read_text())
    del saved["segmentor"]["width_divisor"], saved["accumulation_loop"]
    (run_dir / "config.json").write_text(json.dumps(saved))
    config = parse_config(["tool", f"--workdir={run_dir}"])
    assert config.segmentor.width_divisor == default.get_config().segmentor.width_divisor == 1
    assert config.accumulation_loop == default.get_config().accumulation_loop
    assert config.segmentor.width == 5 and config.num_train_steps == 7


def test_a_given_config_is_used_not_the_saved_one(run_dir):
    argv = ["tool", "--config=configs/default.py", f"--workdir={run_dir}"]
    assert cli.with_workdir_config(argv) == argv
    assert parse_config(argv).num_train_steps == default.get_config().num_train_steps


def test_without_config_json_the_error_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli.with_workdir_config(["tool", f"--workdir={tmp_path}"])
    message = str(exit_.value)
    assert str(tmp_path / "config.json") in message and "--config=FILE" in message


def test_without_workdir_or_with_help_argv_is_unchanged():
    assert cli.with_workdir_config(["tool", "--step=2"]) == ["tool", "--step=2"]
    assert cli.with_workdir_config(["tool", "--workdir=/nonexistent", "--help"]) == [
        "tool", "--workdir=/nonexistent", "--help"]


def test_an_unreadable_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(Exception, match="config.json"):
        _ = parse_config(["tool", f"--workdir={tmp_path}"]).seed


def test_benchmark_reads_the_workdir_s_config_json(tmp_path):
    """The saved config reaches benchmark's config checks: its (invalid) λ is the one reported,
    which stops the run before anything is compiled."""
    config = default.get_config()
    config.lambda_adv = -1.0
    (tmp_path / "config.json").write_text(config.to_json_best_effort())
    result = subprocess.run(
        [sys.executable, "-m", "advseg_jax.benchmark", f"--workdir={tmp_path}"], cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300,
        check=False)
    assert result.returncode != 0
    assert "lambda_adv=-1.0 must be >= 0" in result.stderr, result.stderr[-3000:]
