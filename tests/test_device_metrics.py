"""device_metrics.StepMetrics: every step's metrics back, in order, from one fetch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advseg_jax import device_metrics
from advseg_jax import sharding


def _replicated_metrics(mesh, loss, flag):
    """Metrics as the train step returns them: scalars replicated over the mesh."""
    return sharding.replicate({"loss": np.float32(loss), "nonfinite_segmentor": np.float32(flag)},
                              mesh)


def test_fetch_returns_each_step_in_order_and_starts_over():
    mesh = sharding.make_mesh()
    rows = device_metrics.StepMetrics(capacity=4)
    rng = np.random.default_rng(0)
    losses = rng.normal(size=7).astype(np.float32)
    flags = (rng.random(7) < 0.5).astype(np.float32)
    for step in (1, 2, 3):
        rows.add(step, _replicated_metrics(mesh, losses[step - 1], flags[step - 1]))
    assert len(rows) == 3
    fetched = rows.fetch()
    assert [step for step, _ in fetched] == [1, 2, 3]
    assert [m["loss"] for _, m in fetched] == [float(v) for v in losses[:3]]
    assert [m["nonfinite_segmentor"] for _, m in fetched] == [float(v) for v in flags[:3]]
    assert len(rows) == 0 and rows.fetch() == []
    for step in (4, 5, 6, 7):  # The buffer is reused from row 0; stale rows are not returned.
        rows.add(step, _replicated_metrics(mesh, losses[step - 1], flags[step - 1]))
    fetched = rows.fetch()
    assert [step for step, _ in fetched] == [4, 5, 6, 7]
    assert [m["loss"] for _, m in fetched] == [float(v) for v in losses[3:]]


def test_non_finite_values_come_back_as_they_were():
    rows = device_metrics.StepMetrics(capacity=2)
    rows.add(1, {"loss": jnp.float32(np.nan)})
    rows.add(2, {"loss": jnp.float32(-np.inf)})
    values = [m["loss"] for _, m in rows.fetch()]
    assert np.isnan(values[0]) and values[1] == -np.inf


def test_adding_needs_no_transfer_to_the_host():
    rows = device_metrics.StepMetrics(capacity=3)
    metrics = {"loss": jnp.float32(2.5)}
    with jax.transfer_guard_device_to_host("disallow_explicit"):
        for step in (1, 2, 3):
            rows.add(step, metrics)
    assert [m["loss"] for _, m in rows.fetch()] == [2.5, 2.5, 2.5]


def test_a_full_buffer_refuses_another_step():
    rows = device_metrics.StepMetrics(capacity=1)
    rows.add(1, {"loss": jnp.float32(1.0)})
    with pytest.raises(RuntimeError, match="holds 1 steps; fetch them before adding step 2"):
        rows.add(2, {"loss": jnp.float32(1.0)})
    with pytest.raises(ValueError, match="at least one step, got 0"):
        device_metrics.StepMetrics(capacity=0)
