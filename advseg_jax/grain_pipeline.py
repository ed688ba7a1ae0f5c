"""TensorFlow-free input: TFDS array_record splits read by random access through Grain.

The same contract as `input_pipeline.py` (same batch keys, dtypes and shapes), without tf.data:

- Training order: global position p (0, 1, 2, ...) reads record `perm(seed, p // N)[p % N]` of
  the N-record split, where `perm(seed, e)` is epoch e's permutation, seeded by (seed, e). Global
  batch k is positions [k·B, (k+1)·B); process i of P keeps positions k·B + i + j·P (j < B/P).
  Global batch k therefore holds the same examples for any process count, device count and
  number of input workers, and resuming at step k starts at position k·B by random access:
  nothing before it is read.
- Each record's augmentation is seeded by (config.seed, p + stream offset) (`augment_np.py`).
- Evaluation: process i takes records i, i+P, ... of the split (or of its first n), batches of
  eval_batch_size/P rows, a short last batch padded with masked-out rows, then empty batches up
  to `num_eval_batches`, the same count on every process.
- `config.input.num_workers` = 0 builds batches in the training process (Grain's threads);
  > 0 in that many Grain worker processes, which yield the same batches in the same order.
"""

import functools
import hashlib
from typing import Callable, Iterator, List, Optional, Sequence

from absl import flags
import grain
import jax
import ml_collections
import numpy as np

from advseg_jax.data import augment_np
from advseg_jax.data import host_memory
from advseg_jax.data.class_info import IGNORE_LABEL

# Kept equal to input_pipeline's, so the unlabeled stream means the same in both pipelines.
_HIDDEN_VOID = 254  # Unlabeled split's own void, told apart from crop padding (IGNORE_LABEL).
_UNLABELED_POSITION_OFFSET = 2 ** 40  # Unlabeled augmentation seeds apart from labeled ones.
_RECORD_KEYS = ("image", "segmentation_mask")
_ARRAY_RECORD = "array_record"


def stream_seed(seed: int, stream: str) -> int:
    """A seed of its own for `stream`, derived from `config.seed`: orders that do not mirror
    the labeled stream's, and the same on every machine (no Python hash randomisation)."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def data_source(builder, split: str, cache_decoded: bool = False) -> Sequence[dict]:
    """Random access to decoded records {image, segmentation_mask, ...} of a prepared split.

    Refuses a dataset prepared in another format (TFRecord, read only by tf.data), saying how
    to rebuild it. `cache_decoded` decodes the split once into host memory (small datasets:
    no JPEG/PNG decoding per step).
    """
    check_array_record(builder)
    source = builder.as_data_source(split=split)
    if cache_decoded:
        return [{key: source[i][key] for key in _RECORD_KEYS} for i in range(len(source))]
    return source


def check_array_record(builder) -> None:
    """Refuses a dataset prepared in another format (TFRecord, read only by tf.data), saying
    how to rebuild it."""
    file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    if file_format != _ARRAY_RECORD:
        raise ValueError(
            f"Dataset {builder.info.full_name!r} in {builder.data_dir} was prepared as "
            f"{file_format!r} records; the TensorFlow-free pipeline reads only "
            f"{_ARRAY_RECORD!r}. Rebuild it: delete {builder.data_dir} and run "
            "`python -m advseg_jax.prepare_data` with this config (it now writes array_record).")


def epoch_permutation(shuffle_seed: int, epoch: int, num_records: int) -> np.ndarray:
    """The record order of `epoch`: a permutation seeded by (shuffle_seed, epoch) alone."""
    return np.random.default_rng([shuffle_seed, epoch]).permutation(num_records)


def local_positions(batch: int, global_batch: int, process_index: int,
                    process_count: int) -> np.ndarray:
    """Global positions of this process's rows of global batch `batch` (every P-th)."""
    return batch * global_batch + process_index + process_count * np.arange(
        global_batch // process_count)


class _AugmentedBatches:
    """Batch index k → this process's augmented rows of global batch k (picklable, for
    Grain's worker processes)."""

    def __init__(self, source: Sequence[dict], *, config: ml_collections.ConfigDict,
                 shuffle_seed: int, global_batch: int, process_index: int, process_count: int,
                 position_offset: int, to_outputs: Callable, recode_mask: Optional[Callable]):
        self._source, self._config = source, config
        self._shuffle_seed, self._global_batch = shuffle_seed, global_batch
        self._process_index, self._process_count = process_index, process_count
        self._position_offset = position_offset
        self._to_outputs, self._recode_mask = to_outputs, recode_mask

    # A class-level cache keeps at most 2 (source, epoch) keys, so at most 2 sources alive
    # past their pipeline: bounded, unlike the unbounded leak bugbear warns of.
    @functools.lru_cache(maxsize=2)  # noqa: B019
    def _permutation(self, epoch: int) -> np.ndarray:
        return epoch_permutation(self._shuffle_seed, epoch, len(self._source))

    def _example(self, position: int) -> dict:
        num_records = len(self._source)
        record = self._source[int(self._permutation(position // num_records)[
                position % num_records])]
        image, mask = record["image"], record["segmentation_mask"]
        if self._recode_mask is not None:
            mask = self._recode_mask(mask)
        inp = self._config.input
        rng = np.random.default_rng([self._config.seed, position + self._position_offset])
        # Downscaling the whole protocol (input.image_scale) scales the jitter range with it.
        image, mask = augment_np.train_augment(
                image, mask, rng, crop_size=tuple(inp.crop_size),
                min_scale=inp.min_scale * inp.image_scale,
                max_scale=inp.max_scale * inp.image_scale, random_flip=inp.random_flip,
                ignore_label=IGNORE_LABEL, fill_rgb=tuple(inp.fill_rgb))
        return self._to_outputs(image, mask)

    def __call__(self, batch: int) -> dict:
        host_memory.retain_freed_memory()  # Here, so that Grain's worker processes tune theirs.
        rows = [self._example(int(p)) for p in local_positions(
                batch, self._global_batch, self._process_index, self._process_count)]
        return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _iterate(batches: grain.MapDataset, config: ml_collections.ConfigDict) -> Iterator[dict]:
    """Batches in order: in this process (num_workers = 0) or in Grain worker processes."""
    inp = config.input
    num_workers = int(inp.get("num_workers", 0))
    if num_workers < 0:
        raise ValueError(f"config.input.num_workers must be >= 0, got {num_workers}.")
    prefetch = max(1, int(inp.prefetch))
    dataset = batches.to_iter_dataset(grain.ReadOptions(num_threads=prefetch,
                                                        prefetch_buffer_size=prefetch))
    if num_workers:
        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; outside app.run
            flags.FLAGS.mark_as_parsed()  # (tests, notebooks) their defaults apply.
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=num_workers, per_worker_buffer_size=prefetch))
    return iter(dataset)


