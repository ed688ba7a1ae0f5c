"""`python -m advseg_jax.main` refuses a busy workdir or another model's checkpoint in a few
lines, without a traceback, and without touching the workdir's files."""

import json
import os
import socket

import main_runs
from advseg_jax import checkpointing
from advseg_jax import sharding
from advseg_jax import train_step as steps


def _error_lines(log: str, name: str) -> list:
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    return lines[start:]


def test_a_workdir_in_use_is_refused_naming_the_process(tmp_path, data_dir):
    workdir = tmp_path / "busy"
    workdir.mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "earlier"}
    (workdir / "lock").write_text(json.dumps(holder))  # This test's process: alive.
    log = main_runs.run(workdir, data_dir, expect_rc=1)
    error = _error_lines(log, "WorkdirInUseError")
    assert f"in use by process {os.getpid()} on host {socket.gethostname()}" in error[0]
    assert "Traceback" not in log
    assert sorted(os.listdir(workdir)) == ["lock"]
    assert json.loads((workdir / "lock").read_text()) == holder


def test_another_model_s_checkpoint_is_refused_in_at_most_20_lines(tmp_path, data_dir):
    from configs import default
    workdir = tmp_path / "trained"
    config = default.get_config()  # As main_runs.TINY_FLAGS set it.
    config.segmentor.width = 8
    config.adversary.width_divisor = 16
    manager = checkpointing.manager(str(workdir), config)
    checkpointing.save(manager, 2, steps.create_train_state(config, sharding.make_mesh()))
    manager.wait_until_finished()
    manager.close()
    log = main_runs.run(workdir, data_dir, "--config.segmentor.width=16", expect_rc=1)
    error = _error_lines(log, "RestoreError")
    assert len(error) <= 20, "\n".join(error)
    text = "\n".join(error)
    assert "has shape (1, 1, 16, 11) in the checkpoint but (1, 1, 32, 11) with this config" in text
    assert "new --workdir" in text and "Traceback" not in log
    assert not (workdir / "config.json").exists()
    assert main_runs.checkpoint_steps(workdir) == [2]
