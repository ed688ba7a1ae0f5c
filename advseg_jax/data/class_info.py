"""Our datasets' class names, the VOC palette and the void label, for the builders' metadata.

Tools never look classes up here by dataset name: each builder stores its names and palette
in its TFDS metadata (`metadata` below) and `dataset_info` reads them from the builder, so a
user's folder dataset and ours are read alike.
"""

from typing import Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

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


def metadata(class_names: Sequence[str], palette: Optional[np.ndarray] = None,
             source_void_label: int = IGNORE_LABEL) -> tfds.core.MetadataDict:
    """A dataset's classes as its TFDS metadata, the one place every tool reads them from.

    `class_names[i]` names label id i; `palette` ([256, 3] uint8, default the VOC map, which
    gives a class id one colour across our datasets) colours label maps, entry 255 void;
    `source_void_label` is the value that meant void in the source masks (stored as 255).
    """
    colours = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    return tfds.core.MetadataDict(
        class_names=list(class_names), palette=colours.tolist(), void_label=IGNORE_LABEL,
        source_void_label=int(source_void_label))
