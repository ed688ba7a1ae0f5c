"""What a prepared dataset holds, printed before training: splits, sizes, labels, needed sizes.

A folder dataset records its statistics while it is checked at build time (its metadata's
`statistics`); for other datasets they are counted here in one pass over the masks. The sizes
that a config needs follow from them: `input.eval_size` must hold the largest evaluated image
(after `input.image_scale`), and a crop no larger than the smallest image is never padded.
"""

import math
from typing import Dict, List, Optional

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from advseg_jax import config_checks
from advseg_jax.data import dataset_info
from advseg_jax.data.class_info import IGNORE_LABEL


def count_statistics(builder: tfds.core.DatasetBuilder, split: str, num_classes: int) -> dict:
    """The statistics a folder dataset records, counted over `split`'s masks (images are not
    decoded)."""
    from advseg_jax import grain_pipeline
    grain_pipeline.check_array_record(builder)
    source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    stats = {"examples": len(source), "min_size": None, "max_size": None,
             "class_pixels": [0] * num_classes, "void_pixels": 0}
    total = np.zeros(IGNORE_LABEL + 1, np.int64)
    low, high = np.full(2, np.iinfo(np.int64).max), np.zeros(2, np.int64)
    for index in range(len(source)):
        mask = np.asarray(source[index]["segmentation_mask"])[..., 0]
        low, high = np.minimum(low, mask.shape[:2]), np.maximum(high, mask.shape[:2])
        total += np.bincount(mask.ravel(), minlength=IGNORE_LABEL + 1)[:IGNORE_LABEL + 1]
    if stats["examples"]:
        stats["min_size"], stats["max_size"] = low.tolist(), high.tolist()
    stats["class_pixels"] = total[:num_classes].tolist()
    stats["void_pixels"] = int(total[IGNORE_LABEL])
    return stats


def statistics(builder: tfds.core.DatasetBuilder, num_classes: int) -> Dict[str, dict]:
    """{split: statistics}: recorded at build time if the dataset has them, else counted."""
    metadata = builder.info.metadata
    recorded = dict(metadata.items()).get("statistics") if metadata is not None else None
    if recorded:
        return recorded
    return {split: count_statistics(builder, split, num_classes) for split in builder.info.splits}


def summary(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder) -> str:
    """The text prepare_data prints: per split, per class, and the sizes `config` needs."""
    names = dataset_info.class_names(builder, config.num_classes or None)
    stats = statistics(builder, len(names))
    metadata = dict(builder.info.metadata.items()) if builder.info.metadata is not None else {}
    source_void = metadata.get("source_void_label", IGNORE_LABEL)
    lines = [f"{builder.info.full_name} in {builder.data_dir}",
             f"{len(names)} classes: {', '.join(names)}; void: mask value {source_void} "
             f"(stored as {IGNORE_LABEL})"]
    for split, split_stats in stats.items():
        lines += _split_lines(split, split_stats, names)
    if "files" in metadata:
        lines.append(f"Files of each split (the held-out list included): \"files\" in "
                     f"{builder.data_dir}/metadata.json")
    lines += _size_lines(config, stats)
    return "\n".join(lines)


def _split_lines(split: str, stats: dict, names: List[str]) -> List[str]:
    lines = [f"split {split}: {stats['examples']} examples"]
    if not stats["examples"]:
        return lines
    (h0, w0), (h1, w1) = stats["min_size"], stats["max_size"]
    lines[0] += f", image sizes {h0}x{w0} to {h1}x{w1} (HxW, smallest and largest side each)"
    total = sum(stats["class_pixels"]) + stats["void_pixels"]
    if not total:
        return lines
    void = stats["void_pixels"]
    lines.append(f"  void: {void:,} pixels ({100 * void / total:.1f} %)")
    width = max(len(name) for name in names)
    for label, (name, pixels) in enumerate(zip(names, stats["class_pixels"])):
        note = "  <- absent: its IoU is undefined on this split" if pixels == 0 else ""
        lines.append(f"  {label:3d} {name:<{width}} {pixels:>13,} pixels "
                     f"({100 * pixels / total:5.1f} %){note}")
    return lines


def _scaled(size: Optional[List[int]], scale: float) -> List[int]:
    return [max(1, int(np.round(side * scale))) for side in size]


def _size_lines(config: ml_collections.ConfigDict, stats: Dict[str, dict]) -> List[str]:
    scale = config.input.image_scale
    evaluated = [s for s in (config.eval_split, config.train_split if
                             config.num_train_eval_examples else None) if s in stats]
    trained = stats.get(config.train_split)
    if not evaluated or trained is None or not trained["examples"]:
        return [f"(train_split={config.train_split!r} / eval_split={config.eval_split!r} are "
                f"not splits of this dataset: {sorted(stats)}.)"]
    multiple = config_checks.size_multiple(config)
    largest = np.max([_scaled(stats[s]["max_size"], scale) for s in evaluated], axis=0)
    smallest = _scaled(trained["min_size"], scale)
    eval_size = tuple(math.ceil(side / multiple) * multiple for side in largest)
    crop = tuple(max(multiple, side // multiple * multiple) for side in smallest)
    current = tuple(config.input.eval_size)
    lines = [f"With input.image_scale={scale} and segmentor {config.segmentor.name!r} "
             f"(sides multiples of {multiple}):",
             f"  input.eval_size must be at least {eval_size} (the largest evaluated image is "
             f"{largest[0]}x{largest[1]}); the config has {current}" +
             (f", which resolves to {eval_size}." if current == config_checks.AUTO_EVAL_SIZE
              else "." if all(a >= b for a, b in zip(current, eval_size)) else
              f": too small, use --config.input.eval_size='{eval_size}'."),
             f"  input.crop_size up to {crop} stays inside every training image (smallest "
             f"{smallest[0]}x{smallest[1]}); larger crops are padded with void. The config has "
             f"{tuple(config.input.crop_size)}."]
    return lines
