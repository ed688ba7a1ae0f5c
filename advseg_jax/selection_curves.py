"""What each self-training criterion would select: precision-coverage curves over a split.

Issue 32: in stanford_semi_fold0 the discriminator's confidence collapsed and selected ~0.1 %
of the unlabeled pixels; one threshold and its one (coverage, accuracy) pair cannot say whether
its map picks better pixels than the segmentor's own softmax. These curves score both criteria
at a grid of thresholds on a split whose masks never reach a loss (`selection_curves_split`).

Counts, not per-image means: per threshold the selected, the selected-and-labeled and the
selected-and-correct pixels are summed over every batch and device (`lax.psum`, as the eval
confusion matrix), so coverage and precision are the whole split's. Precision of an empty
selection is None (null in eval_history.jsonl): there is nothing to score.
"""

from typing import Callable, Dict, List, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from advseg_jax import encodings
from advseg_jax import input_pipeline
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from advseg_jax.data.class_info import IGNORE_LABEL

DATA = sharding.DATA_AXIS


def threshold_counts(confidence: jnp.ndarray, predictions: jnp.ndarray, labels: jnp.ndarray,
                     valid: jnp.ndarray, thresholds: jnp.ndarray) -> jnp.ndarray:
    """[T, 4] int32: per threshold (selected, selected & labeled, selected & correct, valid).

    A pixel is selected when its confidence exceeds the threshold (strictly, as L_semi's
    masks) and it is image, not padding; `valid`'s count is repeated so rows stack.
    """
    selected = (confidence[..., None] > thresholds) & valid[..., None]
    labeled = selected & (labels != IGNORE_LABEL)[..., None]
    correct = labeled & (predictions == labels)[..., None]
    axes = tuple(range(confidence.ndim))
    count = lambda x: jnp.sum(x, axis=axes, dtype=jnp.int32)
    total = jnp.broadcast_to(jnp.sum(valid, dtype=jnp.int32), thresholds.shape)
    return jnp.stack([count(selected), count(labeled), count(correct), total], axis=-1)


def curves_from_counts(thresholds, counts: np.ndarray) -> dict:
    """{"thresholds", "coverage", "precision"} lists from summed [T, 4] counts."""
    counts = np.asarray(counts, np.float64)
    coverage = counts[:, 0] / np.maximum(counts[:, 3], 1.0)
    precision = [None if scored == 0 else float(correct / scored)
                 for scored, correct in zip(counts[:, 1], counts[:, 2])]
    return {"thresholds": [float(t) for t in thresholds],
            "coverage": [float(c) for c in coverage], "precision": precision}


def has_confidence_map(config: ml_collections.ConfigDict, adversary: Optional[nn.Module]) -> bool:
    """Whether the adversary gives a per-pixel verdict (Hung et al.'s fcn), i.e. a criterion."""
    return adversary is not None and config.adversary.name == "fcn"


def make_curves_step(config: ml_collections.ConfigDict, mesh: Mesh, segmentor: nn.Module,
                     adversary: Optional[nn.Module]) -> Callable:
    """jit(shard_map): (state, eval batch) → {criterion: [T, 4] counts summed over devices}.

    Both criteria are read where training selects: at the labels' resolution when
    `adversary.label_resolution` is "input" (logits upsampled bilinearly), else at the
    segmentor's output (labels and pixel mask downsampled nearest).
    """
    thresholds = jnp.asarray(config.selection_curve_thresholds, jnp.float32)
    per_pixel_adversary = has_confidence_map(config, adversary)

    def step(state, batch):
        images = batch["image"].astype(jnp.float32)
        logits = segmentor.apply({"params": state.segmentor.params}, images, train=False)
        labels, valid = batch["label"], batch["pixel_mask"]
        if config.adversary.label_resolution == "input":
            map_shape = labels.shape[1:3]
        else:
            map_shape = logits.shape[1:3]
            labels = steps._resize_nearest(labels, map_shape)  # pylint: disable=protected-access
            valid = steps._resize_nearest(valid.astype(jnp.int32), map_shape) > 0  # pylint: disable=protected-access
        logits = steps._resize_bilinear(logits, map_shape)  # pylint: disable=protected-access
        probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        predictions = jnp.argmax(logits, axis=-1)
        confidences = {"softmax": jnp.max(probabilities, axis=-1)}
        if per_pixel_adversary:
            map_images = steps._resize_bilinear(images / 255.0, map_shape)  # pylint: disable=protected-access
            encoded = encodings.encode(config.adversary.encoding, probabilities, map_images)
            verdict = adversary.apply({"params": state.adversary.params}, map_images, encoded,
                                      train=False)
            confidences["discriminator"] = jax.nn.sigmoid(verdict.astype(jnp.float32))
        return {name: lax.psum(threshold_counts(c, predictions, labels, valid, thresholds), DATA)
                for name, c in confidences.items()}

    mapped = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA)), out_specs=P(),
                           check_vma=False)
    return jax.jit(mapped)


def evaluate(config: ml_collections.ConfigDict, curves_step: Callable,
             state: state_lib.AdvSegState, builder: tfds.core.DatasetBuilder,
             mesh: Mesh) -> Dict[str, dict]:
    """`selection_curves` of one evaluation: each criterion's curves over the whole split."""
    totals: Dict[str, np.ndarray] = {}
    for local in input_pipeline.eval_iterator(config, builder, config.selection_curves_split):
        counts = curves_step(state, sharding.global_batch(local, mesh))
        for name, value in counts.items():
            value = np.asarray(value.addressable_data(0), np.int64)
            totals[name] = totals.get(name, 0) + value
    # Discriminator first: the criterion Hung et al. select by, then the alternative.
    order: List[str] = [name for name in ("discriminator", "softmax") if name in totals]
    return {name: curves_from_counts(config.selection_curve_thresholds, totals[name])
            for name in order}
