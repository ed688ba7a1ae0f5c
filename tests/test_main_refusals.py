"""A busy workdir or another model's checkpoint is refused in a few lines (through
`python -m advseg_jax.main`: without a traceback), without touching the workdir's files."""

import json
import os
import socket
import subprocess
import sys

import pytest

import main_runs
from advseg_jax import checkpointing
from advseg_jax import sharding
from advseg_jax import train
from advseg_jax import state as state_lib
from advseg_jax import workdir_lock


def _error_lines(log: str, name: str) -> list:
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    return lines[start:]


def test_a_workdir_in_use_is_refused_naming_the_process(tiny_config, tmp_path):
    # The holder must be another live process: a lock naming this one is stale (a container
    # restarted with the same pid).
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        holder = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "earlier"}
        (tmp_path / "lock").write_text(json.dumps(holder))
        with pytest.raises(workdir_lock.WorkdirInUseError,
                           match=f"in use by process {sleeper.pid} on host {socket.gethostname()}"):
            train.train_and_evaluate(tiny_config, str(tmp_path))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(os.listdir(tmp_path)) == ["lock"]
    assert json.loads((tmp_path / "lock").read_text()) == holder


def test_another_model_s_checkpoint_is_refused_in_at_most_20_lines(tmp_path, data_dir):
    from configs import default
    workdir = tmp_path / "trained"
    config = default.get_config()  # As main_runs.TINY_FLAGS set it, but twice as wide.
    config.segmentor.width = 16
    config.adversary.width_divisor = 16
    manager = checkpointing.manager(str(workdir), config)
    checkpointing.save(manager, 2, state_lib.create_train_state(config, sharding.make_mesh()))
    manager.wait_until_finished()
    manager.close()
    log = main_runs.run(workdir, data_dir, expect_rc=1)
    error = _error_lines(log, "RestoreError")
    assert len(error) <= 20, "\n".join(error)
    text = "\n".join(error)
    assert "has shape (1, 1, 32, 11) in the checkpoint but (1, 1, 16, 11) with this config" in text
    assert "new --workdir" in text and "Traceback" not in log, log[-3000:]
    assert not (workdir / "config.json").exists()
    assert main_runs.checkpoint_steps(workdir) == [2]
