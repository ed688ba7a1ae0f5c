"""The facts a run takes from its dataset, read from the prepared builder once.

Resolving a config (`num_classes` = 0, `input.eval_size` = AUTO) and checking it against the
data (class count, unlabeled split size, eval size against the largest image) need the same
few facts; fetched piecemeal, each step built its own builder and the largest image of a
split whose sizes vary was scanned once to resolve the eval size and again to check it.
A `DatasetFacts` is that one read: tools resolve and check against it, and evaluation takes
its class names and palette from it, so every part of a run sees the same dataset.
"""

import copy
import dataclasses
import io
from typing import Dict, Mapping, Optional, Tuple, Union

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from advseg_jax.data import class_info
from advseg_jax.data import dataset_info


@dataclasses.dataclass(frozen=True, eq=False)  # Compared by identity: it holds arrays.
class DatasetFacts:
    """What tools need to know of a dataset (an unprepared builder gives no split facts)."""

    builder: tfds.core.DatasetBuilder
    name: str  # As error messages name the dataset.
    full_name: str
    class_names: Tuple[str, ...]
    palette: np.ndarray  # [256, 3] uint8; entry `void_label` colours void.
    void_label: int
    split_sizes: Mapping[str, int]  # The named splits; `num_examples` resolves slices too.
    # (split, count) → (H, W): a header scan runs once however often a size is asked for.
    _largest: Dict[Tuple[str, Optional[int]], Tuple[int, int]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check_num_classes(self, num_classes: int) -> None:
        """Raises ValueError (dataset_info's message) unless the dataset has `num_classes`."""
        dataset_info.check_class_count(self.name, self.class_names, num_classes)

    def num_examples(self, split: str) -> int:
        """Examples of `split`, a named split or a TFDS slice ('train[72:]', 'train[:10%]').

        Raises KeyError or ValueError (TFDS's message) for a split the dataset lacks.
        """
        if split in self.split_sizes:
            return self.split_sizes[split]
        return self.builder.info.splits[split].num_examples  # TFDS resolves the slice.

    def largest_image(self, split: str, num_examples: Optional[int] = None) -> Tuple[int, int]:
        """(max height, max width) over `split` (its first `num_examples`), computed once."""
        key = (split, num_examples)
        if key not in self._largest:
            self._largest[key] = largest_image(self.builder, split, num_examples)
        return self._largest[key]


def load(config: ml_collections.ConfigDict,
         builder: Optional[tfds.core.DatasetBuilder] = None) -> DatasetFacts:
    """The facts of `config.dataset`, from `builder` or else the prepared one.

    Without `builder`, the dataset is prepared on first use (`input_pipeline.get_builder`).
    Tools that need no data (predict, summary) pass `dataset_info.builder(config)`: its class
    names and palette are the builder's own, and it has no splits. A dataset that records no
    class names is numbered by `config.num_classes` (raises ValueError if that is 0).
    """
    if builder is None:
        from advseg_jax import input_pipeline  # The pipeline sits above the data package.
        builder = input_pipeline.get_builder(config)
    names = dataset_info.recorded_class_names(builder)
    if names is None:
        names = dataset_info.class_names(builder, config.num_classes or None)
    return DatasetFacts(
        builder=builder, name=builder.name, full_name=builder.info.full_name,
        class_names=tuple(names), palette=dataset_info.palette(builder),
        void_label=class_info.IGNORE_LABEL,
        split_sizes={name: info.num_examples for name, info in builder.info.splits.items()})


def with_num_classes(config: ml_collections.ConfigDict,
                     facts: DatasetFacts) -> ml_collections.ConfigDict:
    """`config`, or a copy with `num_classes` = the dataset's class count if it is 0.

    `num_classes = 0` (the folder config's default) means "as many as the dataset names", so a
    user lists their classes once, in `config.folder.class_names`.
    """
    if config.num_classes:
        return config
    resolved = copy.deepcopy(config)
    resolved.num_classes = facts.num_classes
    return resolved


def with_num_classes_from_builder(config: ml_collections.ConfigDict,
                                  builder: Optional[tfds.core.DatasetBuilder] = None
                                  ) -> ml_collections.ConfigDict:
    """`with_num_classes` for a tool that resolves nothing else (summary, prepare_data).

    `builder` defaults to `dataset_info.builder(config)`, which prepares nothing: a tool that
    only needs the class count must not build a dataset for it. A run resolves every key from
    one read with `config_checks.resolve` instead.
    """
    if config.num_classes:
        return config
    return with_num_classes(config, load(config, builder or dataset_info.builder(config)))


def of(config: ml_collections.ConfigDict,
       dataset: Union[DatasetFacts, tfds.core.DatasetBuilder]) -> DatasetFacts:
    """`dataset` if it is already facts, else the facts of the builder (for callers that
    still hold a builder: each such call is a fresh read, so pass facts where you have them)."""
    return dataset if isinstance(dataset, DatasetFacts) else load(config, dataset)


def largest_image(builder: tfds.core.DatasetBuilder, split: str,
                  num_examples: Optional[int] = None) -> Tuple[int, int]:
    """(max height, max width) over `split` (its first `num_examples`): from the dataset's
    metadata when its images have a fixed shape, else from the encoded images' headers."""
    shape = builder.info.features["image"].shape
    if shape[0] is not None and shape[1] is not None:
        return int(shape[0]), int(shape[1])
    return _largest_encoded_image(builder, split, num_examples)


def _largest_encoded_image(builder: tfds.core.DatasetBuilder, split: str,
                           num_examples: Optional[int]) -> Tuple[int, int]:
    """`largest_image` of an array_record split without TensorFlow: PIL reads each encoded
    image's header only (random access, no decoding)."""
    from PIL import Image
    from advseg_jax import grain_pipeline
    grain_pipeline.check_array_record(builder)
    source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    count = min(len(source), num_examples) if num_examples else len(source)
    largest = (0, 0)
    for index in range(count):
        with Image.open(io.BytesIO(source[index]["image"])) as image:
            largest = (max(largest[0], image.height), max(largest[1], image.width))
    return largest
