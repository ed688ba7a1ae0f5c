"""Training progress in the log and in TensorBoard: steps/s, ETA, time spent per named part.

Replaces clu's `periodic_actions.ReportProgress`, which imports TensorFlow. Same interface
(`report(step, t)` after every step, `with report.timed("eval"):`), same TensorBoard tags
(`steps_per_sec`, `uptime`); the log line is

    Progress: 3.2 steps/s, 45.0% (450/1000), ETA 2m52s (uptime 2m21s: 4.1% checkpoint, 9.8% eval)
"""

import concurrent.futures
import contextlib
import threading
import time
from typing import Callable, Dict, Iterator, Optional

import jax
import jax.numpy as jnp
from absl import logging


def format_seconds(seconds: float) -> str:
    """123456.7 → '1d10h17m36s'; leading zero units are left out ('0s' at least)."""
    whole = max(int(round(seconds)), 0)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size or parts:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts) + f"{whole}s"


@jax.jit
def _barrier(x: jax.Array) -> jax.Array:
    return x * x


class ReportProgress:
    """Reports every `every_steps` steps, after `every_secs` without a report, and at the end.

    The rate is that of the steps since the last report, and the ETA assumes it holds: an
    evaluation inside the interval lowers both, as it lengthens the real remaining time.
    """

    def __init__(self, *, num_train_steps: Optional[int] = None, writer=None,
                 every_steps: Optional[int] = None, every_secs: Optional[float] = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._num_train_steps = num_train_steps if num_train_steps and num_train_steps > 0 else None
        self._writer = writer
        self._every_steps = every_steps
        self._every_secs = every_secs
        self._clock = clock
        self._start = clock()
        self._previous: Optional[tuple] = None  # (step, t) of the last report.
        self._time_per_part: Dict[str, float] = {}
        self._lock = threading.Lock()  # `timed` adds to the parts from the helper thread.
        # One worker: the barrier waits of `timed` run in order, off the training thread.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def __call__(self, step: int, t: Optional[float] = None) -> bool:
        """Call after every step; returns whether it reported. The first call only starts."""
        t = self._clock() if t is None else t
        if self._previous is None:
            self._previous = (step, t)
            return False
        previous_step, previous_t = self._previous
        due = (step != previous_step and (
            (self._every_steps and step % self._every_steps == 0)
            or (self._every_secs is not None and t - previous_t > self._every_secs)
            or step == self._num_train_steps))
        if not due:
            return False
        self._report(step, (step - previous_step) / max(t - previous_t, 1e-9))
        self._previous = (step, t)
        return True

    def _report(self, step: int, steps_per_sec: float) -> None:
        message = f"{steps_per_sec:.1f} steps/s"
        if self._num_train_steps:
            eta = (self._num_train_steps - step) / steps_per_sec
            message += (f", {100 * step / self._num_train_steps:.1f}% "
                        f"({step}/{self._num_train_steps}), ETA {format_seconds(eta)}")
        uptime = self._clock() - self._start
        with self._lock:
            parts = sorted(self._time_per_part.items())
        if parts:
            message += f" (uptime {format_seconds(uptime)}: " + ", ".join(
                f"{100 * seconds / max(uptime, 1e-9):.1f}% {name}" for name, seconds in parts) + ")"
        logging.info("Progress: %s", message)
        if self._writer is not None:
            self._writer.write_scalars(step, {"steps_per_sec": steps_per_sec})
            self._writer.write_scalars(step, {"uptime": uptime})

    @contextlib.contextmanager
    def timed(self, name: str, wait_jax_async_dispatch: bool = True) -> Iterator[None]:
        """Adds the time of the block to part `name` of the report.

        With `wait_jax_async_dispatch` the part runs from the end of the device work queued
        before the block to the end of the work queued inside it (a tiny computation after
        each is awaited on a helper thread, so the training thread never blocks); without, it
        is the Python wall time of the block.
        """
        if not wait_jax_async_dispatch:
            start = self._clock()
            yield
            self._add(name, self._clock() - start)
            return

        def wait(barrier: jax.Array) -> float:
            barrier.block_until_ready()
            return self._clock()

        started = self._executor.submit(wait, _barrier(jnp.zeros(())))
        yield
        ended = self._executor.submit(wait, _barrier(jnp.zeros(())))
        ended.add_done_callback(lambda done: self._add(name, done.result() - started.result()))

    def _add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._time_per_part[name] = self._time_per_part.get(name, 0.0) + seconds
