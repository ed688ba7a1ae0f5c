"""The benchmark's figures on a tiny config: all there, positive, and mutually consistent."""

import json
import os
import subprocess
import sys

import pytest

from advseg_jax import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEAK_MATMUL_SIZE = 512


@pytest.fixture(scope="module")
def results(data_dir):
    from configs import default
    config = default.get_config()
    config.data_dir = data_dir
    config.batch_size = 4
    config.segmentor.width = 8
    config.adversary.width_divisor = 16
    config.input.shuffle_buffer = 64
    config.lambda_adv = 0.0  # The adversarial variant then uses 0.5.
    # 512² peak matmuls: the path of 2048² in a fraction of its time (bfloat16 is emulated).
    return benchmark.run_benchmark(config, steps_timed=2, warmup=1, input_batches=3,
                                   peak_matmul_size=PEAK_MATMUL_SIZE)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_field_is_present_and_sane(results):
    for name in ("baseline", "adversarial"):
        figures = results[name]
        for key in ("step_time_s", "images_per_s", "flops_per_step", "compile_time_s"):
            assert figures[key] > 0, (name, key)
        assert 0 < figures["mfu"] < 1.5, name
        assert figures["images_per_s"] == pytest.approx(4 / figures["step_time_s"])
    assert results["baseline"]["lambda_adv"] == 0
    assert results["adversarial"]["lambda_adv"] == 0.5
    assert results["adversarial"]["flops_per_step"] > results["baseline"]["flops_per_step"]
    assert results["adversarial_over_baseline_flops"] > 1
    assert results["adversarial_over_baseline_time"] > 0
    assert results["input_images_per_s"] > 0 and results["input_reason"] is None
    assert results["input_over_adversarial_step_rate"] > 0
    assert results["peak_flops"] > 1e8 and results["peak_memory_mb"] > 0
    assert results["peak_flops"] == pytest.approx(2 * results["peak_flops_per_device"])
    assert results["peak_flops_source"].startswith("measured in a clean subprocess")
    # A float32 run: its MFU is against the float32 peak; the bfloat16 one is reported too.
    assert results["peak_flops_dtype"] == "float32"
    assert set(results["peak_flops_by_dtype"]) == {"float32", "bfloat16"}
    assert results["peak_flops_by_dtype"]["float32"] == results["peak_flops"]
    assert results["peak_flops_by_dtype"]["bfloat16"] > 1e8
    assert "bfloat16 512x512" in results["peak_flops_source_by_dtype"]["bfloat16"]
    assert results["peak_memory_source"]
    assert results["device_count"] == 2 and results["device_kind"]
    json.dumps(results)  # JSON-ready.


def test_unprepared_dataset_gives_null_with_a_reason(tmp_path):
    from configs import voc
    config = voc.get_config()
    config.data_dir = str(tmp_path)
    figures = benchmark.measure_input(config, batches=1)
    assert figures["input_images_per_s"] is None
    assert "voc2012_segmentation is not prepared" in figures["input_reason"]


def test_flops_are_global_not_per_device(results):
    """Two devices each run half the batch: the step's FLOPs must not halve with the mesh."""
    baseline = results["baseline"]
    # digit_net at width 8 on 4 48x48 images: tens of MFLOPs per image, forward and backward.
    assert 4 * 1e7 < baseline["flops_per_step"] < 4 * 1e9


def test_bad_flags_fail_at_start():
    result = subprocess.run(
        [sys.executable, "-m", "advseg_jax.benchmark", "--config=configs/default.py",
         "--steps=0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--steps=0 must be >= 1" in result.stderr
    assert "baseline" not in result.stdout  # Nothing was timed.


def test_mfu_is_flops_over_time_over_the_reported_peak(results):
    for name in ("baseline", "adversarial"):
        r = results[name]
        assert r["mfu"] == pytest.approx(
            r["flops_per_step"] / r["step_time_s"] / results["peak_flops"], rel=1e-12)
        assert r["mfu_dtype"] == "float32"


def test_clean_peak_runs_in_another_process_without_tensorflow(monkeypatch):
    """The child imports JAX only, sees this process's devices, and reports a positive rate."""
    import subprocess
    import sys

    from advseg_jax import peak_flops
    seen = {}
    real_run = subprocess.run

    def spy(command, **kwargs):
        seen["command"] = command
        return real_run(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    measured = peak_flops.measure_clean(size=256, repeats=2)
    assert seen["command"][:3] == [sys.executable, "-m", "advseg_jax.peak_flops"]
    assert measured["device_count"] == 2 and measured["peak_flops_per_device"] > 1e7
    child = ("import sys; from advseg_jax import peak_flops; peak_flops.measure(64, 1); "
             "print('tensorflow' in sys.modules)")
    assert real_run([sys.executable, "-c", child], capture_output=True, text=True,
                    check=True).stdout.strip() == "False"


def test_load_warning_only_when_the_host_is_busy():
    import os

    from advseg_jax import peak_flops
    cpus = os.cpu_count()
    assert peak_flops.load_warning(0.0) is None
    warning = peak_flops.load_warning(4.0 * cpus)
    assert warning and f"{4.0 * cpus:.2f}" in warning and "MFU" in warning
