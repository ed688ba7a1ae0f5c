"""Fault tolerance end to end, through `python -m advseg_jax.main` subprocesses on CPU.

A run killed (SIGKILL) or preempted (SIGTERM) and restarted with the same command must end
bit-identical to an uninterrupted one; half-written checkpoints are never restored; a
non-finite step stops the run (or is skipped) without ever reaching a checkpoint.
"""

import random
import re
import shutil
import signal
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

import main_runs
from advseg_jax import workdir_io
from main_runs import NUM_STEPS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    return main_runs.reference_run(tmp_path_factory.getbasetemp(), data_dir)


def _assert_bit_identical(expected_workdir, actual_workdir, step=NUM_STEPS):
    expected = main_runs.leaves_with_paths(main_runs.restore(expected_workdir, step))
    actual = main_runs.leaves_with_paths(main_runs.restore(actual_workdir, step))
    assert [name for name, _ in actual] == [name for name, _ in expected]
    assert any("opt_state" in name for name, _ in expected)  # Optimizer states compared too.
    for (name, want), (_, got) in zip(expected, actual):
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_sigkill_anywhere_then_restart_ends_bit_identical(reference, tmp_path, data_dir):
    workdir = tmp_path / "killed"
    proc = main_runs.start(workdir, data_dir)
    main_runs.wait_for_checkpoint(workdir, proc)
    delay = random.uniform(0.0, 0.3)  # Any moment after it: mid-step, -save, -log or -eval.
    time.sleep(delay)
    assert proc.poll() is None, f"Ended before the kill (+{delay:.3f} s).\n" + main_runs.tails(
        [proc])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = main_runs.checkpoint_steps(workdir)[-1]
    assert latest < NUM_STEPS, f"killed at +{delay:.3f} s"

    # A half-written later checkpoint, as a kill mid-save leaves it (orbax's own if it did).
    checkpoints = workdir / "checkpoints"
    half_written = checkpoints / f"{latest + 2}{ocp.step.TMP_DIR_SUFFIX}"
    if not half_written.exists():
        shutil.copytree(checkpoints / str(latest), half_written)
        for manifest in half_written.rglob("manifest.ocdbt"):
            manifest.unlink()

    log = main_runs.run(workdir, data_dir)
    assert f"Starting at step {latest} of {NUM_STEPS}" in log
    # The killed segment has its start and no end; the resumed one finished.
    killed, resumed = workdir_io.read_segments(str(workdir))
    assert "end" not in killed and resumed["outcome"] == "finished"
    # Re-saving that step replaced the temporary directory.
    assert main_runs.temporary_checkpoints(workdir) == []
    _assert_bit_identical(reference, workdir)


def test_sigterm_checkpoints_exits_zero_and_restart_ends_bit_identical(reference, tmp_path,
                                                                       data_dir):
    workdir = tmp_path / "preempted"
    proc = main_runs.start(workdir, data_dir)
    main_runs.wait_for_checkpoint(workdir, proc)
    proc.send_signal(signal.SIGTERM)
    (rc,) = main_runs.wait([proc])
    log = main_runs.log_text(proc)
    assert rc == 0, main_runs.tails([proc])
    match = re.search(r"Stopped by SIGTERM after checkpointing step (\d+)", log)
    assert match, main_runs.tails([proc])
    stopped_at = int(match.group(1))
    assert stopped_at < NUM_STEPS
    assert main_runs.checkpoint_steps(workdir)[-1] == stopped_at
    assert not (workdir / "eval_results.json").exists()  # Stopped before the final eval.

    log = main_runs.run(workdir, data_dir)
    assert f"Starting at step {stopped_at} of {NUM_STEPS}" in log
    stopped, resumed = workdir_io.read_segments(str(workdir))
    assert stopped["outcome"] == f"stopped by SIGTERM at step {stopped_at}"
    assert resumed["outcome"] == "finished"
    _assert_bit_identical(reference, workdir)


# Adam's linear warm-up starts the rate at 0, so step 1 is a no-op and step 2's update of
# ~lr/10 makes the parameters ~1e29 (finite): step 3's forward pass overflows. Checkpoints
# every step, so steps 1 and 2 have one.
_EXPLODING = ("--config.segmentor.optimizer=adam", "--config.segmentor.learning_rate=1e30",
              "--config.segmentor.warmup_steps=10", "--config.checkpoint_every_steps=1")


def _assert_checkpoints_finite(workdir):
    steps = main_runs.checkpoint_steps(workdir)
    assert steps
    for step in steps:
        for name, leaf in main_runs.leaves_with_paths(main_runs.restore(workdir, step)):
            assert np.all(np.isfinite(leaf)), f"step {step}: {name}"
    return steps


def test_nonfinite_step_stops_the_run_before_any_checkpoint_holds_it(tmp_path, data_dir):
    workdir = tmp_path / "exploding"
    log = main_runs.run(workdir, data_dir, *_EXPLODING, expect_rc=None)
    assert "NonFiniteError: Non-finite loss or gradient at step 3 in the" in log, log[-4000:]
    assert "segmentor" in log.split("NonFiniteError:")[-1].splitlines()[0]
    assert _assert_checkpoints_finite(workdir)[-1] == 2  # Nothing saved from step 3 on.
    assert not (workdir / "eval_results.json").exists()


def test_skip_nonfinite_steps_skips_spikes_but_stops_a_run_that_only_skips(tmp_path, data_dir):
    workdir = tmp_path / "skipping"
    log = main_runs.run(workdir, data_dir, *_EXPLODING, "--config.skip_nonfinite_steps=True",
                        expect_rc=None)
    # Step 3 (1 of 3 run) is a lone skip; step 4 makes 2 of 4, more than 10%: stop.
    assert "Skipping it (config.skip_nonfinite_steps=True; 1 skipped so far)" in log, log[-4000:]
    assert re.search(r"NonFiniteError: Non-finite .* at step 4 .* 2 of the 4 steps run by this "
                     r"process were skipped as non-finite, more than "
                     r"max_nonfinite_fraction=0.1", log), log[-4000:]
    assert _assert_checkpoints_finite(workdir)[-1] <= 4
    assert not (workdir / "eval_results.json").exists()


def _run_long(workdir, data_dir, *overrides) -> str:
    """main_runs.run with a longer bound: accumulated steps compile K microbatches each."""
    proc = main_runs.start(workdir, data_dir, *overrides)
    (rc,) = main_runs.wait([proc], timeout=3 * main_runs.TIMEOUT_S)
    assert rc == 0, main_runs.tails([proc])
    return main_runs.log_text(proc)


def test_sigkill_then_restart_with_accumulation_ends_bit_identical(tmp_path, data_dir):
    """Two microbatches per device (batch 4 on 2 devices, microbatch_size=1): a run killed after
    its first checkpoint and restarted ends bit-identical to an uninterrupted one."""
    accumulate = "--config.microbatch_size=1"
    reference = tmp_path / "accumulated_reference"
    log = _run_long(reference, data_dir, accumulate)
    assert "Microbatch: 1 of the 2 images per device (2 microbatch(es)" in log
    workdir = tmp_path / "accumulated_killed"
    proc = main_runs.start(workdir, data_dir, accumulate)
    main_runs.wait_for_checkpoint(workdir, proc, timeout=3 * main_runs.TIMEOUT_S)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = main_runs.checkpoint_steps(workdir)[-1]
    assert latest < NUM_STEPS
    log = _run_long(workdir, data_dir, accumulate)
    assert f"Starting at step {latest} of {NUM_STEPS}" in log
    _assert_bit_identical(reference, workdir)
