"""The data-parallel steps: `jax.jit` over `jax.shard_map` on the `data` axis.

One step = adversary update(s) on the stop-gradient prediction, then the segmentor update
through the (updated) adversary. Each device computes gradients on its rows; `lax.pmean` makes
them the global-batch gradient, exactly pmap's model. The cross-entropy is normalised by the
number of valid pixels of the *global* batch, so 1 and N devices compute the same loss.
"""

import functools
from typing import Callable, Optional, Tuple

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
from advseg_jax import platforms
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


def _image_or_pixel_mean(values_sum_or_mean, total: Optional[jnp.ndarray], k: int):
    """This microbatch's share of a batch mean: per-example means are 1/K of equal microbatches;
    per-pixel sums are divided by the pixels of the whole global batch (`total`), so that the
    pmean over devices and the sum over microbatches give the global batch's mean."""
    if total is None:
        return values_sum_or_mean / k if k > 1 else values_sum_or_mean  # K = 1: main's program.
    return values_sum_or_mean * lax.psum(1, DATA) / jnp.maximum(total, 1.0)


def _bce(logits: jnp.ndarray, target: float, weights: jnp.ndarray,
         total: Optional[jnp.ndarray], k: int) -> jnp.ndarray:
    """Adversary BCE: per example (the paper's adversaries) or over non-void pixels (fcn)."""
    if logits.ndim == 1:  # The sum of the two terms is losses.adversary_loss, as on main.
        return _image_or_pixel_mean(losses.binary_cross_entropy(logits, target), None, k)
    return _image_or_pixel_mean(
        losses.masked_binary_cross_entropy(logits, target, weights)[0], total, k)


def _adversarial_term(fake_logits: jnp.ndarray, weights: jnp.ndarray, form: str,
                      total: Optional[jnp.ndarray], k: int) -> jnp.ndarray:
    if fake_logits.ndim == 1:
        return _image_or_pixel_mean(losses.segmentor_adversarial_loss(fake_logits, form), None, k)
    return _image_or_pixel_mean(
        losses.masked_segmentor_adversarial_loss(fake_logits, weights, form)[0], total, k)


