"""One real train step of configs/voc.py (Dilated-8 + LargeFOV + Product) at a tiny crop."""

import jax
import numpy as np

from advseg_jax import config_checks
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from configs import voc


def test_voc_step_at_tiny_crop_changes_both_models():
    config = voc.get_config()
    config.input.crop_size = (64, 64)
    config.batch_size = 2
    config.eval_batch_size = 2
    config.segmentor.pretrained = ""  # "imagenet" downloads Keras's weights: no internet here.
    config_checks.validate_config(config)
    mesh = sharding.make_mesh()
    segmentor, adversary = state_lib.build_models(config)
    assert state_lib.label_map_shape(config, segmentor, (64, 64)) == (8, 8)  # Output stride 8.
    state = state_lib.create_train_state(config, mesh)
    before = jax.device_get(state)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 21, (2, 64, 64)).astype(np.int32)
    labels[:, :4] = 255
    batch = {"image": rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8), "label": labels}
    state, metrics = steps.make_train_step(config, mesh, segmentor, adversary)(
        state, sharding.global_batch(batch, mesh))
    metrics = steps.host_scalars(metrics)
    for key in ("cross_entropy", "adversarial_term", "adversary_loss", "segmentor_loss"):
        assert np.isfinite(metrics[key]), key
    assert metrics["nonfinite_segmentor"] == 0 and metrics["nonfinite_adversary"] == 0
    after = jax.device_get(state)
    for name in ("segmentor", "adversary"):
        old = jax.tree.leaves(getattr(before, name).params)
        new = jax.tree.leaves(getattr(after, name).params)
        assert any(not np.array_equal(a, b) for a, b in zip(old, new)), name
    # Product encoding: the adversary's first conv reads 3 x 21 channels.
    assert after.adversary.params["conv1_1"]["kernel"].shape == (3, 3, 63, 96)
