"""Entry point: `python -m advseg_jax.main --config=configs/default.py --workdir=DIR`.

Installed, the same program is the `advseg-train` console script, and a shipped config can be
named: `advseg-train --config=default --workdir=DIR`.
"""

import datetime
import logging as python_logging
import os
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from advseg_jax import checkpointing
from advseg_jax import cli
from advseg_jax import compilation_cache
from advseg_jax import config_checks
from advseg_jax import distributed
from advseg_jax import host_info
from advseg_jax import memory_fit
from advseg_jax import train
from advseg_jax import workdir_io
from advseg_jax import workdir_lock
from advseg_jax.data import folder_files

# Refusals whose message says all (what is wrong, what to do): printed without a traceback.
REFUSALS = (config_checks.ConfigError, checkpointing.RestoreError,
            workdir_lock.WorkdirInUseError, folder_files.FolderError,
            memory_fit.MemoryFitError)

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "HOST:PORT of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_orbax(record) -> bool:
    """Orbax logs every save's internals at INFO; keep its warnings, drop the rest.

    Also dropped: its warning on each save without scores, which by design are all saves but
    those of a new best step (`checkpointing.py`).
    """
    if "orbax" not in record.pathname:
        return True
    return (record.levelno >= python_logging.WARNING
            and "did not provide metrics" not in record.getMessage())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_quiet_orbax)
    try:
        config = config_checks.config_from_flag(flags.FLAGS)
        compilation_cache.configure(config.compilation_cache_dir)  # Before any compilation.
        cli.hide_accelerators_from_tensorflow()
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s).",
                     jax.__version__, jax.process_index(), jax.process_count(),
                     jax.local_device_count(), jax.device_count(), jax.devices()[0].device_kind)
        revision = workdir_io.write_revision(_WORKDIR.value)
        _train_as_segment(config, _WORKDIR.value, revision)
    except REFUSALS as error:
        sys.exit(f"{type(error).__name__}: {error}")


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _train_as_segment(config, workdir: str, revision: str) -> None:
    """Trains, and records this start and its end in `segments.jsonl` (process 0 only).

    A study's report must say what each run cost and where it ran, and a run resumed after a
    preemption has several such segments; recording them here keeps that out of shell notes.
    A segment killed outright (SIGKILL, a lost machine) has a start and no end.
    """
    record = jax.process_index() == 0
    if record:
        device = jax.devices()[0]
        workdir_io.append_segment_event(workdir, {
            "start": _utc_now(),
            "command": shlex.join(["python", "-m", "advseg_jax.main", *sys.argv[1:]]),
            "revision": revision,
            "host": {"cpu": host_info.cpu_model(), "usable_cpus": host_info.usable_cpus(),
                     "devices": f"{jax.device_count()} x {device.device_kind}",
                     "processes": jax.process_count()}})
    started = time.monotonic()
    outcome = "crashed"
    try:
        train.train_and_evaluate(config, workdir)
        step = workdir_io.latest_checkpoint_step(workdir)
        outcome = ("finished" if step == config.num_train_steps
                   else f"stopped by SIGTERM at step {step}")
    except REFUSALS as error:
        outcome = f"refused: {type(error).__name__}"
        raise
    except BaseException as error:  # Recorded, then re-raised unchanged.
        outcome = f"crashed: {type(error).__name__}"
        raise
    finally:
        if record:
            workdir_io.append_segment_event(workdir, {
                "end": _utc_now(), "wall_s": round(time.monotonic() - started, 1),
                "outcome": outcome})


def run():
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
