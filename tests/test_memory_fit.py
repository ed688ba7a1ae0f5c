"""The microbatch is chosen from the compiled step's memory analysis; impossible cases stop early
with a short error; an out-of-memory while running becomes that error, not a trace."""

import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from advseg_jax import config_checks
from advseg_jax import memory_fit
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(config):
    config.batch_size, config.input.crop_size = 8, (48, 48)
    mesh = sharding.make_mesh(jax.devices()[:1])
    segmentor, adversary = state_lib.build_models(config)
    state = state_lib.create_train_state(config, mesh)
    rng = np.random.default_rng(0)
    batch = sharding.global_batch({
        "image": rng.integers(0, 256, (8, 48, 48, 3), dtype=np.uint8),
        "label": rng.integers(0, config.num_classes, (8, 48, 48)).astype(np.int32)}, mesh)
    return steps.make_train_step(config, mesh, segmentor, adversary), state, batch


def test_automatic_choice_is_the_largest_microbatch_whose_compiled_step_fits(tiny_config):
    step, state, batch = _setup(tiny_config)
    needs = {size: memory_fit.estimated_peak_bytes(step.build(size).lower(state, batch).compile())
             for size in (8, 4, 2)}
    assert needs[8] > needs[4] > needs[2] > 0  # One microbatch's activations alive, not all.
    # A limit between the needs of 2 and 4 images (after the safety margin): 2 must be chosen.
    limit = (needs[2] + needs[4]) / 2 / (1 - memory_fit.SAFETY_MARGIN)
    tiny_config.memory_limit_gb = limit / memory_fit.GB
    step.compile(state, batch)
    choice = step.choice
    assert choice["microbatch_size"] == 2 and choice["num_microbatches"] == 4
    assert choice["estimated_peak_memory_gb"] == pytest.approx(needs[2] / memory_fit.GB)
    assert choice["memory_limit_source"] == "config.memory_limit_gb"
    assert choice["estimated_peak_memory_gb_tried"]["8"] == pytest.approx(needs[8] / memory_fit.GB)
    state, metrics = step(state, batch)  # The chosen program runs.
    assert np.isfinite(steps.host_scalars(metrics)["segmentor_loss"])


def test_the_whole_batch_is_kept_when_it_fits(tiny_config):
    step, state, batch = _setup(tiny_config)
    tiny_config.memory_limit_gb = 1000.0
    step.compile(state, batch)
    assert step.choice["microbatch_size"] == 8 and step.choice["num_microbatches"] == 1
    assert list(step.choice["estimated_peak_memory_gb_tried"]) == ["8"]  # One compile only.


def test_an_impossible_limit_is_a_short_error_before_any_step(tiny_config):
    step, state, batch = _setup(tiny_config)
    tiny_config.memory_limit_gb = 1e-6
    with pytest.raises(memory_fit.MemoryFitError) as error:
        step.compile(state, batch)
    message = str(error.value)
    for part in ("even a microbatch of 1 image per device needs an estimated",
                 "0.00 GB (config.memory_limit_gb)", "--config.input.crop_size",
                 "--config.dtype=bfloat16", "more devices"):
        assert part in message, part
    assert int(state.step) == 0  # Nothing ran.


def test_an_out_of_memory_while_running_is_re_raised_short(tiny_config):
    step, state, batch = _setup(tiny_config)
    step.compile(state, batch)

    def exhausted(*args):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 36100994376 bytes.\n"
                           "  a long trace ...")

    step._compiled = exhausted
    with pytest.raises(memory_fit.MemoryFitError, match=r"Out of memory running the training "
                       r"step at microbatch_size=8 \(1 microbatch.*RESOURCE_EXHAUSTED: Out of "
                       r"memory allocating 36100994376 bytes\.") as error:
        step(state, batch)
    assert error.value.__suppress_context__  # Raised `from None`: no chained trace.
    step._compiled = lambda *args: (_ for _ in ()).throw(ValueError("other"))
    with pytest.raises(ValueError, match="other"):  # Only out-of-memory errors are rewritten.
        step(state, batch)


def test_microbatch_size_must_divide_the_per_device_batch(tiny_config):
    tiny_config.batch_size, tiny_config.microbatch_size = 8, 3  # 4 rows on each of 2 devices.
    with pytest.raises(config_checks.ConfigError, match=r"microbatch_size=3: .* = 4: one of "
                                                        r"\[1, 2, 4\]"):
        config_checks.validate_config(tiny_config)
    tiny_config.microbatch_size = 16  # Larger than the per-device batch: no accumulation.
    config_checks.validate_config(tiny_config)
    tiny_config.microbatch_size, tiny_config.memory_limit_gb = 0, -1.0
    with pytest.raises(config_checks.ConfigError, match="memory_limit_gb=-1.0 must be >= 0"):
        config_checks.validate_config(tiny_config)


def test_main_stops_in_seconds_with_the_short_error(data_dir, tmp_path):
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "advseg_jax.main", "--config=configs/default.py",
         f"--workdir={tmp_path / 'run'}", f"--config.data_dir={data_dir}",
         "--config.batch_size=4", "--config.segmentor.width=8",
         "--config.adversary.width_divisor=16", "--config.memory_limit_gb=0.000001"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("MemoryFitError: The training step does not fit in device memory")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(
        tmp_path / "run" / "checkpoints")
    assert time.monotonic() - start < 300
