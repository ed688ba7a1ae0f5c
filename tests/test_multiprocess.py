"""Two processes (one CPU device each, gloo collectives) train like one process with two devices.

Both run `python -m advseg_jax.main` with the same command; the two processes coordinate over
127.0.0.1 and share one workdir, as on a pod with a shared filesystem.
"""

import json

import numpy as np
import pytest

import main_runs
from main_runs import NUM_STEPS

pytestmark = pytest.mark.slow



def test_two_processes_match_one_process_with_two_devices(tmp_path_factory, tmp_path,
                                                          data_dir):
    reference = main_runs.reference_run(tmp_path_factory.getbasetemp(), data_dir)
    workdir = tmp_path / "two_processes"
    address = f"127.0.0.1:{main_runs.free_port()}"
    # Both processes and the reference compile with the suite's fast-compile flags (main_runs).
    procs = [main_runs.start(workdir, data_dir, devices=1, process=(address, 2, i))
             for i in range(2)]
    assert main_runs.wait(procs) == [0, 0], main_runs.tails(procs)
    for i, proc in enumerate(procs):
        log = main_runs.log_text(proc)
        assert f"process {i}/2, 1 local / 2 global devices" in log
        assert f"Starting at step 0 of {NUM_STEPS} on 2 devices (2 processes)" in log

    # Same parameters and optimizer states, up to float rounding (gloo sums in another order).
    expected = main_runs.leaves_with_paths(main_runs.restore(reference, NUM_STEPS))
    actual = main_runs.leaves_with_paths(main_runs.restore(workdir, NUM_STEPS))
    assert [name for name, _ in actual] == [name for name, _ in expected]
    for (name, want), (_, got) in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=name)

    # Same scores (a pixel may flip where two logits tie within that tolerance).
    want = json.loads((reference / "eval_results.json").read_text())
    got = json.loads((workdir / "eval_results.json").read_text())
    assert got["step"] == want["step"] == NUM_STEPS
    for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy"):
        assert got[key] == pytest.approx(want[key], abs=1e-4), key
    assert [v is None for v in got["per_class_iou"]] == [v is None for v in want["per_class_iou"]]
    np.testing.assert_allclose([v or 0 for v in got["per_class_iou"]],
                               [v or 0 for v in want["per_class_iou"]], atol=1e-4)

    # Only process 0 writes results and summaries: one eval per split in the history, one
    # events file. The checkpoint holds both processes' shards and nothing is left half-done.
    history = (workdir / "eval_history.jsonl").read_text().splitlines()
    assert len(history) == len((reference / "eval_history.jsonl").read_text().splitlines()) == 2
    assert len(list(workdir.glob("events.out.tfevents*"))) == 1
    final = workdir / "checkpoints" / str(NUM_STEPS) / "default"
    assert (final / "ocdbt.process_0").is_dir() and (final / "ocdbt.process_1").is_dir()
    assert main_runs.temporary_checkpoints(workdir) == []
