"""A few real Stanford steps of the softmax self-training arm (issue 32): no discriminator,
L_semi logged, selection curves on the held-out slice. Skipped where the data is absent."""

import pathlib

import pytest

from advseg_jax import train
from advseg_jax import workdir_io

MANUAL_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "stanford_background"
pytestmark = pytest.mark.skipif(
    not (MANUAL_DIR / "iccv09Data.tar.gz").exists(),
    reason=f"real Stanford Background archive not found at {MANUAL_DIR} (../shared/data is "
           "only beside the repository on the project's own machines)")


def test_softmax_arm_trains_without_a_discriminator_on_the_real_images(
        tmp_path, stanford_real_data_dir):
    from configs import stanford_semi
    config = stanford_semi.get_config()
    config.data_dir = stanford_real_data_dir  # Fold 0 prepared once per process (conftest).
    config.semi_selection, config.semi_threshold = "softmax", 0.3
    config.lambda_adv = config.lambda_adv_unlabeled = 0.0
    config.batch_size = config.unlabeled_batch_size = 2
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
    config.log_every_steps, config.semi_start_step = 2, 1
    config.num_train_eval_examples = 16
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    records = workdir_io.read_eval_history(workdir)
    [record] = [r for r in records if r["split"] == config.eval_split]
    curves = record["selection_curves"]
    assert list(curves) == ["softmax"]
    assert len(curves["softmax"]["coverage"]) == len(config.selection_curve_thresholds)
    assert 0 < curves["softmax"]["coverage"][0] <= 1
    assert workdir_io.read_config(workdir)["semi_selection"] == "softmax"
