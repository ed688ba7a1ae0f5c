"""Scores over a whole split: one confusion matrix summed over every batch, device and process."""

from typing import Optional, Tuple

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from advseg_jax import input_pipeline
from advseg_jax import metrics
from advseg_jax import sharding
from advseg_jax.data import dataset_info


def _local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-split array, in global row order."""
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


def evaluate(config: ml_collections.ConfigDict, eval_step, params,
             builder: tfds.core.DatasetBuilder,
             mesh: Mesh, split: str, num_examples: Optional[int] = None,
             num_images: int = 0) -> Tuple[dict, Optional[np.ndarray]]:
    """(scores of `metrics.segmentation_scores` + `confusion`, image|truth|prediction strips).

    Strips (uint8 [k, H, 3W, 3]) come from this process's first rows; None if `num_images` is 0.
    """
    confusion = np.zeros((config.num_classes, config.num_classes), np.int64)
    strips = None
    colours = dataset_info.palette(builder)
    for local in input_pipeline.eval_iterator(config, builder, split, num_examples):
        batch_confusion, predictions = eval_step(params, sharding.global_batch(local, mesh))
        confusion += np.asarray(batch_confusion.addressable_data(0), np.int64)
        if num_images and strips is None:
            strips = _strips(local, _local_rows(predictions), num_images, colours)
    names = dataset_info.class_names(builder, config.num_classes)
    scores = metrics.segmentation_scores(confusion, names)
    scores["confusion"] = confusion.tolist()
    return scores, strips


def colourise(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Label ids (void included) → RGB with a dataset's [256, 3] palette."""
    return palette[labels.astype(np.uint8)]


def _strips(local: dict, predictions: np.ndarray, count: int,
            palette: np.ndarray) -> np.ndarray:
    keep = local["pixel_mask"][:count].any(axis=(1, 2))
    images = local["image"][:count][keep]
    truth = colourise(local["label"][:count][keep], palette)
    predicted = colourise(predictions[:count][keep], palette)
    return np.concatenate([images, truth, predicted], axis=2)
