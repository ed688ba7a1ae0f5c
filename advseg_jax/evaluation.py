"""Scores over a whole split: one confusion matrix summed over every batch, device and process."""

from typing import Optional, Tuple, Union

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from advseg_jax import device_prefetch
from advseg_jax import input_pipeline
from advseg_jax import metrics
from advseg_jax import sharding
from advseg_jax.data import dataset_facts


def _local_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-split array, in global row order."""
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


# The running confusion matrix is two int32 words per cell on the device, count =
# high · 2^_LOW_BITS + low: exact to 2^51 pixels without 64-bit device arrays, where one int32
# sum would wrap past 2^31 (2.1 G pixels, about 9,000 VOC-sized images).
_LOW_BITS = 20
# A batch's counts are added to `low` (< 2^_LOW_BITS) before carrying: they must fit beside it.
_MAX_BATCH_PIXELS = 2**31 - 2**_LOW_BITS


@jax.jit
def _split_words(counts: jax.Array) -> Tuple[jax.Array, jax.Array]:
    return counts >> _LOW_BITS, counts & ((1 << _LOW_BITS) - 1)


@jax.jit
def _add_words(words: Tuple[jax.Array, jax.Array], counts: jax.Array):
    high, low = words
    carried_high, carried_low = _split_words(low + counts)
    return high + carried_high, carried_low


def _host_total(words: Tuple[jax.Array, jax.Array]) -> np.ndarray:
    """The one read of an evaluation: the summed confusion matrix as int64."""
    high, low = (np.asarray(word.addressable_data(0), np.int64) for word in words)
    return (high << _LOW_BITS) + low


def evaluate(config: ml_collections.ConfigDict, eval_step, params,
             dataset: Union[dataset_facts.DatasetFacts, tfds.core.DatasetBuilder],
             mesh: Mesh, split: str, num_examples: Optional[int] = None,
             num_images: int = 0) -> Tuple[dict, Optional[np.ndarray]]:
    """(scores of `metrics.segmentation_scores` + `confusion`, image|truth|prediction strips).

    `dataset`: the run's facts (class names and palette as resolved, read once), or a builder.
    Strips (uint8 [k, H, 3W, 3]) come from this process's first rows; None if `num_images` is 0.
    Nothing is read from the device before the last batch has been dispatched.
    """
    facts = dataset_facts.of(config, dataset)
    builder = facts.builder
    words = None  # The running confusion matrix, on the device.
    first = None  # (host batch, device predictions) of the first batch, for the strips.
    batches = device_prefetch.Prefetcher(
        ((local, sharding.global_batch(local, mesh))
         for local in input_pipeline.eval_iterator(config, builder, split, num_examples)),
        depth=2)
    for local, batch in batches:
        if batch["label"].size > _MAX_BATCH_PIXELS:
            raise ValueError(
                f"An evaluation batch of {batch['label'].size} pixels (eval_batch_size="
                f"{config.eval_batch_size}, input.eval_size={tuple(config.input.eval_size)}) "
                f"cannot be counted exactly; keep it at most {_MAX_BATCH_PIXELS} "
                "by lowering config.eval_batch_size.")
        batch_confusion, predictions = eval_step(params, batch)
        words = (_split_words(batch_confusion) if words is None
                 else _add_words(words, batch_confusion))
        if num_images and first is None:
            first = (local, predictions)
    with jax.transfer_guard_device_to_host("allow"):  # The evaluation's one read.
        total = (np.zeros((config.num_classes,) * 2, np.int64) if words is None
                 else _host_total(words))
        strips = (None if first is None else _strips(first[0], _local_rows(first[1]),
                                                     num_images, facts.palette))
    facts.check_num_classes(config.num_classes)
    scores = metrics.segmentation_scores(total, facts.class_names)
    scores["confusion"] = total.tolist()
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
