"""Chunked steps compute what unchunked ones do: outputs, gradients and 20 steps of losses."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advseg_jax import microbatch
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from accumulation_helpers import relative_error, stanford_pair


def test_chunk_rows_automatic_explicit_and_off():
    pixels = microbatch.AUTO_PIXELS_PER_CHUNK
    assert microbatch.chunk_rows(0, 16, 240, 320) == pixels // (240 * 320) == 2
    assert microbatch.chunk_rows(0, 32, 48, 48) == 32  # digit_scenes: one chunk, as before.
    assert microbatch.chunk_rows(0, 1, 321, 321) == 1
    assert microbatch.chunk_rows(0, 8, 1000, 1000) == 1  # Never below one row.
    assert microbatch.chunk_rows(3, 16, 240, 320) == 3
    assert microbatch.chunk_rows(64, 16, 240, 320) == 16  # >= rows: off.
    assert microbatch.chunk_rows(0, 16, 240, 320, platform="tpu") == 16  # Accelerators: off.
    assert microbatch.chunk_rows(3, 16, 240, 320, platform="gpu") == 3  # Unless asked.
    with pytest.raises(ValueError, match="microbatch_size=-1"):
        microbatch.chunk_rows(-1, 16, 240, 320)


def test_apply_in_chunks_concatenates_and_folds_the_rng():
    x = jnp.arange(10.0).reshape(5, 2)
    calls = []

    def fn(a, b, rng=None):
        calls.append((a.shape[0], rng))
        return a * 2 + b

    out = microbatch.apply_in_chunks(fn, x, x, chunk=2, rng=jax.random.key(7))
    np.testing.assert_array_equal(out, 3 * x)
    assert [n for n, _ in calls] == [2, 2, 1]  # A short last chunk.
    keys = [jax.random.key_data(r) for _, r in calls]
    expected = [jax.random.key_data(jax.random.fold_in(jax.random.key(7), i)) for i in range(3)]
    np.testing.assert_array_equal(np.stack(keys), np.stack(expected))
    calls.clear()
    microbatch.apply_in_chunks(fn, x, x, chunk=5, rng=jax.random.key(7))
    np.testing.assert_array_equal(jax.random.key_data(calls[0][1]),
                                  jax.random.key_data(jax.random.key(7)))  # Unchunked: as is.


@pytest.mark.parametrize("chunk", [2, 3])  # Automatic on CPU for Stanford; uneven (3 + 1).
def test_multiscale_and_adversary_values_and_gradients_match(chunk):
    """The Stanford models, chunked, against one plain call: outputs and all parameter grads."""
    pair = stanford_pair()
    segmentor, adversary, images, small = (pair[k] for k in ("segmentor", "adversary", "images",
                                                             "small"))
    seg_params, adv_params = pair["seg_params"], pair["adv_params"]

    def loss(seg_params, adv_params, rows):
        seg = functools.partial(segmentor.apply, {"params": seg_params})
        adv = functools.partial(adversary.apply, {"params": adv_params})
        logits = microbatch.apply_in_chunks(seg, images, chunk=rows)
        scores = microbatch.apply_in_chunks(adv, small, jax.nn.softmax(logits), chunk=rows)
        # Weights per row and pixel, so every row's output reaches the loss differently.
        weights = jnp.arange(1.0, 1.0 + logits.size).reshape(logits.shape) / logits.size
        return jnp.sum(jnp.sin(logits) * weights) + jnp.sum(scores * jnp.arange(1.0, 5.0))

    value_and_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    plain, plain_grads = value_and_grads(seg_params, adv_params, 4)
    chunked, chunked_grads = value_and_grads(seg_params, adv_params, chunk)
    assert relative_error(chunked, plain) < 1e-4
    for a, b in zip(jax.tree.leaves(chunked_grads), jax.tree.leaves(plain_grads)):
        assert relative_error(a, b) < 1e-4
        assert float(jnp.max(jnp.abs(b))) > 0  # Every gradient is exercised.


def test_twenty_chunked_steps_have_the_losses_of_plain_ones(tiny_config):
    """20 adversarial steps, 1 row per chunk against one chunk per device: same losses."""
    mesh = sharding.make_mesh()
    rows = tiny_config.batch_size // mesh.devices.size
    assert rows >= 2, "Each device must hold several rows for chunking to happen."
    tiny_config.input.crop_size = (48, 48)
    losses = {}
    for setting in (1, rows):
        tiny_config.microbatch_size = setting
        segmentor, adversary = state_lib.build_models(tiny_config)
        state = state_lib.create_train_state(tiny_config, mesh)
        step = steps.make_train_step(tiny_config, mesh, segmentor, adversary)
        history = []
        for i in range(20):
            data = np.random.default_rng(i)
            images = data.integers(0, 256, (tiny_config.batch_size, 48, 48, 3), dtype=np.uint8)
            labels = data.integers(0, tiny_config.num_classes, images.shape[:3]).astype(np.int32)
            state, metrics = step(state, sharding.global_batch(
                {"image": images, "label": labels}, mesh))
            history.append(steps.host_scalars(metrics))
        losses[setting] = history
    for plain, chunked in zip(losses[rows], losses[1]):
        for key in ("segmentor_loss", "cross_entropy", "adversarial_term", "adversary_loss"):
            assert chunked[key] == pytest.approx(plain[key], rel=1e-4), key
    # The run learned something, so the comparison covers moving parameters.
    assert losses[1][-1]["cross_entropy"] < losses[1][0]["cross_entropy"]
