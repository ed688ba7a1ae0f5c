"""The issue's "done when" at tiny scale: 12 training steps of the default config with
microbatches give the same losses with accumulation_loop = "scan" as with "unrolled"."""

import pytest

from advseg_jax import train

_INTERVAL_MEANS = train.interval_means  # The original: each run wraps it afresh.


def _losses(config, workdir, monkeypatch) -> list:
    """Every logged step's means, recorded as train_and_evaluate writes them."""
    logged = []

    def recording(steps_logged):
        means = _INTERVAL_MEANS(steps_logged)
        logged.append(means)
        return means

    monkeypatch.setattr(train, "interval_means", recording)
    train.train_and_evaluate(config, str(workdir))
    return logged


def test_twelve_steps_scan_and_unrolled_give_the_same_losses(tiny_config, tmp_path,
                                                             monkeypatch):
    config = tiny_config
    config.num_train_steps, config.log_every_steps = 12, 1
    config.eval_every_steps = config.checkpoint_every_steps = 12
    config.lambda_adv, config.microbatch_size = 0.5, 1  # K = 2 per device (batch 4, 2 devices).
    runs = {}
    for loop in ("scan", "unrolled"):
        config.accumulation_loop = loop
        runs[loop] = _losses(config, tmp_path / loop, monkeypatch)
    assert len(runs["scan"]) == 12
    for scan, unrolled in zip(runs["scan"], runs["unrolled"]):
        for key in ("cross_entropy", "adversary_loss", "segmentor_loss"):
            assert scan[key] == pytest.approx(unrolled[key], rel=1e-4, abs=1e-6), key
    first, last = runs["scan"][0], runs["scan"][-1]
    assert last["cross_entropy"] != pytest.approx(first["cross_entropy"], rel=1e-3)  # It trained.
