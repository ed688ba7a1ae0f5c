"""Segmentation scores from one confusion matrix summed over the whole evaluation set.

Scores are ratios of sums, never means of per-image scores, so every pixel of every image
weighs the same and the result is independent of batching and device count.

Dependency-light on purpose (numpy and jax.numpy only): the void label is an argument, not an
import of the data package, which would pull in every TFDS builder.
"""

from typing import Dict, Optional, Sequence

import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: jnp.ndarray, predictions: jnp.ndarray, num_classes: int,
                     ignore_label: int, weights: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """[C, C] int32 counts, rows = true labels, columns = predictions; `ignore_label` skipped.

    `weights` (0/1, labels' shape) masks out padding. Works under jit and shard_map.
    """
    labels = labels.reshape(-1).astype(jnp.int32)
    predictions = predictions.reshape(-1).astype(jnp.int32)
    valid = labels != ignore_label
    if weights is not None:
        valid &= weights.reshape(-1).astype(bool)
    index = jnp.where(valid, labels * num_classes + predictions, 0)
    counts = jnp.bincount(index, weights=valid.astype(jnp.int32), length=num_classes**2)
    return counts.reshape(num_classes, num_classes).astype(jnp.int32)


def segmentation_scores(confusion,
                        class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """mean IoU, pixel accuracy, mean class accuracy, per-class IoU and accuracy.

    A class absent from labels and predictions (zero union) has IoU NaN and is left out of the
    mean; a class absent from the labels has accuracy NaN and is left out likewise. With
    `class_names`, the scores carry them (`class_names[i]` labels `per_class_*[i]`), so every
    file they are written to says which class each number is.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if class_names is not None and len(class_names) != len(confusion):
        raise ValueError(f"{len(class_names)} class names for a {len(confusion)}-class "
                         f"confusion matrix: {list(class_names)}.")
    true_positive = np.diag(confusion)
    label_count = confusion.sum(axis=1)
    union = label_count + confusion.sum(axis=0) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        class_accuracy = np.where(label_count > 0, true_positive / label_count, np.nan)
    total = confusion.sum()
    return {
        "mean_iou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "mean_class_accuracy": (float(np.nanmean(class_accuracy))
                                if np.any(label_count > 0) else float("nan")),
        **({"class_names": list(class_names)} if class_names is not None else {}),
        "per_class_iou": [float(v) for v in iou],
        "per_class_accuracy": [float(v) for v in class_accuracy],
    }
