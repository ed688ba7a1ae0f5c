"""The workdir lock: one run per workdir.

One run per workdir: two runs on one workdir interleave their evaluations in
eval_history.jsonl, overwrite each other's config.json and race on the checkpoints. The lock
is a file (pid, host, start time) created atomically by process 0; it is removed when the run
ends, and a lock whose process is gone (SIGKILL, a crash) is taken over with a warning.

The lock file's name is `workdir_io.LOCK`, with the other files of the workdir's format.
"""

import contextlib
import datetime
import json
import os
import socket
from typing import Iterator, Optional

from absl import logging

from advseg_jax import workdir_io

LOCK_FILE = workdir_io.LOCK
# Locks this process holds: its own pid in a lock file is stale (a restarted container reuses
# pids) unless it is one of these.
_HELD = set()


class WorkdirInUseError(RuntimeError):
    """Another live run holds the workdir's lock (the message names its pid and host)."""


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs on this host (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's process: alive.
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read_lock(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) and "pid" in holder else None
    except (OSError, ValueError):
        return None


def _in_use_message(path: str, holder: Optional[dict]) -> str:
    if holder is None:
        return (f"Workdir lock {path} exists but is unreadable, so another run may be using "
                f"this workdir. If no run uses it, delete {path} and start again.")
    return (f"Workdir {os.path.dirname(path)} is in use by process {holder['pid']} on host "
            f"{holder.get('host')} (started {holder.get('started')}); one run per workdir. "
            f"Wait for it to end, stop it, or use another --workdir. If that process has "
            f"ended (e.g. its machine died), delete {path}.")


def _try_lock(path: str) -> Optional[str]:
    """Creates the lock file; None on success, else why the workdir is in use."""
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            stale = (holder is not None and holder.get("host") == me["host"]
                     and os.path.abspath(path) not in _HELD
                     and (holder["pid"] == me["pid"] or not _process_alive(int(holder["pid"]))))
            if not stale:
                return _in_use_message(path, holder)
            logging.warning("Taking over workdir lock %s left by process %s on %s (started %s), "
                            "which is no longer running.", path, holder["pid"], holder["host"],
                            holder.get("started"))
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        with os.fdopen(descriptor, "w") as f:
            json.dump(me, f)
        _HELD.add(os.path.abspath(path))
        return None
    return _in_use_message(path, _read_lock(path))


def _release(path: str) -> None:
    _HELD.discard(os.path.abspath(path))
    holder = _read_lock(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        os.remove(path)


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds `workdir/lock` for the block; raises WorkdirInUseError if a live run holds it.

    Process 0 alone locks (the workdir is shared by every host); it tells the other processes
    whether it could, so all of them stop together.
    """
    import jax  # Not at import time: see the module docstring.
    from jax.experimental import multihost_utils
    import numpy as np

    path = os.path.join(workdir, LOCK_FILE)
    error = _try_lock(path) if jax.process_index() == 0 else None
    if jax.process_count() > 1:
        failed = bool(multihost_utils.broadcast_one_to_all(np.array(error is not None)))
        if failed and error is None:
            error = f"Process 0 could not lock workdir {workdir}; see its log."
    if error:
        raise WorkdirInUseError(error)
    try:
        yield
    finally:
        if jax.process_index() == 0:
            _release(path)
