"""The workdir's own files: the lock, config.json and eval_history.jsonl.

One run per workdir: two runs on one workdir interleave their evaluations in
eval_history.jsonl, overwrite each other's config.json and race on the checkpoints. The lock
is a file (pid, host, start time) created atomically by process 0; it is removed when the run
ends, and a lock whose process is gone (SIGKILL, a crash) is taken over with a warning.

Importing this module does not import JAX: the results scripts read eval histories with it.
"""

import contextlib
import datetime
import json
import os
import socket
from typing import Iterator, List, Optional

from absl import logging

from advseg_jax import dicts

LOCK_FILE = "lock"
CONFIG_FILE = "config.json"
HISTORY_FILE = "eval_history.jsonl"
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


def read_config(workdir: str) -> Optional[dict]:
    """The config.json of the workdir's last run, None if there is none."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_config(workdir: str, config_json: str) -> None:
    """Atomic: a crash mid-write leaves the previous config.json, never half of one."""
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        f.write(config_json)
    os.replace(path + ".tmp", path)


def config_differences(given: dict, saved: dict) -> List[str]:
    """'key: given vs saved' for every flattened key whose value differs (JSON-ready dicts)."""
    given, saved = dicts.flatten(given), dicts.flatten(saved)
    return [f"{key}: {given.get(key)!r} vs {saved.get(key)!r}"
            for key in sorted(set(given) | set(saved)) if given.get(key) != saved.get(key)]


def read_jsonl(path: str) -> List[dict]:
    """The records of a JSON-lines file; an unreadable line (a run killed mid-write) is skipped
    with a warning naming the file and line, so one torn line does not hide all the others."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                logging.warning("Skipping unreadable line %d of %s (half-written?): %.80r",
                                number, path, line)
    return records


def evaluated_steps(workdir: str, split: str) -> set:
    """Steps with an eval record of `split` in the workdir's eval_history.jsonl."""
    return {r.get("step") for r in read_jsonl(os.path.join(workdir, HISTORY_FILE))
            if r.get("split") == split}
