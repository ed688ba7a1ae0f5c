"""The input pipeline the tools use: a prepared TFDS builder in, process-local numpy batches out.

Grain over the builder's array_record files (`grain_pipeline.py`, augmentation in
`data/augment_np.py`); no TensorFlow. This module keeps the builder-level interface the
training loop, evaluation, selection curves, `evaluate` and `benchmark` call, and holds one
random-access source per (prepared dataset, split), so evaluating every N steps neither reopens
the files nor, with `config.input.cache_decoded`, decodes the split again.
"""

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import ml_collections

from advseg_jax import grain_pipeline

_SOURCES: Dict[Tuple[str, str, str, bool], Sequence[dict]] = {}


def get_builder(config: ml_collections.ConfigDict):
    """The TFDS builder of `config.dataset`, prepared as array_record in `config.data_dir` on
    first use (by process 0; the others wait). A TFRecord-prepared dataset is refused by
    `source` with the way to rebuild it."""
    return grain_pipeline.get_builder(config)


def source(builder, split: str, cache_decoded: bool = False) -> Sequence[dict]:
    """Random access to the decoded records of `split`, opened (and decoded) once."""
    key = (str(builder.data_dir), builder.info.full_name, split, bool(cache_decoded))
    if key not in _SOURCES:
        _SOURCES[key] = grain_pipeline.data_source(builder, split, cache_decoded)
    return _SOURCES[key]


def train_iterator(config: ml_collections.ConfigDict, builder,
                   start_step: int = 0) -> Iterator[dict]:
    """Endless process-local batches {image uint8 [b,h,w,3], label int32 [b,h,w]} of
    `config.train_split` from `start_step` (global batch k: the same examples on any topology)."""
    return grain_pipeline.train_iterator(
        config, source(builder, config.train_split, config.input.cache_decoded), start_step)


def unlabeled_iterator(config: ml_collections.ConfigDict, builder,
                       start_step: int = 0) -> Iterator[dict]:
    """Endless process-local batches {unlabeled_image, unlabeled_valid, unlabeled_label} of
    `config.unlabeled_split` from `start_step` (see `grain_pipeline.unlabeled_iterator`)."""
    return grain_pipeline.unlabeled_iterator(
        config, source(builder, config.unlabeled_split, config.input.cache_decoded), start_step)


def example_ids(builder, split: str) -> List[str]:
    """`image/filename` of every example of `split`, in record order (which slices follow)."""
    return grain_pipeline.example_ids(builder, split)


def num_eval_batches(config: ml_collections.ConfigDict, builder, split: str,
                     num_examples: Optional[int] = None) -> int:
    """Batches per process: the same on every process, enough for its largest share."""
    return grain_pipeline.num_eval_batches(config, builder.info.splits[split].num_examples,
                                           num_examples)


def eval_iterator(config: ml_collections.ConfigDict, builder, split: str,
                  num_examples: Optional[int] = None) -> Iterator[dict]:
    """Every example of `split` (or its first `num_examples`) exactly once over all processes,
    padded to `input.eval_size` with `pixel_mask`; every process yields `num_eval_batches`."""
    return grain_pipeline.eval_iterator(
        config, source(builder, split, config.input.cache_decoded), num_examples)
