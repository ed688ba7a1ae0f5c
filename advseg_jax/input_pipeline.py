"""tf.data input: TFDS records → augmented, batched, process-local numpy batches.

Training reads one global, seeded stream of records and each process keeps every P-th record,
so the examples of global batch k are the same whatever the number of processes and devices,
and resuming at step k is `skip(k · batch)` on still-encoded records (cheap: decoding and
augmentation come after the skip, and each record's augmentation is seeded by its global
position). Evaluation splits the data per process, pads every image to `input.eval_size` with a
pixel mask, and pads the batch count so all processes run the same number of eval steps.
"""

from typing import Iterator, List, Optional

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from advseg_jax.data import augment
from advseg_jax.data import builder_io
from advseg_jax.data import dataset_info
from advseg_jax.data.class_info import IGNORE_LABEL
from advseg_jax.grain_pipeline import stream_seed

_SKIP_DECODING = {"image": tfds.decode.SkipDecoding(),
                  "segmentation_mask": tfds.decode.SkipDecoding()}


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The TFDS builder of `config.dataset`, prepared in `config.data_dir` on first use."""
    from jax.experimental import multihost_utils
    manual_dir = config.get("manual_dir") or None
    if jax.process_index() == 0:
        builder = dataset_info.builder(config)
        builder_io.prepare(builder, config.data_dir,
                           tfds.download.DownloadConfig(manual_dir=manual_dir))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("advseg_jax dataset prepared")
    return dataset_info.builder(config)


def _decode(builder: tfds.core.DatasetBuilder, example: dict):
    features = builder.info.features
    image = features["image"].decode_example(example["image"])
    mask = features["segmentation_mask"].decode_example(example["segmentation_mask"])
    return image, mask


def _to_model_inputs(image: tf.Tensor, mask: tf.Tensor) -> dict:
    return {"image": image, "label": tf.cast(mask[..., 0], tf.int32)}


def train_iterator(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                   start_step: int = 0) -> Iterator[dict]:
    """Endless process-local batches {image uint8 [b,h,w,3], label int32 [b,h,w]} from
    `start_step`."""
    return _augmented_stream(config, builder, config.train_split, config.seed, config.batch_size,
                             start_step, position_offset=0, recode_mask=None,
                             to_outputs=_to_model_inputs)


def _augmented_stream(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                      split: str, shuffle_seed: int, global_batch: int, start_step: int, *,
                      position_offset: int, recode_mask, to_outputs) -> Iterator[dict]:
    """One global, seeded, endless stream of augmented records, this process's share batched.

    Resuming at step k is `skip(k · global_batch)` on still-encoded records, and each record's
    augmentation is seeded by (config.seed, its global position + `position_offset`), so a
    restart continues exactly. `recode_mask` (or None) runs before augmentation,
    `to_outputs(image, mask)` after it.
    """
    num_processes, process = jax.process_count(), jax.process_index()
    inp = config.input
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, interleave_cycle_length=1)
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders=_SKIP_DECODING, read_config=read_config)
    ds = ds.shuffle(inp.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().skip(start_step * global_batch).shard(num_processes, process)

    def prepare(position, example):
        image, mask = _decode(builder, example)
        if recode_mask is not None:
            mask = recode_mask(mask)
        if position_offset:
            position = position + position_offset
        seed = tf.stack([tf.constant(config.seed, tf.int64), position])
        # Downscaling the whole protocol (input.image_scale) scales the jitter range with it.
        image, mask = augment.train_augment(
            image, mask, seed, crop_size=tuple(inp.crop_size),
            min_scale=inp.min_scale * inp.image_scale,
            max_scale=inp.max_scale * inp.image_scale, random_flip=inp.random_flip,
            ignore_label=IGNORE_LABEL,
            fill_rgb=tuple(inp.fill_rgb))
        return to_outputs(image, mask)

    options = tf.data.Options()
    options.deterministic = True  # Parallel map, same order: exact resume needs it.
    ds = ds.with_options(options).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(global_batch // num_processes, drop_remainder=True).prefetch(inp.prefetch)
    return iter(tfds.as_numpy(ds))


# Unlabeled masks are re-coded before augmentation so that one uint8 channel tells crop padding
# (filled with IGNORE_LABEL) from the split's own void pixels, which become this value.
_HIDDEN_VOID = 254
# Offsets the unlabeled stream's augmentation seeds from the labeled stream's record positions.
_UNLABELED_POSITION_OFFSET = 2 ** 40


def unlabeled_iterator(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                       start_step: int = 0) -> Iterator[dict]:
    """Endless process-local batches of `config.unlabeled_split` from `start_step`.

    {unlabeled_image uint8 [b,h,w,3], unlabeled_valid bool [b,h,w] (False on crop padding),
    unlabeled_label int32 [b,h,w]}. The images get the labeled stream's augmentation. The
    split's masks (void where it has none) reach only the step's selection diagnostics, never a
    loss. The order is seeded apart from the labeled stream's and resumes exactly as it does.
    """
    def recode(mask):
        return tf.where(mask == IGNORE_LABEL, tf.constant(_HIDDEN_VOID, mask.dtype), mask)

    def to_outputs(image, mask):
        mask = tf.cast(mask[..., 0], tf.int32)
        return {"unlabeled_image": image, "unlabeled_valid": mask != IGNORE_LABEL,
                "unlabeled_label": tf.where(mask == _HIDDEN_VOID, IGNORE_LABEL, mask)}

    return _augmented_stream(config, builder, config.unlabeled_split,
                             stream_seed(config.seed, "unlabeled"),
                             config.unlabeled_batch_size or config.batch_size, start_step,
                             position_offset=_UNLABELED_POSITION_OFFSET, recode_mask=recode,
                             to_outputs=to_outputs)


def example_ids(builder: tfds.core.DatasetBuilder, split: str) -> List[str]:
    """`image/filename` of every example of `split`, in record order (which slices follow)."""
    if "image/filename" not in builder.info.features:
        return []
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding(),
                                      "segmentation_mask": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda example: example["image/filename"])
    return [name.decode("utf-8") for name in tfds.as_numpy(ds)]


def num_eval_batches(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                     split: str, num_examples: Optional[int] = None) -> int:
    """Batches per process: the same on every process, enough for its largest share."""
    total = builder.info.splits[split].num_examples
    total = min(total, num_examples) if num_examples else total
    local_batch = config.eval_batch_size // jax.process_count()
    largest_share = -(-total // jax.process_count())
    return max(1, -(-largest_share // local_batch))


def eval_iterator(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                  split: str, num_examples: Optional[int] = None) -> Iterator[dict]:
    """Every example of `split` (or its first `num_examples`) exactly once over all processes.

    Batches carry `pixel_mask`; padding images and padding pixels have it False, so they count
    nowhere. Every process yields `num_eval_batches(...)` batches.
    """
    num_processes, process = jax.process_count(), jax.process_index()
    local_batch = config.eval_batch_size // num_processes
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=_SKIP_DECODING)
    if num_examples:
        ds = ds.take(num_examples)
    ds = ds.shard(num_processes, process)
    eval_size = tuple(config.input.eval_size)

    def prepare(example):
        image, mask = _decode(builder, example)
        image, mask = augment.rescale(image, mask, config.input.image_scale)
        image, mask, pixel_mask = augment.eval_pad(image, mask, eval_size=eval_size,
                                                   ignore_label=IGNORE_LABEL)
        return {**_to_model_inputs(image, mask), "pixel_mask": pixel_mask}

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.padded_batch(local_batch, padding_values={
        "image": tf.constant(0, tf.uint8), "label": tf.constant(IGNORE_LABEL, tf.int32),
        "pixel_mask": tf.constant(False)}).prefetch(2)
    count = 0
    for batch in tfds.as_numpy(ds):
        yield _pad_rows(batch, local_batch)
        count += 1
    empty = None
    for _ in range(num_eval_batches(config, builder, split, num_examples) - count):
        if empty is None:
            empty = {"image": np.zeros((local_batch, *eval_size, 3), np.uint8),
                     "label": np.full((local_batch, *eval_size), IGNORE_LABEL, np.int32),
                     "pixel_mask": np.zeros((local_batch, *eval_size), bool)}
        yield empty


def _pad_rows(batch: dict, rows: int) -> dict:
    """Pads a short last batch with masked-out rows so every device gets equal shapes."""
    missing = rows - len(batch["image"])
    if missing == 0:
        return batch
    fill = {"image": 0, "label": IGNORE_LABEL, "pixel_mask": False}
    return {key: np.concatenate([value, np.full((missing, *value.shape[1:]), fill[key],
                                                value.dtype)]) for key, value in batch.items()}