def _global_count(weights: jnp.ndarray) -> jnp.ndarray:
    return lax.psum(jnp.sum(weights).astype(jnp.float32), DATA)


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
    # Unlabeled rows (Hung et al. 2018) run through the segmentor with the labeled ones: each
    # microbatch takes 1/K of each, so K must divide both (memory_fit and config_checks see to it).
    semi = "unlabeled_image" in batch
    # Self-training by the segmentor's softmax needs the unlabeled logits but no discriminator.
    softmax_selection = semi and not optim.discriminator_selects(config)
    needs_maps = adversary is not None or softmax_selection
    unlabeled_rows = batch["unlabeled_image"].shape[0] if semi else 0
    if semi and unlabeled_rows % k:
        raise ValueError(f"{unlabeled_rows} unlabeled rows per device cannot be cut into {k} "
                         f"microbatches (microbatch_size={microbatch_size} of {rows} labeled "
                         "rows): make the unlabeled batch a multiple of the microbatch count.")
    unroll = accumulation.unrolled_on(loop=config.accumulation_loop)
    chunk = microbatch.chunk_rows(0, microbatch_size, *images.shape[1:3])
    batch_rows = {"image": images, "label": labels}
    if semi:
        batch_rows["unlabeled_image"] = batch["unlabeled_image"].astype(jnp.float32)
    stochastic = accumulation.needs_rng(
        lambda x: segmentor.apply({"params": state.segmentor.params}, x, train=True), images[:1])
    if stochastic:  # One dropout key per global row: the same masks for any K or device count.
        # Global rows: the labeled batch's, then the unlabeled batch's (numbered after it).
        device = lax.axis_index(DATA)
        batch_rows["key"] = accumulation.row_keys(rng, rows, device * rows)
        if semi:
            batch_rows["unlabeled_key"] = accumulation.row_keys(
                rng, unlabeled_rows, num_devices * rows + device * unlabeled_rows)

    def forward(params, part):
        """Logits of the microbatch's labeled rows, then of its unlabeled ones."""
        inputs = part["image"]
        if semi:
            inputs = jnp.concatenate([inputs, part["unlabeled_image"]])
        if not stochastic:
            apply = lambda x: segmentor.apply({"params": params}, x, train=True)
            return microbatch.apply_in_chunks(apply, inputs, chunk=chunk)
        keys = (jnp.concatenate([part["key"], part["unlabeled_key"]]) if semi
                else part["key"])
        one = lambda x, key: segmentor.apply({"params": params}, x, train=True,
                                             rngs={"dropout": key})
        apply = functools.partial(accumulation.apply_per_example, one)
        return microbatch.apply_in_chunks(apply, inputs, keys, chunk=chunk)

    if k == 1:  # The forward pass is shared by both players' updates (jax.vjp).
        all_logits, segmentor_vjp = jax.vjp(lambda p: forward(p, batch_rows),
                                            state.segmentor.params)
    elif needs_maps:  # Predictions for the adversary/selection, one microbatch at a time.
        all_logits = accumulation.map_microbatches(
            lambda part: lax.stop_gradient(forward(state.segmentor.params, part)),
            batch_rows, k, unroll=unroll)
        if semi:  # [labeled; unlabeled] per microbatch -> all labeled rows, then all unlabeled.
            per_microbatch = all_logits.reshape(k, -1, *all_logits.shape[1:])
            all_logits = jnp.concatenate(
                [per_microbatch[:, :rows // k].reshape(rows, *all_logits.shape[1:]),
                 per_microbatch[:, rows // k:].reshape(unlabeled_rows, *all_logits.shape[1:])])
    metrics, finite = {}, {}
    new_adversary = state.adversary
    encoding = config.adversary.encoding
    if needs_maps:  # adversary.label_resolution also sets where self-training selects pixels.
        map_shape = (labels.shape[1:3] if config.adversary.label_resolution == "input"
                     else all_logits.shape[1:3])
    if semi and needs_maps:
        # The unlabeled pixels that are image (not crop padding) count; their masks, if the
        # split has any, are read only by the selection diagnostics below.
        u_weights = _resize_nearest(batch["unlabeled_valid"].astype(jnp.int32), map_shape) > 0
        u_map_logits = _resize_bilinear(lax.stop_gradient(all_logits[rows:]), map_shape)
        batch_rows["unlabeled_weight"] = u_weights
        u_total = _global_count(u_weights)
    if adversary is not None:
        small_labels = _resize_nearest(labels, map_shape)
        label_weights = small_labels != IGNORE_LABEL
        small_images = _resize_bilinear(images / 255.0, map_shape)
        batch_rows["small_image"] = small_images
        batch_rows["label_weight"] = label_weights
        probs = jax.nn.softmax(_resize_bilinear(lax.stop_gradient(all_logits[:rows]), map_shape),
                               axis=-1)
        real, fake = encodings.adversary_inputs(encoding, small_labels, probs, small_images,
                                                config.adversary.tau, IGNORE_LABEL)
        adversary_rows = {"small_image": small_images, "real": real, "real_weight": label_weights,
                          "fake_image": small_images, "fake": fake, "fake_weight": label_weights}
        if semi:
            u_images = _resize_bilinear(batch_rows["unlabeled_image"] / 255.0, map_shape)
            u_probs = jax.nn.softmax(u_map_logits, axis=-1)
            adversary_rows.update(
                fake=jnp.concatenate([fake, encodings.encode(encoding, u_probs, u_images)]),
                fake_image=jnp.concatenate([small_images, u_images]),
                fake_weight=jnp.concatenate([label_weights, u_weights]))
            batch_rows["unlabeled_small_image"] = u_images
        real_total = _global_count(label_weights)
        fake_total = _global_count(adversary_rows["fake_weight"])

        def adversary_loss(params, part):
            apply = functools.partial(microbatch.apply_in_chunks,
                                      functools.partial(adversary.apply, {"params": params},
                                                        train=True), chunk=chunk)
            real_logits = apply(part["small_image"], part["real"])
            fake_logits = apply(part["fake_image"], part["fake"])
            loss = (_bce(real_logits, 1.0, part["real_weight"], real_total, k)
                    + _bce(fake_logits, 0.0, part["fake_weight"], fake_total, k))
            if real_logits.ndim > 1:  # Per pixel: shares of the global batch's non-void pixels.
                return loss, losses.adversary_diagnostics(
                    real_logits, fake_logits, part["real_weight"], part["fake_weight"],
                    total=lambda x: lax.psum(jnp.sum(x), DATA), counts=(real_total, fake_total))
            diagnostics = losses.adversary_diagnostics(real_logits, fake_logits)
            # Means over equal microbatches: 1/K of each sums to the batch's mean.
            return loss, jax.tree.map(lambda x: _image_or_pixel_mean(x, None, k), diagnostics)

        def adversary_update(adv_state, _):
            (loss, diagnostics), grads = accumulation.sum_value_and_grad(
                adversary_loss, adv_state.params, adversary_rows, k, unroll=unroll)
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

    def discriminate(label_probs, map_images):
        return microbatch.apply_in_chunks(
            functools.partial(adversary.apply, {"params": new_adversary.params}, train=True),
            map_images, encodings.encode(encoding, label_probs, map_images), chunk=chunk)

    selected_total, selection = None, {}
    if semi and k > 1:
        # Self-training's pixels and their global count, chosen before the accumulation (the
        # loss is normalised by the count over the whole batch), from the stop-gradient
        # predictions, which are the values K = 1 selects from: by their softmax, or by the
        # updated discriminator's verdict on them.
        selected = None
        if softmax_selection:
            selected = losses.softmax_self_training_mask(u_map_logits, u_weights,
                                                         config.semi_threshold)
        else:
            u_confidence = accumulation.map_microbatches(
                lambda part: discriminate(part["probs"], part["image"]),
                {"probs": u_probs, "image": u_images}, k, unroll=unroll)
            if u_confidence.ndim > 1:
                selected = losses.self_training_mask(u_confidence, u_weights,
                                                     config.semi_threshold)
        if selected is not None:
            batch_rows["unlabeled_selected"] = selected
            selected_total = lax.psum(jnp.sum(selected).astype(jnp.float32), DATA)
            selection = {"selected": selected, "targets": jnp.argmax(u_map_logits, axis=-1)}

    def segmentor_loss(all_logits, part):
        """This microbatch's share of the batch's loss (global pixel count, 1/K of means)."""
        logits = all_logits[:rows // k]
        ce_sum, _ = losses.masked_cross_entropy(
            _resize_bilinear(logits, part["label"].shape[1:3]), part["label"], IGNORE_LABEL)
        parts, selection = {"cross_entropy": ce_sum * ce_scale}, {}
        total = parts["cross_entropy"]
        if adversary is not None:
            fake_logits = discriminate(
                jax.nn.softmax(_resize_bilinear(logits, map_shape), axis=-1), part["small_image"])
            parts["adversarial_term"] = _adversarial_term(
                fake_logits, part["label_weight"], config.adversarial_loss, real_total, k)
            total = total + (optim.adversarial_weight(config, state.step)
                             * parts["adversarial_term"])
        if semi:  # The microbatch's unlabeled rows follow its labeled ones.
            weights = optim.semi_weights(config, state.step)
            u_logits = _resize_bilinear(all_logits[rows // k:], map_shape)
            u_weight = part["unlabeled_weight"]
            selectable = softmax_selection
            if adversary is not None:
                u_fake_logits = discriminate(jax.nn.softmax(u_logits, axis=-1),
                                             part["unlabeled_small_image"])
                parts["adversarial_term_unlabeled"] = _adversarial_term(
                    u_fake_logits, u_weight, config.adversarial_loss, u_total, k)
                total = total + (weights["lambda_adv_unlabeled"]
                                 * parts["adversarial_term_unlabeled"])
                # A confidence map: the discriminator can select pixels.
                selectable = selectable or u_fake_logits.ndim > 1
            if selectable:
                if k > 1:
                    selected = part["unlabeled_selected"]
                elif softmax_selection:
                    selected = losses.softmax_self_training_mask(u_logits, u_weight,
                                                                 config.semi_threshold)
                else:
                    selected = losses.self_training_mask(u_fake_logits, u_weight,
                                                         config.semi_threshold)
                ce_semi, count, targets = losses.self_training_cross_entropy(u_logits, selected)
                if config.lambda_semi > 0:
                    parts["self_training_loss"] = _image_or_pixel_mean(
                        ce_semi, lax.psum(count, DATA) if k == 1 else selected_total, 1)
                    total = total + weights["lambda_semi"] * parts["self_training_loss"]
                if k == 1:  # K > 1 selected before the accumulation.
                    selection = {"selected": selected, "targets": targets}
        return total, (parts, selection)

    if k == 1:
        (total, (parts, selection)), logits_grad = jax.value_and_grad(
            segmentor_loss, has_aux=True)(all_logits, batch_rows)
        (grads,) = segmentor_vjp(logits_grad)
    else:  # Forward again, microbatch by microbatch, through the updated adversary.
        (total, (parts, _)), grads = accumulation.sum_value_and_grad(
            lambda params, part: segmentor_loss(forward(params, part), part),
            state.segmentor.params, batch_rows, k, unroll=unroll,
            after=None if adversary is None else new_adversary.params)
    grads = lax.pmean(grads, DATA)
    metrics.update(parts)
    metrics["segmentor_loss"] = total
    metrics = lax.pmean(metrics, DATA)
    if selection:  # Global already: _selection_diagnostics sums over the devices.
        metrics.update(_selection_diagnostics(
            selection["selected"], u_weights, selection["targets"],
            _resize_nearest(batch["unlabeled_label"], map_shape)))
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

    -1 when no selected pixel has a label (a folder of images without masks, or no pixel
    selected); the scored pixels' count lets a log interval weight each step's accuracy.
    """
    labeled = selected & (hidden_labels != IGNORE_LABEL)
    counts = lax.psum(jnp.stack([
        jnp.sum(selected), jnp.sum(valid), jnp.sum(labeled),
        jnp.sum(labeled & (targets == hidden_labels))]).astype(jnp.float32), DATA)
    return {"semi_selected_fraction": counts[0] / jnp.maximum(counts[1], 1.0),
            "semi_selected_accuracy": jnp.where(counts[2] > 0,
                                                counts[3] / jnp.maximum(counts[2], 1.0), -1.0),
            "semi_selected_scored_pixels": counts[2]}


def _on_mesh_platform(mesh: Mesh, fn: Callable) -> Callable:
    """`fn` traced inside `platforms.tracing_for(mesh)`: its backend choices (scan or unrolled,
    chunks, convolutions by taps) follow the mesh's devices, not JAX's default backend."""

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with platforms.tracing_for(mesh):
            return fn(*args, **kwargs)

    return traced


def make_train_step(config: ml_collections.ConfigDict, mesh: Mesh, segmentor: nn.Module,
                    adversary: Optional[nn.Module]) -> memory_fit.SizedStep:
    """jit(shard_map(step)): state replicated, batch split on `data`, the state donated.

    Called like a jitted function; its microbatch size (config.microbatch_size, 0 = the
    largest that fits the device's memory) is settled at the first call or `lower`.
    """

    def build(microbatch_size: int):
        step = _on_mesh_platform(mesh, functools.partial(
                _per_device_train_step, config=config, segmentor=segmentor,
                adversary=adversary, microbatch_size=microbatch_size))
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

    mapped = jax.shard_map(_on_mesh_platform(mesh, step), mesh=mesh, in_specs=(P(), P(DATA)),
                           out_specs=(P(), P(DATA)), check_vma=False)
    return jax.jit(mapped)


def host_scalars(metrics: dict) -> dict:
    """Device metrics → Python floats."""
    return {k: float(np.asarray(v)) for k, v in metrics.items()}
