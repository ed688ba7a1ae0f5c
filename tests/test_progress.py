"""progress.ReportProgress: when it reports, the rate and ETA it reports, its timed parts."""

import logging
import time

import pytest

from advseg_jax import progress


class _Recorder:
    def __init__(self):
        self.scalars = []

    def write_scalars(self, step, scalars):
        self.scalars.append((step, scalars))


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (60, "1m0s"),
                                           (3 * 3600 + 5, "3h0m5s"),
                                           (123456.7, "1d10h17m37s")])
def test_format_seconds(seconds, text):
    assert progress.format_seconds(seconds) == text


def test_reports_rate_and_eta_every_steps_and_at_the_end(caplog):
    clock, writer = _Clock(), _Recorder()
    report = progress.ReportProgress(num_train_steps=1002, writer=writer, every_steps=5,
                                     every_secs=None, clock=clock)
    reported = []
    with caplog.at_level(logging.INFO):
        for step in list(range(1, 12)) + [1002]:
            clock.now = 100.0 + step * 0.25  # 4 steps/s.
            if report(step, clock.now):
                reported.append(step)
    assert reported == [5, 10, 1002]
    # Steps 1 → 5 in 1 s: 4 steps/s; 997 steps left: 249.25 s.
    assert "Progress: 4.0 steps/s, 0.5% (5/1002), ETA 4m9s" in caplog.text
    assert [step for step, _ in writer.scalars] == [5, 5, 10, 10, 1002, 1002]
    assert writer.scalars[0][1] == {"steps_per_sec": pytest.approx(4.0)}
    assert writer.scalars[1][1] == {"uptime": pytest.approx(5 * 0.25)}  # Since construction.
    # Step 10 → 1002 in 248 s: 4 steps/s again.
    assert writer.scalars[4][1] == {"steps_per_sec": pytest.approx(4.0)}
    assert "ETA 0s" in caplog.text


def test_reports_after_every_secs_without_a_report():
    report = progress.ReportProgress(num_train_steps=100, every_steps=50, every_secs=10.0,
                                     clock=_Clock())
    assert not report(1, 0.0)
    assert not report(2, 9.0)
    assert report(3, 10.5)
    assert not report(4, 11.0)


def test_timed_parts_are_shares_of_uptime(caplog):
    clock = _Clock()
    report = progress.ReportProgress(num_train_steps=10, every_steps=2, every_secs=None,
                                     clock=clock)
    report(1, 0.0)
    with report.timed("eval", wait_jax_async_dispatch=False):
        clock.now += 2.5
    with report.timed("checkpoint", wait_jax_async_dispatch=False):
        clock.now += 7.5
    clock.now += 15.0  # Uptime 25 s: eval 10 %, checkpoint 30 %.
    with caplog.at_level(logging.INFO):
        assert report(2, 1.0)
    assert "(uptime 25s: 30.0% checkpoint, 10.0% eval)" in caplog.text


def test_timed_waiting_for_jax_counts_the_block():
    report = progress.ReportProgress(num_train_steps=10)
    with report.timed("eval"):
        time.sleep(0.2)
    report._executor.submit(lambda: None).result()  # The helper thread's waits are done.
    assert report._time_per_part["eval"] >= 0.2
