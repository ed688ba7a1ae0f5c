"""A bfloat16 training run (config.dtype = "bfloat16", as on GPU/TPU): activations in
bfloat16, while parameters, optimizer states and losses stay float32, and the run trains."""

import jax
import jax.numpy as jnp
import numpy as np

from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps


def test_three_bfloat16_steps_keep_float32_state_and_finite_losses(tiny_config):
    config = tiny_config
    config.dtype, config.lambda_adv, config.input.crop_size = "bfloat16", 0.5, (32, 32)
    mesh = sharding.make_mesh()
    segmentor, adversary = state_lib.build_models(config)
    state = state_lib.create_train_state(config, mesh)
    initial = jax.device_get(state)
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = {"image": rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8),
                 "label": rng.integers(0, config.num_classes, (4, 32, 32)).astype(np.int32)}
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        scalars = steps.host_scalars(metrics)
        for key in ("cross_entropy", "adversarial_term", "adversary_loss", "segmentor_loss"):
            assert np.isfinite(scalars[key]) and scalars[key] > 0, key
    # The bfloat16 program really ran: the segmentor's convolutions compute in bfloat16.
    logits_dtypes = {str(v.dtype) for v in jax.tree.leaves(jax.eval_shape(
        lambda p, x: segmentor.apply({"params": p}, x, mutable=["intermediates"],
                                     capture_intermediates=True),
        state.segmentor.params, jnp.zeros((1, 32, 32, 3))))}
    assert "bfloat16" in logits_dtypes
    final = jax.device_get(state)
    for name in ("segmentor", "adversary"):
        model = getattr(final, name)
        floats = [leaf for leaf in jax.tree.leaves((model.params, model.opt_state))
                  if jnp.issubdtype(leaf.dtype, jnp.floating)]
        assert floats and all(leaf.dtype == jnp.float32 for leaf in floats), name
        before = jax.tree.leaves(getattr(initial, name).params)
        after = jax.tree.leaves(model.params)
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), name
