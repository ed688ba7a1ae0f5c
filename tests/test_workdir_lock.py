"""The workdir lock: one run per workdir."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from advseg_jax import workdir_lock


def _write_lock(workdir, pid, host=None):
    holder = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00"}
    (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps(holder))


def _lock_holder(workdir):
    return json.loads((workdir / workdir_lock.LOCK_FILE).read_text())


def test_lock_is_held_during_the_block_and_released_after(tmp_path):
    with workdir_lock.locked(str(tmp_path)):
        assert _lock_holder(tmp_path)["pid"] == os.getpid()
        with pytest.raises(workdir_lock.WorkdirInUseError, match=f"process {os.getpid()}"):
            with workdir_lock.locked(str(tmp_path)):  # A second run (here: the same process).
                pass
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
    with pytest.raises(RuntimeError, match="crash"):
        with workdir_lock.locked(str(tmp_path)):
            raise RuntimeError("crash")
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()  # Released on errors too.


def test_live_holder_is_refused_naming_its_pid_and_host(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, sleeper.pid)
        with pytest.raises(workdir_lock.WorkdirInUseError) as error:
            with workdir_lock.locked(str(tmp_path)):
                pytest.fail("entered a locked workdir")
        message = str(error.value)
        assert f"in use by process {sleeper.pid} on host {socket.gethostname()}" in message
        assert "another --workdir" in message
        assert _lock_holder(tmp_path)["pid"] == sleeper.pid  # The holder keeps its lock.
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dead_holder_is_taken_over_with_a_warning(tmp_path, caplog):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    _write_lock(tmp_path, dead_pid)
    with caplog.at_level(logging.WARNING):
        with workdir_lock.locked(str(tmp_path)):
            assert _lock_holder(tmp_path)["pid"] == os.getpid()
    assert any(f"left by process {dead_pid}" in r.getMessage() and "no longer running" in
               r.getMessage() for r in caplog.records)


def test_own_pid_in_the_lock_is_stale(tmp_path):
    """A restarted container gets the same pid as the run that left the lock."""
    _write_lock(tmp_path, os.getpid())
    with workdir_lock.locked(str(tmp_path)):
        pass


def test_other_host_or_unreadable_lock_is_refused(tmp_path):
    _write_lock(tmp_path, 1, host="some-other-host")
    with pytest.raises(workdir_lock.WorkdirInUseError, match="process 1 on host some-other-host"):
        with workdir_lock.locked(str(tmp_path)):
            pass
    (tmp_path / workdir_lock.LOCK_FILE).write_text("{half")
    with pytest.raises(workdir_lock.WorkdirInUseError, match="exists but is unreadable"):
        with workdir_lock.locked(str(tmp_path)):
            pass
