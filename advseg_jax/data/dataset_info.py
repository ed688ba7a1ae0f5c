"""A config's dataset builder, and how classes and palette are read from its metadata.

Every tool (training, evaluation, predict, prepare_data, the benchmark) gets its builder here,
so a folder dataset (`config.dataset = "segmentation_folder"`, configured by `config.folder`)
and a registered one are handled alike, and class names and colours come from the dataset,
never from a table keyed by dataset name. Tools read them once per run, into
`dataset_facts.DatasetFacts`; the readers here are what that read is made of.
"""

from typing import Optional, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from advseg_jax.data import class_info
from advseg_jax.data import segmentation_folder


ARRAY_RECORD = "array_record"  # Random access, read by Grain without TensorFlow.


def builder(config: ml_collections.ConfigDict,
            file_format: str = ARRAY_RECORD) -> tfds.core.DatasetBuilder:
    """The (possibly not yet prepared) builder of `config.dataset` in `config.data_dir`.

    `file_format`: what a build writes; array_record, the one format the TensorFlow-free
    pipeline reads (tests ask for "tfrecord" to make an old-style build). TFDS refuses to open
    a dataset prepared in another format with this one: an old TFRecord build is refused with
    a ValueError saying how to rebuild it.
    """
    try:
        return _builder(config, {"file_format": file_format})
    except ValueError as error:
        if "File format is already set" not in str(error):
            raise
        prepared = _builder(config, {})
    raise ValueError(
        f"Dataset {prepared.info.full_name!r} in {prepared.data_dir} was prepared as "
        f"{prepared.info.file_format.value!r} records; the TensorFlow-free pipeline reads only "
        f"{file_format!r}. Rebuild it: delete {prepared.data_dir} and run "
        "`python -m advseg_jax.prepare_data` with this config (it now writes array_record).")


def _builder(config: ml_collections.ConfigDict, kwargs: dict) -> tfds.core.DatasetBuilder:
    import advseg_jax.data  # noqa: F401  (registers our builders)
    if config.dataset == segmentation_folder.NAME:
        if "folder" not in config:
            raise ValueError(f"dataset={config.dataset!r} is configured by config.folder, which "
                             "this config lacks; start from --config=folder.")
        return segmentation_folder.SegmentationFolder(
            config=segmentation_folder.builder_config(config.folder), data_dir=config.data_dir,
            **kwargs)
    return tfds.builder(config.dataset, data_dir=config.data_dir, **kwargs)


def _metadata(dataset: tfds.core.DatasetBuilder) -> dict:
    metadata = dataset.info.metadata
    return dict(metadata.items()) if metadata is not None else {}


def recorded_class_names(dataset: tfds.core.DatasetBuilder) -> Optional[Tuple[str, ...]]:
    """The class names the dataset's metadata records; None for a TFDS dataset made elsewhere."""
    names = _metadata(dataset).get("class_names")
    return None if names is None else tuple(names)


def class_names(dataset: tfds.core.DatasetBuilder,
                num_classes: Optional[int] = None) -> Tuple[str, ...]:
    """Names of label ids 0, 1, ... from the dataset's metadata.

    A TFDS dataset made elsewhere has none: its classes are then class_0, class_1, ... (which
    needs `num_classes`). Raises ValueError if `num_classes` disagrees with the dataset's names.
    """
    names = recorded_class_names(dataset)
    if names is None:
        if not num_classes:
            raise ValueError(f"Dataset {dataset.info.full_name!r} records no class names; set "
                             "config.num_classes to its number of classes.")
        return tuple(f"class_{i}" for i in range(num_classes))
    check_class_count(dataset.name, names, num_classes)
    return names


def check_class_count(dataset_name: str, names: Sequence[str],
                      num_classes: Optional[int]) -> None:
    """Raises ValueError naming the dataset's classes unless there are `num_classes` (None:
    any count)."""
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"num_classes={num_classes} but dataset {dataset_name!r} has "
                         f"{len(names)} classes ({', '.join(names)}); set "
                         f"num_classes={len(names)} (or 0: the dataset's count).")


def palette(dataset: tfds.core.DatasetBuilder) -> np.ndarray:
    """[256, 3] uint8 colours of label ids (255 = void) from the metadata; else the VOC map."""
    colours = _metadata(dataset).get("palette")
    return class_info.voc_palette() if colours is None else np.asarray(colours, np.uint8)

