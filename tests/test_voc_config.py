"""Real train steps of configs/voc.py (Dilated-8 + LargeFOV + Product) at a tiny crop and width."""

import jax
import numpy as np
import pytest

from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from configs import voc

CROP = 32
STEPS = 8
WIDTH_DIVISOR = 8  # VGG16 at 1/8 width: the same layers, kernels and dilations, 64x fewer FLOPs.


def test_twenty_steps_change_both_models_with_the_same_losses_by_taps_as_by_lax():
    """CPU's automatic convolutions by taps (advseg_jax/models/exact_taps.py) against lax's, in
    the real step with dropout and the adversary (lambda 0.1): the same losses at every step.

    One device, one image, the front-end at 1/8 of its widths (the full 138M parameters
    make every step memory-bound on a CPU; which convolutions go by taps does not depend on
    widths)."""
    config = voc.get_config()
    config.segmentor.width_divisor = WIDTH_DIVISOR
    config.input.crop_size = (CROP, CROP)
    config.batch_size = config.eval_batch_size = 1
    config.segmentor.pretrained = ""  # "imagenet" downloads Keras's weights: no internet here.
    mesh = sharding.make_mesh(jax.devices()[:1])
    segmentor, _ = state_lib.build_models(config)
    assert state_lib.label_map_shape(config, segmentor, (CROP, CROP)) == (4, 4)  # Stride 8.
    initial = jax.device_get(state_lib.create_train_state(config, mesh))
    # Product encoding: the adversary's first conv reads 3 x 21 channels.
    assert initial.adversary.params["conv1_1"]["kernel"].shape == (3, 3, 63, 96)
    losses, final = {}, {}
    for setting in ("lax", "auto"):
        config.segmentor.conv_algorithm = setting
        segmentor, adversary = state_lib.build_models(config)
        step = steps.make_train_step(config, mesh, segmentor, adversary)
        state = jax.device_put(initial, sharding.replicated(mesh))
        history = []
        for i in range(STEPS):
            data = np.random.default_rng(i)
            labels = data.integers(0, 21, (1, CROP, CROP)).astype(np.int32)
            labels[:, :4] = 255  # Void rows.
            images = data.integers(0, 256, (1, CROP, CROP, 3)).astype(np.uint8)
            state, metrics = step(state, sharding.global_batch(
                    {"image": images, "label": labels}, mesh))
            history.append(steps.host_scalars(metrics))
        losses[setting], final[setting] = history, jax.device_get(state)
    for plain, by_taps in zip(losses["lax"], losses["auto"]):
        assert plain["nonfinite_segmentor"] == 0 and plain["nonfinite_adversary"] == 0
        for key in ("segmentor_loss", "cross_entropy", "adversarial_term", "adversary_loss"):
            assert np.isfinite(plain[key]), key
            assert by_taps[key] == pytest.approx(plain[key], rel=1e-4), key
    for name in ("segmentor", "adversary"):
        old = jax.tree.leaves(getattr(initial, name).params)
        new = jax.tree.leaves(getattr(final["auto"], name).params)
        assert any(not np.array_equal(a, b) for a, b in zip(old, new)), name
