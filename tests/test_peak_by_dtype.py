"""MFU against the peak of the run's compute dtype: both dtypes' peaks in the JSON, the
accelerator measurement (a compiled loop of matmuls) and its chip-table fallback, and a
bfloat16 benchmark whose mfu divides by the (faked) bfloat16 peak."""

import types

import jax
import pytest

from advseg_jax import benchmark
from advseg_jax import peak_flops

FAKE_PEAKS = {"float32": 3e9, "bfloat16": 12e9}  # Per device; far from any real CPU figure.


@pytest.fixture(autouse=True)
def fresh_peaks(monkeypatch):
    """Each test measures (fakes) its own peaks: the process-wide memo starts empty."""
    monkeypatch.setattr(benchmark, "_MEASURED_PEAKS", {})


def test_a_peak_is_measured_once_per_process(monkeypatch):
    calls = []

    def fake_clean(size, repeats, timeout_s=600.0, dtype="float32"):
        calls.append((size, dtype))
        return {"peak_flops_per_device": FAKE_PEAKS[dtype]}

    monkeypatch.setattr(peak_flops, "measure_clean", fake_clean)
    for _ in range(3):  # device_check's three benchmarks, say.
        peaks = benchmark.measure_peaks("float32", platform="cpu", matmul_size=256)
    assert {k: v[0] for k, v in peaks.items()} == FAKE_PEAKS
    assert sorted(calls) == [(256, "bfloat16"), (256, "float32")]
    benchmark.measure_peak(None, "float32", platform="cpu")  # Another size: measured anew.
    assert calls[-1] == (peak_flops.MATMUL_SIZE, "float32")


def test_chained_matmuls_count_every_matmul(monkeypatch):
    """FLOPs of one call are 2 n³ per chained matmul: with a clock that advances 1 s per
    reading, a call of 3 chained 64² matmuls reads 2·64³·3 FLOP/s."""
    ticks = iter(range(1000))
    monkeypatch.setattr(peak_flops.time, "perf_counter", lambda: float(next(ticks)))
    measured = peak_flops.measure(64, 2, dtype="bfloat16", chain=3)
    assert measured["peak_flops_per_device"] == 2 * 64**3 * 3
    assert (measured["dtype"], measured["chain"]) == ("bfloat16", 3)
    with pytest.raises(ValueError, match=r"dtype='float16'.*\['float32', 'bfloat16'\]"):
        peak_flops.measure(64, 1, dtype="float16")


def test_accelerator_peak_is_a_loop_of_large_matmuls_or_the_chip_table(monkeypatch):
    calls = []

    def fake_measure(size, repeats, dtype, chain):
        calls.append((size, repeats, dtype, chain))
        return {"peak_flops_per_device": FAKE_PEAKS[dtype]}

    monkeypatch.setattr(peak_flops, "measure", fake_measure)
    peak, source = benchmark.measure_peak(None, "bfloat16", platform="gpu")
    assert peak == FAKE_PEAKS["bfloat16"] and "fori_loop of 16 bfloat16 8192x8192" in source
    assert calls == [(peak_flops.ACCELERATOR_SIZE, peak_flops.ACCELERATOR_REPEATS, "bfloat16",
                      peak_flops.ACCELERATOR_CHAIN)]

    def failing(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(peak_flops, "measure", failing)
    monkeypatch.setattr(benchmark, "_MEASURED_PEAKS", {})  # Forget the measured peaks.
    h200 = types.SimpleNamespace(device_kind="NVIDIA H200", platform="gpu")
    monkeypatch.setattr(jax, "devices", lambda *a: [h200])
    peak, source = benchmark.measure_peak(None, "bfloat16", platform="gpu")
    assert peak == 989.4e12 and "CHIP_PEAKS" in source and "MemoryError" in source
    assert benchmark.measure_peak(None, "float32", platform="gpu")[0] == 494.7e12
    h200.device_kind = "Unknown chip"
    monkeypatch.setattr(benchmark, "_MEASURED_PEAKS", {})
    with pytest.raises(RuntimeError, match="not in peak_flops.CHIP_PEAKS: pass --peak_flops"):
        benchmark.measure_peak(None, "float32", platform="gpu")


def test_bfloat16_run_mfu_uses_the_bfloat16_peak(data_dir, monkeypatch):
    """A bfloat16 benchmark (which also trains a step in bfloat16) reports both peaks and
    divides by the bfloat16 one; the flag replaces only the run's dtype's peak."""
    def fake_clean(size, repeats, timeout_s=600.0, dtype="float32"):
        assert (size, repeats) == (peak_flops.MATMUL_SIZE, peak_flops.REPEATS)  # As before.
        return {"peak_flops_per_device": FAKE_PEAKS[dtype]}

    monkeypatch.setattr(peak_flops, "measure_clean", fake_clean)
    from configs import default
    config = default.get_config()
    config.data_dir, config.batch_size, config.dtype = data_dir, 2, "bfloat16"
    config.segmentor.width, config.adversary.width_divisor = 8, 16
    config.input.crop_size = (32, 32)
    results = benchmark.run_benchmark(config, steps_timed=1, warmup=0, input_batches=1)
    devices = results["device_count"]
    assert results["peak_flops_by_dtype"] == {k: v * devices for k, v in FAKE_PEAKS.items()}
    assert results["peak_flops_dtype"] == "bfloat16"
    assert results["peak_flops"] == FAKE_PEAKS["bfloat16"] * devices
    for name in ("baseline", "adversarial"):
        r = results[name]
        assert r["mfu_dtype"] == "bfloat16"
        assert r["mfu"] == pytest.approx(
            r["flops_per_step"] / r["step_time_s"] / (FAKE_PEAKS["bfloat16"] * devices),
            rel=1e-12)
    given = benchmark.measure_peaks("bfloat16", 5e9, platform="cpu")
    assert given["bfloat16"] == (5e9, "--peak_flops (per device)")
    assert given["float32"][0] == FAKE_PEAKS["float32"]