def _topology(process_index: Optional[int], process_count: Optional[int]):
    return (jax.process_index() if process_index is None else process_index,
            jax.process_count() if process_count is None else process_count)


def _labeled_outputs(image: np.ndarray, mask: np.ndarray) -> dict:
    return {"image": image, "label": mask[..., 0].astype(np.int32)}


def _augmented_stream(config, source, *, shuffle_seed, global_batch, start_step,
                      position_offset, to_outputs, recode_mask, process_index, process_count):
    process_index, process_count = _topology(process_index, process_count)
    if global_batch % process_count:
        raise ValueError(f"The global batch {global_batch} does not split over "
                         f"{process_count} processes; make it a multiple of {process_count}.")
    make_batch = _AugmentedBatches(
            source, config=config, shuffle_seed=shuffle_seed, global_batch=global_batch,
            process_index=process_index, process_count=process_count,
            position_offset=position_offset, to_outputs=to_outputs, recode_mask=recode_mask)
    return _iterate(grain.MapDataset.range(start_step, 2 ** 62).map(make_batch), config)


def train_iterator(config: ml_collections.ConfigDict, source: Sequence[dict],
                   start_step: int = 0, *, process_index: Optional[int] = None,
                   process_count: Optional[int] = None) -> Iterator[dict]:
    """Endless process-local batches {image uint8 [b,h,w,3], label int32 [b,h,w]} from
    `start_step` (b = batch_size / process_count). The topology defaults to JAX's."""
    return _augmented_stream(config, source, shuffle_seed=config.seed,
                             global_batch=config.batch_size, start_step=start_step,
                             position_offset=0, to_outputs=_labeled_outputs, recode_mask=None,
                             process_index=process_index, process_count=process_count)


def _hide_void(mask: np.ndarray) -> np.ndarray:
    return np.where(mask == IGNORE_LABEL, np.uint8(_HIDDEN_VOID), mask)


def _unlabeled_outputs(image: np.ndarray, mask: np.ndarray) -> dict:
    mask = mask[..., 0].astype(np.int32)
    return {"unlabeled_image": image, "unlabeled_valid": mask != IGNORE_LABEL,
            "unlabeled_label": np.where(mask == _HIDDEN_VOID, IGNORE_LABEL, mask)}


