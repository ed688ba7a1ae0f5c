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


def _global_mean(values_sum: jnp.ndarray, count: jnp.ndarray) -> jnp.ndarray:
    """This device's share of a mean over the global batch: pmean of it is that mean."""
    return values_sum * lax.psum(1, DATA) / jnp.maximum(lax.psum(count, DATA), 1.0)


def _bce(logits: jnp.ndarray, target: float, weights: jnp.ndarray) -> jnp.ndarray:
    """Adversary BCE: per example (the paper's adversaries) or over non-void pixels (fcn).

    Per-example logits take the local mean, as always: every device holds as many rows, so
    the pmean of the gradients is the global batch's. Pixels differ per device, hence the
    global normalisation of the per-pixel form.
    """
    if logits.ndim == 1:
        return losses.binary_cross_entropy(logits, target)
    return _global_mean(*losses.masked_binary_cross_entropy(logits, target, weights))


def _adversarial_term(fake_logits: jnp.ndarray, weights: jnp.ndarray, form: str) -> jnp.ndarray:
    if fake_logits.ndim == 1:
        return losses.segmentor_adversarial_loss(fake_logits, form)
    return _global_mean(*losses.masked_segmentor_adversarial_loss(fake_logits, weights, form))


def _per_device_train_step(state: state_lib.AdvSegState, batch: dict, *,
                           config: ml_collections.ConfigDict, segmentor: nn.Module,
                           adversary: Optional[nn.Module]) -> Tuple[state_lib.AdvSegState, dict]:
    images = batch["image"].astype(jnp.float32)
    labels = batch["label"]
    # Unlabeled rows (Hung et al. 2018) run through the segmentor with the labeled ones.
    semi = "unlabeled_image" in batch
    rows = images.shape[0]
    inputs = (jnp.concatenate([images, batch["unlabeled_image"].astype(jnp.float32)])
              if semi else images)
    num_devices = lax.psum(1, DATA)
    valid_pixels = lax.psum(jnp.sum(labels != IGNORE_LABEL).astype(jnp.float32), DATA)
    ce_scale = num_devices / jnp.maximum(valid_pixels, 1.0)  # pmean(scaled sum) = global mean.
    rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
    rng = jax.random.fold_in(rng, lax.axis_index(DATA))

    chunk = microbatch.chunk_rows(config.microbatch_size, *images.shape[:3])

    def forward(params):
        apply = lambda x, rng: segmentor.apply({"params": params}, x, train=True,
                                               rngs={"dropout": rng})
        return microbatch.apply_in_chunks(apply, inputs, chunk=chunk, rng=rng)

    all_logits, segmentor_vjp = jax.vjp(forward, state.segmentor.params)
    out_shape = all_logits.shape[1:3]
    metrics, finite = {}, {}
    new_adversary = state.adversary
    encoding = config.adversary.encoding
    if adversary is not None:
        map_shape = (labels.shape[1:3] if config.adversary.label_resolution == "input"
                     else out_shape)
        small_labels = _resize_nearest(labels, map_shape)
        label_weights = small_labels != IGNORE_LABEL
        small_images = _resize_bilinear(images / 255.0, map_shape)
        probs = jax.nn.softmax(_resize_bilinear(lax.stop_gradient(all_logits[:rows]), map_shape),
                               axis=-1)
        real, fake = encodings.adversary_inputs(encoding, small_labels, probs, small_images,
                                                config.adversary.tau, IGNORE_LABEL)
        fake_images, fake_weights = small_images, label_weights
        if semi:
            # The unlabeled pixels that are image (not crop padding) count; their masks, if the
            # split has any, are read only by the selection diagnostics below.
            u_weights = _resize_nearest(batch["unlabeled_valid"].astype(jnp.int32),
                                        map_shape) > 0
            u_images = _resize_bilinear(inputs[rows:] / 255.0, map_shape)
            u_probs = jax.nn.softmax(
                _resize_bilinear(lax.stop_gradient(all_logits[rows:]), map_shape), axis=-1)
            fake = jnp.concatenate([fake, encodings.encode(encoding, u_probs, u_images)])
            fake_images = jnp.concatenate([small_images, u_images])
            fake_weights = jnp.concatenate([label_weights, u_weights])

        def adversary_loss(params):
            apply = functools.partial(microbatch.apply_in_chunks,
                                      functools.partial(adversary.apply, {"params": params},
                                                        train=True), chunk=chunk)
            real_logits, fake_logits = apply(small_images, real), apply(fake_images, fake)
            loss = _bce(real_logits, 1.0, label_weights) + _bce(fake_logits, 0.0, fake_weights)
            return loss, (real_logits, fake_logits)

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
        if real_logits.ndim > 2:  # Per pixel: over the global batch's non-void pixels.
            diagnostics = losses.adversary_diagnostics(
                real_logits[-1], fake_logits[-1], label_weights, fake_weights,
                total=lambda x: lax.psum(jnp.sum(x), DATA))
        else:
            diagnostics = losses.adversary_diagnostics(real_logits[-1], fake_logits[-1])
        metrics.update(diagnostics)
        finite["adversary"] = jnp.all(adv_ok)

    def discriminate(label_probs, map_images):
        return microbatch.apply_in_chunks(
            functools.partial(adversary.apply, {"params": new_adversary.params}, train=True),
            map_images, encodings.encode(encoding, label_probs, map_images), chunk=chunk)

    def segmentor_loss(all_logits):
        logits = all_logits[:rows]
        ce_sum, _ = losses.masked_cross_entropy(
            _resize_bilinear(logits, labels.shape[1:3]), labels, IGNORE_LABEL)
        parts, diagnostics = {"cross_entropy": ce_sum * ce_scale}, {}
        total = parts["cross_entropy"]
        if adversary is None:
            return total, (parts, diagnostics)
        fake_logits = discriminate(jax.nn.softmax(_resize_bilinear(logits, map_shape), axis=-1),
                                   small_images)
        parts["adversarial_term"] = _adversarial_term(fake_logits, label_weights,
                                                      config.adversarial_loss)
        total = total + optim.adversarial_weight(config, state.step) * parts["adversarial_term"]
        if semi:
            weights = optim.semi_weights(config, state.step)
            u_logits = _resize_bilinear(all_logits[rows:], map_shape)
            u_fake_logits = discriminate(jax.nn.softmax(u_logits, axis=-1), u_images)
            parts["adversarial_term_unlabeled"] = _adversarial_term(
                u_fake_logits, u_weights, config.adversarial_loss)
            total = total + (weights["lambda_adv_unlabeled"]
                             * parts["adversarial_term_unlabeled"])
            if u_fake_logits.ndim > 1:  # A confidence map: self-training can select pixels.
                selected = losses.self_training_mask(u_fake_logits, u_weights,
                                                     config.semi_threshold)
                ce_semi, count, targets = losses.self_training_cross_entropy(u_logits, selected)
                if config.lambda_semi > 0:
                    parts["self_training_loss"] = _global_mean(ce_semi, count)
                    total = total + weights["lambda_semi"] * parts["self_training_loss"]
                diagnostics.update(_selection_diagnostics(
                    selected, u_weights, targets, _resize_nearest(batch["unlabeled_label"],
                                                                   map_shape)))
        return total, (parts, diagnostics)

    (total, (parts, diagnostics)), logits_grad = jax.value_and_grad(
        segmentor_loss, has_aux=True)(all_logits)
    (grads,) = segmentor_vjp(logits_grad)
    grads = lax.pmean(grads, DATA)
    metrics.update(parts)
    metrics["segmentor_loss"] = total
    metrics = lax.pmean(metrics, DATA)
    metrics.update(diagnostics)  # Already global.
    finite["segmentor"] = jnp.isfinite(metrics["segmentor_loss"]) & _all_finite(grads)
    new_segmentor = _keep_if(finite["segmentor"],
                             state.segmentor.apply_gradients(grads=grads), state.segmentor)
    if adversary is not None:
        # The adversary update stands only if the whole step is finite.
        new_adversary = _keep_if(finite["segmentor"], new_adversary, state.adversary)
    metrics.update({f"nonfinite_{k}": (~v).astype(jnp.float32) for k, v in finite.items()})
    return state_lib.AdvSegState(new_segmentor, new_adversary), metrics


def _selection_diagnostics(selected: jnp.ndarray, valid: jnp.ndarray, targets: jnp.ndarray,
                           hidden_labels: jnp.ndarray) -> dict:
    """Global fraction of unlabeled pixels picked for self-training, and how often the pick is
    right where the split has (hidden) labels: the honest check of the confidence map.

    -1 when no selected pixel has a label (a folder of images without masks).
    """
    labeled = selected & (hidden_labels != IGNORE_LABEL)
    counts = lax.psum(jnp.stack([
        jnp.sum(selected), jnp.sum(valid), jnp.sum(labeled),
        jnp.sum(labeled & (targets == hidden_labels))]).astype(jnp.float32), DATA)
    return {"semi_selected_fraction": counts[0] / jnp.maximum(counts[1], 1.0),
            "semi_selected_accuracy": jnp.where(counts[2] > 0,
                                                counts[3] / jnp.maximum(counts[2], 1.0), -1.0)}


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
