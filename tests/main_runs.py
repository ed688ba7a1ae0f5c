"""Bounded `python -m advseg_jax.main` subprocesses, and their checkpoints read back as numpy.

Shared by the multi-process and resume tests. Every subprocess inherits the session's persistent
XLA compilation cache (tests/conftest.py) and caches even its quick compilations there:
identical programs then compile once (a run drops from ~25 s to ~10 s), and a cached executable
is the same machine code, so bit-identity holds.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from advseg_jax import fast_compile

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240  # Per run; a hung coordinator or collective fails the test, never the suite.
NUM_STEPS = 12
# Long enough (12 steps, an eval at the end) that a kill after the first checkpoint lands mid-run.
TINY_FLAGS = (
    "--config=configs/default.py",
    "--config.batch_size=4",
    f"--config.num_train_steps={NUM_STEPS}",
    "--config.segmentor.width=8",
    "--config.adversary.width_divisor=16",
    "--config.log_every_steps=1",
    f"--config.eval_every_steps={NUM_STEPS}",
    "--config.checkpoint_every_steps=2",
    "--config.num_train_eval_examples=8",
    "--config.input.shuffle_buffer=64",
)

_REFERENCE_RUNS: Dict[str, Path] = {}


def _env(devices: int) -> dict:
    env = dict(os.environ)
    fast = fast_compile.kept_from(env.get("XLA_FLAGS", ""))  # The suite's (conftest).
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {fast}",
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    return env


def start(workdir: Path, data_dir: str, *overrides: str, devices: int = 2,
          process: Optional[Tuple[str, int, int]] = None) -> subprocess.Popen:
    """Starts main; stdout+stderr go to `<workdir>[.p<process>].log`, outside the workdir."""
    command = [sys.executable, "-m", "advseg_jax.main", f"--workdir={workdir}", *TINY_FLAGS,
               f"--config.data_dir={data_dir}", *overrides]
    if process is not None:
        address, count, index = process
        command += [f"--coordinator_address={address}", f"--num_processes={count}",
                    f"--process_id={index}"]
    # Appended: a restart's log follows the interrupted run's. The child keeps its descriptor.
    with open(_log_path(command), "a") as log:
        return subprocess.Popen(command, cwd=REPO, env=_env(devices),
                                stdout=log, stderr=subprocess.STDOUT)


def _log_path(command: Sequence[str]) -> str:
    workdir = next(a for a in command if a.startswith("--workdir=")).split("=", 1)[1]
    index = next((a.split("=", 1)[1] for a in command if a.startswith("--process_id=")), None)
    return f"{workdir}.log" if index is None else f"{workdir}.p{index}.log"


def log_text(proc: subprocess.Popen) -> str:
    return Path(_log_path(proc.args)).read_text()


def wait(procs: Sequence[subprocess.Popen], timeout: float = TIMEOUT_S) -> List[int]:
    """Return codes; on a timeout or a failed peer, kills them all (a peer would wait forever)."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"main did not finish in {timeout} s.\n" + tails(procs))
            if len(procs) > 1 and any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
    finally:
        kill(procs)
    return [p.returncode for p in procs]


def kill(procs: Sequence[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def tails(procs: Sequence[subprocess.Popen], chars: int = 4000) -> str:
    return "\n".join(f"--- {_log_path(p.args)} (rc {p.returncode}) ---\n{log_text(p)[-chars:]}"
                     for p in procs)


def run(workdir: Path, data_dir: str, *overrides: str, expect_rc: Optional[int] = 0) -> str:
    """Runs main to the end in one process with two devices; returns its log."""
    proc = start(workdir, data_dir, *overrides)
    (rc,) = wait([proc])
    if expect_rc is not None:
        assert rc == expect_rc, tails([proc])
    return log_text(proc)


def reference_run(basetemp: Path, data_dir: str) -> Path:
    """One uninterrupted run per session (1 process, 2 devices), shared by the test modules."""
    key = str(basetemp)
    if key not in _REFERENCE_RUNS:
        workdir = Path(basetemp) / "reference_run" / "workdir"
        workdir.parent.mkdir(parents=True, exist_ok=True)
        run(workdir, data_dir)
        _REFERENCE_RUNS[key] = workdir
    return _REFERENCE_RUNS[key]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint_steps(workdir: Path) -> List[int]:
    """Complete checkpoints only: orbax renames `<step>.orbax-checkpoint-tmp` when done."""
    directory = Path(workdir) / "checkpoints"
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def temporary_checkpoints(workdir: Path) -> List[str]:
    return sorted(p.name for p in (Path(workdir) / "checkpoints").iterdir()
                  if ocp.step.TMP_DIR_SUFFIX in p.name)


def wait_for_checkpoint(workdir: Path, proc: subprocess.Popen,
                        timeout: float = TIMEOUT_S) -> int:
    """Polls until the run has written a complete checkpoint; returns its step."""
    deadline = time.monotonic() + timeout
    while not checkpoint_steps(workdir):
        if proc.poll() is not None or time.monotonic() > deadline:
            kill([proc])
            raise AssertionError("No checkpoint appeared.\n" + tails([proc]))
        time.sleep(0.01)
    return checkpoint_steps(workdir)[-1]


def restore(workdir: Path, step: int) -> dict:
    """The saved `AdvSegState` as a nested dict of numpy arrays (no model, no mesh needed)."""
    path = Path(workdir) / "checkpoints" / str(step) / "default"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, restore_args=restore_args)


def leaves_with_paths(tree: dict) -> List[Tuple[str, np.ndarray]]:
    return [(jax.tree_util.keystr(path), np.asarray(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]
