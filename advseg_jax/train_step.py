"""The data-parallel steps: `jax.jit` over `jax.shard_map` on the `data` axis.

One step = adversary update(s) on the stop-gradient prediction, then the segmentor update
through the (updated) adversary. Each device computes gradients on its rows; `lax.pmean` makes
them the global-batch gradient, exactly pmap's model. The cross-entropy is normalised by the
number of valid pixels of the *global* batch, so 1 and N devices compute the same loss.
"""

import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training import train_state
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from advseg_jax import encodings
from advseg_jax import losses
from advseg_jax import metrics as metrics_lib
from advseg_jax import microbatch
from advseg_jax import optim
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax.data.class_info import IGNORE_LABEL

DATA = sharding.DATA_AXIS


def _resize_nearest(labels: jnp.ndarray, shape: Tuple[int, int]) -> jnp.ndarray:
    """Nearest downsampling of [N, H, W] integer labels (pixel centres, no blending of ids)."""
    n, height, width = labels.shape
    if (height, width) == tuple(shape):
        return labels
    rows = (jnp.arange(shape[0]) * height // shape[0] + height // (2 * shape[0]))
    cols = (jnp.arange(shape[1]) * width // shape[1] + width // (2 * shape[1]))
    return labels[:, rows][:, :, cols]


def _resize_bilinear(x: jnp.ndarray, shape: Tuple[int, int]) -> jnp.ndarray:
    if tuple(x.shape[1:3]) == tuple(shape):
        return x
    return jax.image.resize(x, (x.shape[0], *shape, x.shape[-1]), "bilinear", antialias=False)


def _all_finite(tree) -> jnp.ndarray:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _keep_if(finite: jnp.ndarray, new: train_state.TrainState,
             old: train_state.TrainState) -> train_state.TrainState:
    """`new` if finite else `old` with its step advanced: a skipped step still counts."""
    kept = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    return kept.replace(step=new.step)


def _unrolled(update, carry, length: int):
    """Python-unrolled scan: XLA:CPU runs convolutions inside a While loop far slower."""
    outputs = []
    for _ in range(length):
        carry, out = update(carry, None)
        outputs.append(out)
    return carry, outputs


def _per_device_train_step(state: state_lib.AdvSegState, batch: dict, *,
                           config: ml_collections.ConfigDict, segmentor: nn.Module,
                           adversary: Optional[nn.Module]) -> Tuple[state_lib.AdvSegState, dict]:
    images = batch["image"].astype(jnp.float32)
    labels = batch["label"]
    num_devices = lax.psum(1, DATA)
    valid_pixels = lax.psum(jnp.sum(labels != IGNORE_LABEL).astype(jnp.float32), DATA)
    ce_scale = num_devices / jnp.maximum(valid_pixels, 1.0)  # pmean(scaled sum) = global mean.
    rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
    rng = jax.random.fold_in(rng, lax.axis_index(DATA))

    chunk = microbatch.chunk_rows(config.microbatch_size, *images.shape[:3])

    def forward(params):
        apply = lambda x, rng: segmentor.apply({"params": params}, x, train=True,
                                               rngs={"dropout": rng})
        return microbatch.apply_in_chunks(apply, images, chunk=chunk, rng=rng)

    logits, segmentor_vjp = jax.vjp(forward, state.segmentor.params)
    out_shape = logits.shape[1:3]
    metrics, finite = {}, {}
    new_adversary = state.adversary
    if adversary is not None:
        small_labels = _resize_nearest(labels, out_shape)
        small_images = _resize_bilinear(images / 255.0, out_shape)
        probs = jax.nn.softmax(lax.stop_gradient(logits), axis=-1)
        real, fake = encodings.adversary_inputs(
            config.adversary.encoding, small_labels, probs, small_images,
            config.adversary.tau, IGNORE_LABEL)

        def adversary_loss(params):
            apply = functools.partial(microbatch.apply_in_chunks,
                                      functools.partial(adversary.apply, {"params": params},
                                                        train=True), chunk=chunk)
            real_logits, fake_logits = apply(small_images, real), apply(small_images, fake)
            return losses.adversary_loss(real_logits, fake_logits), (real_logits, fake_logits)

        def adversary_update(adv_state, _):
            (loss, outputs), grads = jax.value_and_grad(adversary_loss, has_aux=True)(
                adv_state.params)
            grads = lax.pmean(grads, DATA)
            ok = jnp.isfinite(lax.pmean(loss, DATA)) & _all_finite(grads)
            updated = _keep_if(ok, adv_state.apply_gradients(grads=grads), adv_state)
            return updated, (loss, ok, *outputs)

        new_adversary, outputs = _unrolled(adversary_update, state.adversary,
                                           config.adversary.steps_per_segmentor_step)
        adv_losses, adv_ok, real_logits, fake_logits = jax.tree.map(
            lambda *xs: jnp.stack(xs), *outputs)
        metrics["adversary_loss"] = jnp.mean(adv_losses)
        metrics.update(losses.adversary_diagnostics(real_logits[-1], fake_logits[-1]))
        finite["adversary"] = jnp.all(adv_ok)

    def segmentor_loss(logits):
        ce_sum, _ = losses.masked_cross_entropy(
            _resize_bilinear(logits, labels.shape[1:3]), labels, IGNORE_LABEL)
        parts = {"cross_entropy": ce_sum * ce_scale}
        total = parts["cross_entropy"]
        if adversary is not None:
            probs = jax.nn.softmax(logits, axis=-1)
            fake = encodings.encode(config.adversary.encoding, probs, small_images)
            fake_logits = microbatch.apply_in_chunks(
                functools.partial(adversary.apply, {"params": new_adversary.params}, train=True),
                small_images, fake, chunk=chunk)
            parts["adversarial_term"] = losses.segmentor_adversarial_loss(
                fake_logits, config.adversarial_loss)
            total = total + optim.adversarial_weight(config, state.step) * parts["adversarial_term"]
        return total, parts

    (total, parts), logits_grad = jax.value_and_grad(segmentor_loss, has_aux=True)(logits)
    (grads,) = segmentor_vjp(logits_grad)
    grads = lax.pmean(grads, DATA)
    metrics.update(parts)
    metrics["segmentor_loss"] = total
    metrics = lax.pmean(metrics, DATA)
    finite["segmentor"] = jnp.isfinite(metrics["segmentor_loss"]) & _all_finite(grads)
    new_segmentor = _keep_if(finite["segmentor"],
                             state.segmentor.apply_gradients(grads=grads), state.segmentor)
    if adversary is not None:
        # The adversary update stands only if the whole step is finite.
        new_adversary = _keep_if(finite["segmentor"], new_adversary, state.adversary)
    metrics.update({f"nonfinite_{k}": (~v).astype(jnp.float32) for k, v in finite.items()})
    return state_lib.AdvSegState(new_segmentor, new_adversary), metrics


def make_train_step(config: ml_collections.ConfigDict, mesh: Mesh, segmentor: nn.Module,
                    adversary: Optional[nn.Module]) -> Callable[[state_lib.AdvSegState, dict], Any]:
    """jit(shard_map(step)): state replicated, batch split on `data`, the state donated."""
    step = functools.partial(_per_device_train_step, config=config, segmentor=segmentor,
                             adversary=adversary)
    # check_vma=False: gradients stay per-device until our explicit pmean, as under pmap.
    mapped = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA)), out_specs=(P(), P()),
                           check_vma=False)
    return jax.jit(mapped, donate_argnums=(0,))


def make_eval_step(config: ml_collections.ConfigDict, mesh: Mesh, segmentor: nn.Module):
    """(params, batch) → (confusion matrix summed over all devices, predictions split on `data`)."""

    def step(params, batch):
        logits = segmentor.apply({"params": params}, batch["image"].astype(jnp.float32),
                                 train=False)
        logits = _resize_bilinear(logits, batch["label"].shape[1:3])
        predictions = jnp.argmax(logits, axis=-1)
        confusion = metrics_lib.confusion_matrix(batch["label"], predictions, config.num_classes,
                                                 IGNORE_LABEL, weights=batch["pixel_mask"])
        return lax.psum(confusion, DATA), predictions.astype(jnp.uint8)

    mapped = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA)),
                           out_specs=(P(), P(DATA)), check_vma=False)
    return jax.jit(mapped)


def host_scalars(metrics: dict) -> dict:
    """Device metrics → Python floats."""
    return {k: float(np.asarray(v)) for k, v in metrics.items()}
