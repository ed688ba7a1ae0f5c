"""evaluation.evaluate: the confusion matrix summed on the device, read once, exact."""

import jax
import numpy as np

from advseg_jax import evaluation
from advseg_jax import input_pipeline
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from advseg_jax.data import class_info


def test_device_sum_matches_numpy_past_the_int32_range():
    """Counts that would wrap one int32 sum (> 2^31 per cell) stay exact in the two words."""
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 2**31 - 2**20, size=(3, 3)).astype(np.int32) for _ in range(6)]
    batches.append(np.full((3, 3), 2**31 - 2**20, np.int32))  # The largest batch allowed.
    words = evaluation._split_words(batches[0])
    for counts in batches[1:]:
        words = evaluation._add_words(words, counts)
    want = np.sum(np.stack(batches).astype(np.int64), axis=0)
    assert want.max() > 2**33
    np.testing.assert_array_equal(evaluation._host_total(words), want)


def test_scores_equal_a_numpy_count_of_every_batch(tiny_config):
    """The evaluation's confusion matrix against numpy's count of the same predictions, and
    nothing read from the device until every batch has been dispatched."""
    tiny_config.eval_batch_size = 8  # 500 validation images: many batches, a padded last one.
    tiny_config.num_image_summaries = 2
    mesh = sharding.make_mesh()
    builder = input_pipeline.get_builder(tiny_config)
    segmentor, _ = state_lib.build_models(tiny_config)
    params = state_lib.create_train_state(tiny_config, mesh).segmentor.params
    real_step = steps.make_eval_step(tiny_config, mesh, segmentor)
    seen = []

    def recording_step(step_params, batch):
        confusion, predictions = real_step(step_params, batch)
        seen.append((batch, predictions))
        return confusion, predictions

    # Only the final read, which evaluate marks as allowed, may move data to the host.
    with jax.transfer_guard_device_to_host("disallow_explicit"):
        scores, strips = evaluation.evaluate(tiny_config, recording_step, params, builder, mesh,
                                             "validation", num_images=2)
    want = np.zeros((tiny_config.num_classes,) * 2, np.int64)
    for batch, predictions in seen:
        labels, mask = np.asarray(batch["label"]), np.asarray(batch["pixel_mask"])
        keep = mask & (labels != class_info.IGNORE_LABEL)
        index = labels[keep] * tiny_config.num_classes + np.asarray(predictions)[keep]
        want += np.bincount(index, minlength=tiny_config.num_classes**2).reshape(want.shape)
    assert len(seen) == -(-500 // 8)
    np.testing.assert_array_equal(np.array(scores["confusion"]), want)
    assert want.sum() > 500 * 48 * 48 * 0.8
    assert strips.shape[0] == 2 and strips.shape[2] == 3 * 48
