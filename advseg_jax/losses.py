"""Losses of adversarial segmentation (Luc et al. 2016, Eq. 1-3; Hung et al. 2018, Eq. 2-5).

Pure functions of arrays.

Cross-entropy returns a *sum* and a *count* so that the caller can normalise by the number of
valid pixels of the whole global batch — the same loss whether the batch sits on 1 or 8 devices.
"""

from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import optax

ADVERSARIAL_FORMS = ("non_saturating", "saturating")


def masked_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                         ignore_label: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """(sum of per-pixel cross-entropy over non-void pixels, number of non-void pixels)."""
    valid = labels != ignore_label
    safe_labels = jnp.where(valid, labels, 0)
    per_pixel = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), safe_labels)
    return jnp.sum(jnp.where(valid, per_pixel, 0.0)), jnp.sum(valid).astype(jnp.float32)


def binary_cross_entropy(logits: jnp.ndarray, target: float) -> jnp.ndarray:
    """Mean BCE(sigmoid(logits), target), computed from logits for stability."""
    targets = jnp.full_like(logits, target, dtype=jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets))


def adversary_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
    """BCE(a(x, y), 1) + BCE(a(x, s(x)), 0): the adversary tells truth from prediction."""
    return binary_cross_entropy(real_logits, 1.0) + binary_cross_entropy(fake_logits, 0.0)


def segmentor_adversarial_loss(fake_logits: jnp.ndarray, form: str) -> jnp.ndarray:
    """The segmentor's adversarial term before the λ weight.

    "non_saturating": BCE(a(x, s(x)), 1) — strong gradients while the adversary wins (the
    paper's training choice). "saturating": −BCE(a(x, s(x)), 0) — the literal minimax term.
    """
    if form == "non_saturating":
        return binary_cross_entropy(fake_logits, 1.0)
    if form == "saturating":
        return -binary_cross_entropy(fake_logits, 0.0)
    raise ValueError(f"Unknown adversarial_loss={form!r}; "
                     f"valid options: {list(ADVERSARIAL_FORMS)}.")


def adversary_diagnostics(real_logits: jnp.ndarray, fake_logits: jnp.ndarray,
                          real_weights=None, fake_weights=None, total=jnp.sum,
                          counts: Optional[Tuple[jnp.ndarray, jnp.ndarray]] = None) -> dict:
    """Accuracy on real and fake maps and mean D outputs: is the game balanced?

    Per-pixel logits come with weights (1 on non-void pixels), so void pixels, where the real
    and the fake map hold the same numbers, do not blur the figures; `total` sums a weighted
    figure (over all devices, in the step, so the means are the global batch's). `counts`:
    the real and fake weights' totals over the whole batch when these logits are one
    microbatch of it, so that the microbatches' figures sum to the batch's means.
    """
    def mean(values, weights, count):
        if weights is None:
            return jnp.mean(values)
        weights = weights.astype(jnp.float32)
        count = total(weights) if count is None else count
        return total(values * weights) / jnp.maximum(count, 1.0)

    real_count, fake_count = (None, None) if counts is None else counts
    return {
        "adversary_accuracy_real": mean((real_logits > 0).astype(jnp.float32), real_weights,
                                        real_count),
        "adversary_accuracy_fake": mean((fake_logits < 0).astype(jnp.float32), fake_weights,
                                        fake_count),
        "adversary_output_real": mean(jax.nn.sigmoid(real_logits), real_weights, real_count),
        "adversary_output_fake": mean(jax.nn.sigmoid(fake_logits), fake_weights, fake_count),
    }


# Per-pixel forms (Hung et al. 2018): a fully convolutional discriminator's logits [N, h, w].
# Each returns (sum over weighted pixels, sum of weights) so that the step normalises by the
# pixels of the global batch, as it does the cross-entropy.

def masked_binary_cross_entropy(logits: jnp.ndarray, target: float,
                                weights: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """(Σ w·BCE(sigmoid(logits), target), Σ w): void pixels (w = 0) count nowhere."""
    weights = weights.astype(jnp.float32)
    targets = jnp.full_like(logits, target, dtype=jnp.float32)
    per_pixel = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
    return jnp.sum(jnp.where(weights > 0, per_pixel, 0.0) * weights), jnp.sum(weights)


def masked_segmentor_adversarial_loss(fake_logits: jnp.ndarray, weights: jnp.ndarray,
                                      form: str) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """`segmentor_adversarial_loss` per pixel: (signed weighted sum, Σ w)."""
    if form == "non_saturating":
        return masked_binary_cross_entropy(fake_logits, 1.0, weights)
    if form == "saturating":
        total, count = masked_binary_cross_entropy(fake_logits, 0.0, weights)
        return -total, count
    raise ValueError(f"Unknown adversarial_loss={form!r}; "
                     f"valid options: {list(ADVERSARIAL_FORMS)}.")


def self_training_mask(confidence_logits: jnp.ndarray, valid: jnp.ndarray,
                       threshold: float) -> jnp.ndarray:
    """Pixels trusted for self-training: discriminator confidence sigmoid(d) > T_semi, not void.

    Hung et al. 2018, Eq. 5: the confidence is the discriminator's belief that the prediction
    at that pixel is ground truth. No gradient flows through the selection.
    """
    confidence = jax.nn.sigmoid(jax.lax.stop_gradient(confidence_logits).astype(jnp.float32))
    return (confidence > threshold) & valid


def softmax_self_training_mask(logits: jnp.ndarray, valid: jnp.ndarray,
                               threshold: float) -> jnp.ndarray:
    """Pixels trusted for self-training by the segmentor's own confidence: max softmax > T.

    FixMatch-style selection (UniMatch keeps softmax >= 0.95): needs no discriminator, whose
    map collapsed to "everything is fake" in stanford_semi_fold0. No gradient flows through it.
    """
    probabilities = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
    return (jnp.max(probabilities, axis=-1) > threshold) & valid


def self_training_cross_entropy(logits: jnp.ndarray, selected: jnp.ndarray
                                ) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(Σ CE(logits, argmax logits) over selected pixels, their count, the targets).

    The targets are the segmentor's own stop-gradient argmax: L_semi sharpens the prediction
    where the discriminator trusts it, rather than pulling it towards anything new.
    """
    targets = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
    per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                                targets)
    return (jnp.sum(jnp.where(selected, per_pixel, 0.0)),
            jnp.sum(selected).astype(jnp.float32), targets)
