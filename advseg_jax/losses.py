"""Losses of adversarial segmentation (Luc et al. 2016, Eq. 1-3). Pure functions of arrays.

Cross-entropy returns a *sum* and a *count* so that the caller can normalise by the number of
valid pixels of the whole global batch — the same loss whether the batch sits on 1 or 8 devices.
"""

from typing import Tuple

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


def adversary_diagnostics(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> dict:
    """Accuracy on real and fake maps and mean D outputs: is the game balanced?"""
    return {
        "adversary_accuracy_real": jnp.mean((real_logits > 0).astype(jnp.float32)),
        "adversary_accuracy_fake": jnp.mean((fake_logits < 0).astype(jnp.float32)),
        "adversary_output_real": jnp.mean(jax.nn.sigmoid(real_logits)),
        "adversary_output_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
    }
