"""bench/device_check.py --smoke: every part runs on this CPU and writes every field, so the one
call on a lent accelerator does not fail on a path the CPU could have run."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = {"accumulation_scan_unrolled_k1", "bfloat16_train_step", "memory_fit_device_limit",
          "restore_after_async_save"}
BENCHMARK_FIELDS = {"microbatch_size", "estimated_peak_memory_gb", "measured_peak_memory_gb",
                    "step_time_s", "mfu", "mfu_dtype", "compile_time_s"}


@pytest.mark.slow
def test_smoke_run_writes_every_part(tmp_path, data_dir):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One CPU device, as a GPU;
    # --smoke compiles at LLVM level 0 by itself.
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "device_check.py"), "--smoke",
         f"--out={out}", f"--data_dir={data_dir}", "--budget_s=1200"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "device_check.json").read_text())
    assert (out / "device_check.log").read_text().count("device_check: ") >= 9
    assert report["errors"] == {} and report["skipped"] == [], report["errors"]
    assert report["passed"] is True and report["smoke"] is True
    assert report["environment"]["platform"] == "cpu"
    assert report["environment"]["versions"]["jax"]
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == CHECKS and all(c["passed"] for c in checks.values())
    errors = checks["accumulation_scan_unrolled_k1"]["max_relative_error"]
    assert set(errors) == {"scan_k2", "unrolled_k2"} and max(errors.values()) < 1e-4
    assert checks["bfloat16_train_step"]["state_float_dtypes"] == ["float32"]
    assert "host MemAvailable" in checks["memory_fit_device_limit"]["source"]
    assert checks["restore_after_async_save"]["restored_equals_saved"] is True
    assert set(report["benchmarks"]) == {"stanford_float32", "stanford_bfloat16", "voc_bfloat16"}
    for name, figures in report["benchmarks"].items():
        assert figures["dtype"] == name.rsplit("_", 1)[1]
        assert set(figures["peak_flops_by_dtype"]) == {"float32", "bfloat16"}
        for variant in ("baseline", "adversarial"):
            assert BENCHMARK_FIELDS <= set(figures[variant]), (name, variant)
            assert figures[variant]["mfu_dtype"] == figures["dtype"]
            assert 0 < figures[variant]["mfu"] < 1
    training = report["training"]
    assert training["num_train_steps"] == 4 and training["steps_per_s"] > 0
    assert 0 <= training["input_wait_fraction"] <= 1
    assert 0 <= training["evaluation"]["mean_iou"] <= 1
