"""Label-map encodings fed to the adversary (Luc et al. 2016, Sec. 3.2).

The adversary must not win by spotting that ground truth is one-hot and predictions are not;
`product` and `scaling` take that shortcut away, `basic` leaves it (the paper's first baseline).
Void pixels carry no signal: in the real map they are filled with the (stop-gradient)
prediction, so at void pixels the real and the fake map are the same numbers.
"""

from typing import Tuple

import jax
import jax.numpy as jnp

ENCODINGS = ("basic", "product", "scaling")


def check_encoding(name: str) -> None:
    if name not in ENCODINGS:
        raise ValueError(f"Unknown adversary.encoding={name!r}; valid options: {list(ENCODINGS)}.")


def encoded_channels(name: str, num_classes: int) -> int:
    """Channels of the encoded label map: C for basic/scaling, 3C for product."""
    check_encoding(name)
    return 3 * num_classes if name == "product" else num_classes


def real_label_map(labels: jnp.ndarray, probs: jnp.ndarray, ignore_label: int) -> jnp.ndarray:
    """One-hot ground truth [N, h, w, C]; void pixels take the stop-gradient prediction."""
    probs = jax.lax.stop_gradient(probs)
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    return jnp.where((labels == ignore_label)[..., None], probs, one_hot)


def scale_label_map(one_hot: jnp.ndarray, probs: jnp.ndarray, tau: float) -> jnp.ndarray:
    """Scaling: true class gets y_l = max(τ, s_l); others s_c·(1 − y_l)/(1 − s_l).

    Where s_l >= τ the map *is* the prediction (ratio 1); elsewhere s_l < τ < 1, so the division
    is safe. Rows that are not one-hot (void pixels already hold s) are left as they are.
    """
    probs = jax.lax.stop_gradient(probs)
    is_one_hot = jnp.isclose(jnp.max(one_hot, axis=-1, keepdims=True), 1.0)
    s_true = jnp.sum(one_hot * probs, axis=-1, keepdims=True)
    y_true = jnp.maximum(tau, s_true)
    ratio = jnp.where(s_true >= tau, 1.0, (1.0 - tau) / jnp.maximum(1.0 - s_true, 1e-12))
    scaled = jnp.where(one_hot > 0.5, y_true, probs * ratio)
    return jnp.where(is_one_hot, scaled, one_hot)


def product_map(label_map: jnp.ndarray, images: jnp.ndarray) -> jnp.ndarray:
    """Product: every class map times every RGB channel, [N, h, w, 3C] (class-major order)."""
    n, h, w, c = label_map.shape
    return (label_map[..., :, None] * images[..., None, :]).reshape(n, h, w, 3 * c)


def encode(name: str, label_map: jnp.ndarray, images: jnp.ndarray) -> jnp.ndarray:
    """Adversary input from a label map (real or predicted) and images at its resolution."""
    check_encoding(name)
    return product_map(label_map, images) if name == "product" else label_map


def adversary_inputs(name: str, labels: jnp.ndarray, probs: jnp.ndarray, images: jnp.ndarray,
                     tau: float, ignore_label: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """(real, fake) encoded maps; `labels`, `probs`, `images` share the segmentor's resolution.

    `fake` keeps the gradient to `probs` (the segmentor learns through it); `real` does not.
    """
    real = real_label_map(labels, probs, ignore_label)
    if name == "scaling":
        real = scale_label_map(real, probs, tau)
    return encode(name, real, images), encode(name, probs, images)
