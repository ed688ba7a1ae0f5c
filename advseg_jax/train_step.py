"""The data-parallel steps: `jax.jit` over `jax.shard_map` on the `data` axis.

One step = adversary update(s) on the stop-gradient prediction, then the segmentor update
through the (updated) adversary. Each device computes gradients on its rows; `lax.pmean` makes
them the global-batch gradient, exactly pmap's model. The cross-entropy is normalised by the
number of valid pixels of the *global* batch, so 1 and N devices compute the same loss.
"""

import functools
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training import train_state
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from advseg_jax import accumulation
from advseg_jax import encodings
from advseg_jax import losses
from advseg_jax import memory_fit
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
                           adversary: Optional[nn.Module],
                           microbatch_size: int) -> Tuple[state_lib.AdvSegState, dict]:
    images = batch["image"].astype(jnp.float32)
    labels = batch["label"]
    num_devices = lax.psum(1, DATA)
    valid_pixels = lax.psum(jnp.sum(labels != IGNORE_LABEL).astype(jnp.float32), DATA)
    ce_scale = num_devices / jnp.maximum(valid_pixels, 1.0)  # pmean(scaled sum) = global mean.
    rng = jax.random.fold_in(jax.random.key(config.seed), state.step)

    # K microbatches of `microbatch_size` rows (accumulation.py): K = 1 is the plain step.
    # Within one, on CPU, the models run in cache-sized chunks (microbatch.py): speed only.
    rows = images.shape[0]
    k = rows // microbatch_size
    unroll = accumulation.unrolled_on()
    chunk = microbatch.chunk_rows(0, microbatch_size, *images.shape[1:3])
    share = (lambda mean: mean / k) if k > 1 else (lambda mean: mean)  # A microbatch's 1/K.
    batch_rows = {"image": images, "label": labels}
    stochastic = accumulation.needs_rng(
        lambda x: segmentor.apply({"params": state.segmentor.params}, x, train=True), images[:1])
    if stochastic:  # One dropout key per global row: the same masks for any K or device count.
        batch_rows["key"] = accumulation.row_keys(rng, rows, lax.axis_index(DATA) * rows)

    def forward(params, part):
        if not stochastic:
            apply = lambda x: segmentor.apply({"params": params}, x, train=True)
            return microbatch.apply_in_chunks(apply, part["image"], chunk=chunk)
        one = lambda x, key: segmentor.apply({"params": params}, x, train=True,
                                             rngs={"dropout": key})
        apply = functools.partial(accumulation.apply_per_example, one)
        return microbatch.apply_in_chunks(apply, part["image"], part["key"], chunk=chunk)

    if k == 1:  # The forward pass is shared by both players' updates (jax.vjp).
        logits, segmentor_vjp = jax.vjp(lambda p: forward(p, batch_rows),
                                        state.segmentor.params)
    elif adversary is not None:  # Predictions for the adversary, one microbatch at a time.
        logits = accumulation.map_microbatches(
            lambda part: lax.stop_gradient(forward(state.segmentor.params, part)),
            batch_rows, k, unroll=unroll)
    metrics, finite = {}, {}
    new_adversary = state.adversary
    if adversary is not None:
        out_shape = logits.shape[1:3]
        small_labels = _resize_nearest(labels, out_shape)
        small_images = _resize_bilinear(images / 255.0, out_shape)
        batch_rows["small_image"] = small_images
        probs = jax.nn.softmax(lax.stop_gradient(logits), axis=-1)
        real, fake = encodings.adversary_inputs(
            config.adversary.encoding, small_labels, probs, small_images,
            config.adversary.tau, IGNORE_LABEL)

        def adversary_loss(params, part):
            apply = functools.partial(microbatch.apply_in_chunks,
                                      functools.partial(adversary.apply, {"params": params},
                                                        train=True), chunk=chunk)
            real_logits = apply(part["small_image"], part["real"])
            fake_logits = apply(part["small_image"], part["fake"])
            # Means over equal microbatches: 1/K of each sums to the batch's mean.
            diagnostics = losses.adversary_diagnostics(real_logits, fake_logits)
            return (share(losses.adversary_loss(real_logits, fake_logits)),
                    jax.tree.map(share, diagnostics))

        def adversary_update(adv_state, _):
            (loss, diagnostics), grads = accumulation.sum_value_and_grad(
                adversary_loss, adv_state.params,
                {"small_image": small_images, "real": real, "fake": fake}, k, unroll=unroll)
            grads = lax.pmean(grads, DATA)
            ok = jnp.isfinite(lax.pmean(loss, DATA)) & _all_finite(grads)
            updated = _keep_if(ok, adv_state.apply_gradients(grads=grads), adv_state)
            return updated, (loss, ok, diagnostics)

        new_adversary, outputs = _unrolled(adversary_update, state.adversary,
                                           config.adversary.steps_per_segmentor_step)
        adv_losses, adv_ok, diagnostics = jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)
        metrics["adversary_loss"] = jnp.mean(adv_losses)
        metrics.update(jax.tree.map(lambda x: x[-1], diagnostics))
        finite["adversary"] = jnp.all(adv_ok)

    def segmentor_loss(logits, part):
        """This microbatch's share of the batch's loss (global pixel count, 1/K of means)."""
        ce_sum, _ = losses.masked_cross_entropy(
            _resize_bilinear(logits, part["label"].shape[1:3]), part["label"], IGNORE_LABEL)
        parts = {"cross_entropy": ce_sum * ce_scale}
        total = parts["cross_entropy"]
        if adversary is not None:
            probs = jax.nn.softmax(logits, axis=-1)
            fake = encodings.encode(config.adversary.encoding, probs, part["small_image"])
            fake_logits = microbatch.apply_in_chunks(
                functools.partial(adversary.apply, {"params": new_adversary.params}, train=True),
                part["small_image"], fake, chunk=chunk)
            parts["adversarial_term"] = share(losses.segmentor_adversarial_loss(
                fake_logits, config.adversarial_loss))
            total = total + optim.adversarial_weight(config, state.step) * parts["adversarial_term"]
        return total, parts

    if k == 1:
        (total, parts), logits_grad = jax.value_and_grad(segmentor_loss, has_aux=True)(
            logits, batch_rows)
        (grads,) = segmentor_vjp(logits_grad)
    else:  # Forward again, microbatch by microbatch, through the updated adversary.
        (total, parts), grads = accumulation.sum_value_and_grad(
            lambda params, part: segmentor_loss(forward(params, part), part),
            state.segmentor.params, batch_rows, k, unroll=unroll,
            after=None if adversary is None else new_adversary.params)
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
                    adversary: Optional[nn.Module]) -> memory_fit.SizedStep:
    """jit(shard_map(step)): state replicated, batch split on `data`, the state donated.

    Called like a jitted function; its microbatch size (config.microbatch_size, 0 = the
    largest that fits the device's memory) is settled at the first call or `lower`.
    """

    def build(microbatch_size: int):
        step = functools.partial(_per_device_train_step, config=config, segmentor=segmentor,
                                 adversary=adversary, microbatch_size=microbatch_size)
        # check_vma=False: gradients stay per-device until our explicit pmean, as under pmap.
        mapped = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA)), out_specs=(P(), P()),
                               check_vma=False)
        return jax.jit(mapped, donate_argnums=(0,))

    return memory_fit.SizedStep(build, config, mesh)


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
