"""Step metrics kept on the device until the log interval ends, then fetched in one transfer.

Reading a metric with `float()` each step makes the host wait for that step, so only one step
is ever in flight. Here every step's metrics are written into rows of a fixed-size device buffer
(one small dispatch, no transfer) and read back together at a log, checkpoint or evaluation
step; every step keeps its own row, so the non-finite checks still see each step.
"""

import functools
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnums=(1,))
def _first_row(metrics: dict, capacity: int) -> dict:
    # Built from the metrics, so the rows share their sharding (replicated over the mesh).
    return jax.tree.map(
        lambda value: jnp.zeros((capacity, *value.shape), value.dtype).at[0].set(value), metrics)


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_row(rows: dict, row: jax.Array, metrics: dict) -> dict:
    return jax.tree.map(lambda column, value: column.at[row].set(value), rows, metrics)


class StepMetrics:
    """Up to `capacity` steps' metric dicts, on the device until `fetch`."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"StepMetrics needs room for at least one step, got {capacity}.")
        self._capacity = capacity
        self._rows = None
        self._steps: List[int] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, step: int, metrics: Dict[str, jax.Array]) -> None:
        if len(self._steps) == self._capacity:
            raise RuntimeError(f"StepMetrics holds {self._capacity} steps; fetch them before "
                               f"adding step {step}.")
        if self._rows is None:
            self._rows = _first_row(metrics, self._capacity)
        else:
            self._rows = _write_row(self._rows, np.int32(len(self._steps)), metrics)
        self._steps.append(step)

    def fetch(self) -> List[Tuple[int, Dict[str, float]]]:
        """(step, {name: float}) of every step added since the last fetch, in order."""
        if not self._steps:
            return []
        columns = jax.device_get(self._rows)  # One transfer per metric, for all the steps.
        fetched = [(step, {name: float(column[row]) for name, column in columns.items()})
                   for row, step in enumerate(self._steps)]
        self._steps = []
        return fetched
