"""run_segments.md from segments.jsonl, and the host facts main records in it."""

import os
import subprocess

import pytest

from advseg_jax import host_info
from advseg_jax import workdir_io
from experiments import run_segments

HOST = {"cpu": "AMD EPYC", "usable_cpus": 1, "devices": "1 x cpu", "processes": 1}


def _segment(run_dir, start, command, end=None):
    workdir_io.append_segment_event(run_dir, {"start": start, "command": command, "host": HOST,
                                              "revision": "abc"})
    if end is not None:
        workdir_io.append_segment_event(run_dir, end)


def test_runs_md_lists_every_segment_and_sums_only_those_that_ended(tmp_path):
    sweep = str(tmp_path)
    resumed = os.path.join(sweep, "adversarial", "seed_0")
    _segment(resumed, "2026-12-05T01:01:28Z", "python -m advseg_jax.main --config.seed=0")
    _segment(resumed, "2026-12-05T02:05:13Z", "python -m advseg_jax.main --config.seed=0",
             {"end": "2026-12-05T02:33:56Z", "wall_s": 1723.4, "outcome": "finished"})
    old = os.path.join(sweep, "classical", "seed_0")  # Predates the record: left out.
    os.makedirs(old)
    stopped = os.path.join(sweep, "classical", "seed_1")
    _segment(stopped, "t0", "cmd A", {"end": "t1", "wall_s": 10.0,
                                      "outcome": "stopped by SIGTERM at step 4"})
    _segment(stopped, "t2", "cmd B", {"end": "t3", "wall_s": 20.5, "outcome": "finished"})

    path = run_segments.write(sweep, [resumed, old, stopped])
    assert path == os.path.join(sweep, run_segments.RUNS_MD)
    with open(path) as f:
        text = f.read()
    section = text[text.index("### adversarial/seed_0"):text.index("### classical/seed_1")]
    assert "2 segment(s); 1723 s in the 1 with an end record." in section
    assert f"- 2026-12-05T01:01:28Z: {run_segments.NO_END}; AMD EPYC, 1 usable CPU, 1 x cpu;" \
        in section
    assert ("- 2026-12-05T02:05:13Z: finished after 1723 s (ended 2026-12-05T02:33:56Z)"
            in section)
    assert section.count("python -m advseg_jax.main --config.seed=0") == 1  # Same command once.
    assert "classical/seed_0" not in text
    later = text[text.index("### classical/seed_1"):]
    assert "2 segment(s); 30 s in the 2 with an end record." in later
    assert "stopped by SIGTERM at step 4 after 10 s" in later
    assert "Commands (in the order first used):" in later
    assert later.index("cmd A") < later.index("cmd B")


def test_no_segments_no_file(tmp_path):
    run_dir = os.path.join(str(tmp_path), "baseline", "seed_0")
    os.makedirs(run_dir)
    assert run_segments.write(str(tmp_path), [run_dir]) is None
    assert not os.path.exists(os.path.join(str(tmp_path), run_segments.RUNS_MD))


def test_cpu_model_falls_back_to_proc_cpuinfo_without_lscpu(monkeypatch):
    from_lscpu = host_info.cpu_model()
    assert from_lscpu and from_lscpu != "unknown CPU"

    def no_lscpu(*args, **kwargs):
        raise FileNotFoundError("lscpu")
    monkeypatch.setattr(subprocess, "run", no_lscpu)
    with open("/proc/cpuinfo") as f:
        expected = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), None)
    if expected is None:
        pytest.skip("/proc/cpuinfo names no model on this host (ARM).")
    assert host_info.cpu_model() == expected


def test_usable_cpus_follow_the_affinity():
    assert host_info.usable_cpus() == len(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert host_info.usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, before)
