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
    one_row = memory_fit._with_rows(batch, 1)
    floor = memory_fit.estimated_peak_bytes(step.build(1).lower(state, one_row).compile())
    least = memory_fit.state_lower_bound_bytes(state)
    assert floor > least  # The one-row step holds the state, gradients and activations.
    # Above the compile-free lower bound, under the one-row step: refused after compiling it.
    tiny_config.memory_limit_gb = (least + floor) / 2 / (1 - memory_fit.SAFETY_MARGIN) / 1e9
    with pytest.raises(memory_fit.MemoryFitError) as error:
        step.compile(state, batch)
    message = str(error.value)
    for part in ("even a microbatch of 1 image per device needs an estimated",
                 "GB (config.memory_limit_gb)", "--config.input.crop_size",
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


def _param_count(params) -> int:
    return sum(np.asarray(leaf).size for leaf in jax.tree.leaves(params))


def test_lower_bound_is_four_float32_copies_of_both_models_parameters(tiny_config):
    tiny_config.lambda_adv = 0.1  # Both models, each trained with Adam.
    assert tiny_config.segmentor.optimizer == tiny_config.adversary.optimizer == "adam"
    state = state_lib.create_train_state(tiny_config, sharding.make_mesh(jax.devices()[:1]))
    count = _param_count(state.segmentor.params) + _param_count(state.adversary.params)
    # Parameters, gradients, Adam's first and second moments: 4 float32 copies; the step
    # counters add a few bytes.
    expected = count * 4 * 4
    least = memory_fit.state_lower_bound_bytes(state)
    assert expected <= least <= expected + 64, (least, expected)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    assert memory_fit.state_lower_bound_bytes(abstract) == least  # Shapes only.
    # The benchmark's check before initialising: the same count from jax.eval_shape alone.
    assert memory_fit.state_lower_bound_bytes(memory_fit.abstract_state(tiny_config)) == least


def test_a_limit_under_the_lower_bound_is_refused_without_compiling(tiny_config):
    step, state, batch = _setup(tiny_config)
    least = memory_fit.state_lower_bound_bytes(state)
    tiny_config.memory_limit_gb = least / 2 / 1e9

    def no_compile(size):
        raise AssertionError(f"compiled the step at microbatch {size} before refusing")

    step.build = no_compile
    with pytest.raises(memory_fit.MemoryFitError) as error:
        step.compile(state, batch)
    message = str(error.value)
    assert "the parameters, their gradients and the optimizer states alone need" in message
    assert f"{least / 1e9:.2f} GB per device" in message and "--config.dtype" in message


class _FakeDevice:
    def __init__(self, platform, stats):
        self.platform, self._stats = platform, stats

    def memory_stats(self):
        return self._stats

    def __str__(self):
        return f"fake_{self.platform}_0"


def _fake_devices(monkeypatch, platform, stats):
    monkeypatch.setattr(memory_fit.jax, "local_devices", lambda: [_FakeDevice(platform, stats)])


def test_the_limit_is_the_devices_bytes_limit(tiny_config, monkeypatch):
    _fake_devices(monkeypatch, "gpu", {"bytes_limit": 16_000_000_000, "bytes_in_use": 5})
    limit, source = memory_fit.memory_limit(tiny_config)
    assert limit == 16e9 and "bytes_limit" in source
    tiny_config.memory_limit_gb = 2.5  # The config key, when set, wins.
    assert memory_fit.memory_limit(tiny_config) == (2.5e9, "config.memory_limit_gb")


@pytest.mark.parametrize("stats", [None, {"bytes_in_use": 5}])
def test_an_accelerator_without_bytes_limit_asks_for_the_config_key(tiny_config, monkeypatch,
                                                                    stats):
    _fake_devices(monkeypatch, "gpu", stats)
    with pytest.raises(memory_fit.MemoryFitError, match=r"fake_gpu_0 \(gpu\) reports no memory "
                       r"limit.*--config.memory_limit_gb=N"):
        memory_fit.memory_limit(tiny_config)
    tiny_config.memory_limit_gb = 8.0
    assert memory_fit.memory_limit(tiny_config) == (8e9, "config.memory_limit_gb")


def test_a_cpu_without_bytes_limit_shares_the_hosts_available_memory(tiny_config, monkeypatch):
    _fake_devices(monkeypatch, "cpu", None)
    with open("/proc/meminfo") as meminfo:
        available = next(int(line.split()[1]) * 1024 for line in meminfo
                         if line.startswith("MemAvailable:"))
    limit, source = memory_fit.memory_limit(tiny_config)
    assert source.startswith("host MemAvailable")
    # MemAvailable moves between the two reads: within 5 %.
    assert limit == pytest.approx(available / jax.local_device_count(), rel=0.05)