def unlabeled_iterator(config: ml_collections.ConfigDict, source: Sequence[dict],
                       start_step: int = 0, *, process_index: Optional[int] = None,
                       process_count: Optional[int] = None) -> Iterator[dict]:
    """Endless process-local batches {unlabeled_image uint8, unlabeled_valid bool (False on
    crop padding), unlabeled_label int32} of the unlabeled split, from `start_step`.

    Ordered by a seed of its own (`stream_seed(config.seed, "unlabeled")`) and augmented with
    seeds offset by 2^40 from the labeled stream's; the split's own void stays void in
    `unlabeled_label` but valid, only crop padding is invalid.
    """
    return _augmented_stream(config, source, shuffle_seed=stream_seed(config.seed, "unlabeled"),
                             global_batch=config.unlabeled_batch_size or config.batch_size,
                             start_step=start_step, position_offset=_UNLABELED_POSITION_OFFSET,
                             to_outputs=_unlabeled_outputs, recode_mask=_hide_void,
                             process_index=process_index, process_count=process_count)


def num_eval_batches(config: ml_collections.ConfigDict, num_records: int,
                     num_examples: Optional[int] = None, *,
                     process_count: Optional[int] = None) -> int:
    """Batches per process: the same on every process, enough for its largest share."""
    process_count = jax.process_count() if process_count is None else process_count
    total = min(num_records, num_examples) if num_examples else num_records
    local_batch = config.eval_batch_size // process_count
    largest_share = -(-total // process_count)
    return max(1, -(-largest_share // local_batch))


class _EvalBatches:
    """Eval batch j → this process's rows (records i + (j·b + r)·P), padded (picklable)."""

    def __init__(self, source: Sequence[dict], *, config: ml_collections.ConfigDict,
                 total: int, process_index: int, process_count: int):
        self._source, self._total = source, total
        self._process_index, self._process_count = process_index, process_count
        self._local_batch = config.eval_batch_size // process_count
        self._eval_size = tuple(config.input.eval_size)
        self._image_scale = config.input.image_scale

    def __call__(self, batch: int) -> dict:
        host_memory.retain_freed_memory()
        rows, (eval_h, eval_w) = self._local_batch, self._eval_size
        out = {"image": np.zeros((rows, eval_h, eval_w, 3), np.uint8),
               "label": np.full((rows, eval_h, eval_w), IGNORE_LABEL, np.int32),
               "pixel_mask": np.zeros((rows, eval_h, eval_w), bool)}
        for row in range(rows):
            record = self._process_index + (batch * rows + row) * self._process_count
            if record >= self._total:
                break
            example = self._source[record]
            image, mask = augment_np.rescale(example["image"], example["segmentation_mask"],
                                             self._image_scale)
            image, mask, pixel_mask = augment_np.eval_pad(
                    image, mask, eval_size=self._eval_size, ignore_label=IGNORE_LABEL)
            out["image"][row], out["label"][row] = image, mask[..., 0]
            out["pixel_mask"][row] = pixel_mask
        return out


def eval_iterator(config: ml_collections.ConfigDict, source: Sequence[dict],
                  num_examples: Optional[int] = None, *, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Iterator[dict]:
    """Every record of `source` (or its first `num_examples`) exactly once over all processes.

    Batches {image uint8, label int32, pixel_mask bool}; padding rows and pixels have
    pixel_mask False, so they count nowhere. Every process yields `num_eval_batches` batches.
    """
    process_index, process_count = _topology(process_index, process_count)
    if config.eval_batch_size % process_count:
        raise ValueError(f"config.eval_batch_size={config.eval_batch_size} does not split over "
                         f"{process_count} processes; make it a multiple of {process_count}.")
    total = min(len(source), num_examples) if num_examples else len(source)
    count = num_eval_batches(config, len(source), num_examples, process_count=process_count)
    make_batch = _EvalBatches(source, config=config, total=total, process_index=process_index,
                              process_count=process_count)
    return _iterate(grain.MapDataset.range(count).map(make_batch), config)


def example_ids(builder, split: str) -> List[str]:
    """`image/filename` of every example of `split`, in record order, decoding no image."""
    if "image/filename" not in builder.info.features:
        return []
    import tensorflow_datasets as tfds
    skip = {"image": tfds.decode.SkipDecoding(), "segmentation_mask": tfds.decode.SkipDecoding()}
    source = builder.as_data_source(split=split, decoders=skip)
    names = (source[i]["image/filename"] for i in range(len(source)))
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]


def get_builder(config: ml_collections.ConfigDict):
    """The builder of `config.dataset`, prepared as array_record in `config.data_dir` on first
    use (by process 0; the others wait)."""
    from advseg_jax.data import builder_io
    from advseg_jax.data import dataset_info
    import tensorflow_datasets as tfds
    manual_dir = config.get("manual_dir") or None
    if jax.process_index() == 0:
        builder_io.prepare(dataset_info.builder(config, _ARRAY_RECORD), config.data_dir,
                           tfds.download.DownloadConfig(manual_dir=manual_dir))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("advseg_jax dataset prepared")
    return dataset_info.builder(config, _ARRAY_RECORD)
