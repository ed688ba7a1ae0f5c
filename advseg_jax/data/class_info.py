"""Class names, palettes and the void label: defined once, used by data, metrics and predict."""

from typing import Sequence, Tuple

import numpy as np

# Pixels with this label are void: ignored by the losses, the metrics and the adversary.
# VOC stores it in its masks; Stanford Background's -1 ("unknown") is mapped to it.
IGNORE_LABEL = 255

DIGIT_SCENES_CLASSES = ("background",) + tuple(f"digit_{d}" for d in range(10))

VOC_CLASSES = (
        "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
        "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
        "sheep", "sofa", "train", "tvmonitor",
)

# Label ids 0..7 of iccv09Data/labels/*.regions.txt (Gould et al. 2009).
STANFORD_BACKGROUND_CLASSES = (
        "sky", "tree", "road", "grass", "water", "building", "mountain", "foreground_object",
)


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The VOC devkit colour map (bit-interleaved class id), shape [num_entries, 3] uint8.

    VOC's SegmentationClass PNGs are palette images with exactly this map, so it decodes them
    and colours our predictions the way every VOC tool does; entry 255 (void) is (224, 224, 192).
    """
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for label in range(num_entries):
        value, r, g, b = label, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[label] = (r, g, b)
    return palette


_CLASSES = {
        "digit_scenes": DIGIT_SCENES_CLASSES,
        "voc2012_segmentation": VOC_CLASSES,
        "stanford_background": STANFORD_BACKGROUND_CLASSES,
}


def class_names(dataset: str) -> Sequence[str]:
    """Class names of a dataset known to advseg_jax, index = label id."""
    base = dataset.split("/")[0].split(":")[0]
    if base not in _CLASSES:
        raise ValueError(f"Unknown dataset {dataset!r}; known: {sorted(_CLASSES)}.")
    return _CLASSES[base]


def class_names_for(dataset: str, num_classes: int) -> Tuple[str, ...]:
    """The names that label every per-class score of a run on `dataset` with `num_classes`.

    Raises ValueError if `num_classes` disagrees with the dataset's classes (the per-class
    scores would be mislabelled and the classifier's output size wrong). A TFDS dataset that is
    not one of ours has no names here: its classes are called class_0, class_1, ...
    """
    base = dataset.split("/")[0].split(":")[0]
    if base not in _CLASSES:
        return tuple(f"class_{i}" for i in range(num_classes))
    names = tuple(_CLASSES[base])
    if len(names) != num_classes:
        raise ValueError(f"num_classes={num_classes} but dataset {dataset!r} has {len(names)} "
                         f"classes ({', '.join(names)}); set num_classes={len(names)}.")
    return names


def palette(dataset: str) -> np.ndarray:
    """A [256, 3] uint8 palette for colouring label maps of `dataset` (void stays 255's colour).

    All datasets share the VOC map so that a class id has one colour across tools.
    """
    class_names(dataset)  # Validates the name.
    return voc_palette()
